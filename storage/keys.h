// Key encodings of the RocksDB store (see docs/storage.md). Internal to
// storage/.
#ifndef CONSENT_STORAGE_KEYS_H_
#define CONSENT_STORAGE_KEYS_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace consent::storage {

// 8 bytes, big-endian, so byte order is revision order.
std::string EncodeRevision(int64_t revision);
// False unless `bytes` is exactly 8 bytes.
bool DecodeRevision(absl::string_view bytes, int64_t* revision);

// events: the revision.
inline std::string EventKey(int64_t revision) { return EncodeRevision(revision); }

// user_events: user_id, a 0 byte (ids never contain control characters),
// then the revision; a user's events sort together, oldest first.
std::string UserEventKey(absl::string_view user_id, int64_t revision);

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

}  // namespace consent::storage

#endif  // CONSENT_STORAGE_KEYS_H_
