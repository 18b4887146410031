#include "storage/audit_chain.h"

#include <openssl/evp.h>

#include <memory>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace consent::storage {

namespace {

// SHA-256 of `first` then `second` into `digest` (kHashBytes). The digest
// is fetched once and the context kept per thread: OpenSSL 3 otherwise
// looks the algorithm up and allocates a context on every call, a
// measurable share of a write's cost (docs/performance.md).
bool Sha256Of(absl::string_view first, absl::string_view second, unsigned char* digest) {
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  thread_local const std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> context(EVP_MD_CTX_new(),
                                                                                &EVP_MD_CTX_free);
  unsigned int length = 0;
  return md != nullptr && context != nullptr &&
         EVP_DigestInit_ex(context.get(), md, nullptr) == 1 &&
         EVP_DigestUpdate(context.get(), first.data(), first.size()) == 1 &&
         EVP_DigestUpdate(context.get(), second.data(), second.size()) == 1 &&
         EVP_DigestFinal_ex(context.get(), digest, &length) == 1 && length == kHashBytes;
}

}  // namespace

std::string Sha256(absl::string_view data) {
  unsigned char digest[kHashBytes];
  if (!Sha256Of(data, absl::string_view(), digest)) {
    return std::string();  // never happens with a working libcrypto
  }
  return std::string(reinterpret_cast<const char*>(digest), kHashBytes);
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
  unsigned char digest[kHashBytes];
  if (!Sha256Of(previous_hash, CanonicalEventBytes(event), digest)) return std::string();
  return std::string(reinterpret_cast<const char*>(digest), kHashBytes);
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

void ChainEvent(absl::string_view previous_hash, const v1::ChangeEvent& unhashed,
                ChainedEvent* out) {
  out->bytes.clear();
  {
    google::protobuf::io::StringOutputStream stream(&out->bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    unhashed.SerializeToCodedStream(&coded);
    coded.Trim();
  }
  unsigned char digest[kHashBytes];
  if (Sha256Of(previous_hash, out->bytes, digest)) {
    out->hash.assign(reinterpret_cast<const char*>(digest), kHashBytes);
  } else {
    out->hash.clear();  // never happens with a working libcrypto
  }
  AppendBytesField(v1::ChangeEvent::kPreviousHashFieldNumber, previous_hash, &out->bytes);
  AppendBytesField(v1::ChangeEvent::kHashFieldNumber, out->hash, &out->bytes);
}

}  // namespace consent::storage
