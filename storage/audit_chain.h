// The audit hash chain over change events, in a form an auditor can
// reimplement (docs/history.md):
//
//   canonical(e) = e serialized as protobuf binary, deterministically, with
//                  the fields previous_hash and hash left unset
//   hash(e)      = SHA-256(previous_hash(e) || canonical(e))
//   previous_hash(first event) = 32 zero bytes;
//   previous_hash(e) = hash(the event of the revision before e's)
#ifndef CONSENT_STORAGE_AUDIT_CHAIN_H_
#define CONSENT_STORAGE_AUDIT_CHAIN_H_

#include <string>

#include "absl/strings/string_view.h"
#include "consent/v1/types.pb.h"

namespace consent::storage {

inline constexpr size_t kHashBytes = 32;

// The bytes hashed for `event` (its hash fields ignored).
std::string CanonicalEventBytes(const v1::ChangeEvent& event);

// SHA-256(previous_hash || CanonicalEventBytes(event)), 32 bytes.
std::string EventHash(absl::string_view previous_hash, const v1::ChangeEvent& event);

// The stored form of an event whose hash fields are unset: its canonical
// bytes, the hash computed over them, and the serialized event with both
// hash fields set. Protobuf writes fields in number order and the hash
// fields have the highest numbers, so the stored bytes are the canonical
// bytes followed by the two hash fields: one serialization, no copy.
// `out`'s strings are overwritten, their capacity reused (a group commit
// chains thousands of events with one ChainedEvent).
struct ChainedEvent {
  std::string hash;
  std::string bytes;
};
void ChainEvent(absl::string_view previous_hash, const v1::ChangeEvent& unhashed,
                ChainedEvent* out);

// SHA-256 of `data`, 32 bytes.
std::string Sha256(absl::string_view data);

}  // namespace consent::storage

#endif  // CONSENT_STORAGE_AUDIT_CHAIN_H_
