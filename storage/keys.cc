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

std::string UserEventPrefix(absl::string_view user_id) {
  std::string key;
  key.reserve(user_id.size() + 9);  // room for the revision
  key.append(user_id.data(), user_id.size());
  key.push_back('\0');
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

namespace {
// Set in the fingerprint size of a record that carries a revision count and
// a reply.
constexpr int64_t kReplyFlag = int64_t{1} << 62;
}  // namespace

std::string EncodeRequestRecord(const RequestRecord& record) {
  std::string out = EncodeRevision(record.time_nanos);
  out += EncodeRevision(static_cast<int64_t>(record.fingerprint.size()) | kReplyFlag);
  out += record.fingerprint;
  out += EncodeRevision(static_cast<int64_t>(record.revisions.size()));
  for (int64_t r : record.revisions) out += EncodeRevision(r);
  out += record.reply;
  return out;
}

bool DecodeRequestRecord(absl::string_view bytes, RequestRecord* record) {
  int64_t fingerprint_size = 0;
  if (bytes.size() < 16 || !DecodeRevision(bytes.substr(0, 8), &record->time_nanos) ||
      !DecodeRevision(bytes.substr(8, 8), &fingerprint_size) || fingerprint_size < 0) {
    return false;
  }
  const bool with_reply = (fingerprint_size & kReplyFlag) != 0;
  fingerprint_size &= ~kReplyFlag;
  if (bytes.size() - 16 < static_cast<uint64_t>(fingerprint_size)) return false;
  record->fingerprint = std::string(bytes.substr(16, static_cast<size_t>(fingerprint_size)));
  absl::string_view rest = bytes.substr(16 + static_cast<size_t>(fingerprint_size));
  int64_t count = 0;
  if (with_reply) {
    if (rest.size() < 8 || !DecodeRevision(rest.substr(0, 8), &count) || count < 0 ||
        static_cast<uint64_t>(count) > (rest.size() - 8) / 8) {
      return false;
    }
    rest.remove_prefix(8);
  } else {
    if (rest.size() % 8 != 0) return false;
    count = static_cast<int64_t>(rest.size() / 8);
  }
  record->revisions.clear();
  for (int64_t i = 0; i < count; ++i) {
    int64_t r = 0;
    DecodeRevision(rest.substr(static_cast<size_t>(i) * 8, 8), &r);
    record->revisions.push_back(r);
  }
  record->reply = std::string(rest.substr(static_cast<size_t>(count) * 8));
  return true;
}

}  // namespace consent::storage
