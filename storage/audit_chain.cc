#include "storage/audit_chain.h"

#include <openssl/evp.h>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace consent::storage {

std::string Sha256(absl::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr) != 1 ||
      length != kHashBytes) {
    return std::string();  // never happens with a working libcrypto
  }
  return std::string(reinterpret_cast<const char*>(digest), length);
}

std::string CanonicalEventBytes(const v1::ChangeEvent& event) {
  v1::ChangeEvent copy = event;
  copy.clear_previous_hash();
  copy.clear_hash();
  std::string out;
  google::protobuf::io::StringOutputStream stream(&out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  copy.SerializeToCodedStream(&coded);
  coded.Trim();
  return out;
}

std::string EventHash(absl::string_view previous_hash, const v1::ChangeEvent& event) {
  std::string data(previous_hash);
  data += CanonicalEventBytes(event);
  return Sha256(data);
}

}  // namespace consent::storage
