// Key encodings of the RocksDB store (see docs/storage.md). Internal to
// storage/.
#ifndef CONSENT_STORAGE_KEYS_H_
#define CONSENT_STORAGE_KEYS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace consent::storage {

// 8 bytes, big-endian, so byte order is revision order.
std::string EncodeRevision(int64_t revision);
// False unless `bytes` is exactly 8 bytes.
bool DecodeRevision(absl::string_view bytes, int64_t* revision);

// events: the revision.
inline std::string EventKey(int64_t revision) { return EncodeRevision(revision); }

// user_events: user_id, a 0 byte (ids never contain control characters),
// then the revision; a user's events sort together, oldest first. The
// prefix (user_id and the 0 byte) selects one user's events.
std::string UserEventPrefix(absl::string_view user_id);
inline std::string UserEventKey(absl::string_view user_id, int64_t revision) {
  return UserEventPrefix(user_id) + EncodeRevision(revision);
}

// exclusions: user_id, 0, content_id, 0, purpose. The prefix up to and
// including the second 0 selects one content item's exclusions.
std::string ExclusionPrefix(absl::string_view user_id, absl::string_view content_id);
inline std::string ExclusionKey(absl::string_view user_id, absl::string_view content_id,
                                absl::string_view purpose) {
  return ExclusionPrefix(user_id, content_id).append(purpose.data(), purpose.size());
}

// policies: activation time in nanoseconds since the Unix epoch, 8 bytes
// big-endian (same encoding as revisions).
inline std::string PolicyKey(int64_t unix_nanos) { return EncodeRevision(unix_nanos); }

// requests: request_id -> RequestRecord. Encoded as the time, the
// fingerprint's size and the fingerprint, then either (records written
// before replies were kept) the revisions to the end, or, when the size has
// kReplyFlag set, the number of revisions, the revisions and the reply.
struct RequestRecord {
  int64_t time_nanos = 0;
  std::string fingerprint;
  std::vector<int64_t> revisions;
  // What a replay answers besides its revisions (SubjectUpdate::reply);
  // empty if nothing.
  std::string reply;
};
std::string EncodeRequestRecord(const RequestRecord& record);
bool DecodeRequestRecord(absl::string_view bytes, RequestRecord* record);

// request_times: time (Unix nanoseconds, 8 bytes big-endian), request_id;
// lets old request ids be purged in time order.
inline std::string RequestTimeKey(int64_t time_nanos, absl::string_view request_id) {
  return EncodeRevision(time_nanos).append(request_id.data(), request_id.size());
}

}  // namespace consent::storage

#endif  // CONSENT_STORAGE_KEYS_H_
