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

namespace {

// Appends a length-delimited field (wire type 2) with a short payload.
void AppendBytesField(int field, absl::string_view value, std::string* out) {
  uint32_t tag = static_cast<uint32_t>(field << 3 | 2);
  while (tag >= 0x80) {
    out->push_back(static_cast<char>((tag & 0x7f) | 0x80));
    tag >>= 7;
  }
  out->push_back(static_cast<char>(tag));
  uint32_t length = static_cast<uint32_t>(value.size());
  while (length >= 0x80) {
    out->push_back(static_cast<char>((length & 0x7f) | 0x80));
    length >>= 7;
  }
  out->push_back(static_cast<char>(length));
  out->append(value.data(), value.size());
}

}  // namespace

ChainedEvent ChainEvent(absl::string_view previous_hash, const v1::ChangeEvent& unhashed) {
  ChainedEvent out;
  std::string canonical;
  {
    google::protobuf::io::StringOutputStream stream(&canonical);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    unhashed.SerializeToCodedStream(&coded);
  }
  std::string data(previous_hash);
  data += canonical;
  out.hash = Sha256(data);
  out.bytes = std::move(canonical);
  out.bytes.reserve(out.bytes.size() + 2 * (kHashBytes + 3));
  AppendBytesField(v1::ChangeEvent::kPreviousHashFieldNumber, previous_hash, &out.bytes);
  AppendBytesField(v1::ChangeEvent::kHashFieldNumber, out.hash, &out.bytes);
  return out;
}

}  // namespace consent::storage
