#include "storage/keys.h"

namespace consent::storage {

std::string EncodeRevision(int64_t revision) {
  const auto value = static_cast<uint64_t>(revision);
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) {
    out[i] = static_cast<char>((value >> (56 - 8 * i)) & 0xff);
  }
  return out;
}

bool DecodeRevision(absl::string_view bytes, int64_t* revision) {
  if (bytes.size() != 8) return false;
  uint64_t value = 0;
  for (unsigned char c : bytes) value = (value << 8) | c;
  *revision = static_cast<int64_t>(value);
  return true;
}

std::string UserEventKey(absl::string_view user_id, int64_t revision) {
  std::string key;
  key.reserve(user_id.size() + 9);
  key.append(user_id.data(), user_id.size());
  key.push_back('\0');
  key += EncodeRevision(revision);
  return key;
}

std::string ExclusionPrefix(absl::string_view user_id, absl::string_view content_id) {
  std::string key;
  key.reserve(user_id.size() + content_id.size() + 2 + 32);
  key.append(user_id.data(), user_id.size());
  key.push_back('\0');
  key.append(content_id.data(), content_id.size());
  key.push_back('\0');
  return key;
}

}  // namespace consent::storage
