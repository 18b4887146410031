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

}  // namespace consent::storage

#endif  // CONSENT_STORAGE_KEYS_H_
