// Keeps an offline copy (offline_registry.h) current from the server's
// change feed.
#ifndef CONSENT_CLIENT_OFFLINE_CATCH_UP_H_
#define CONSENT_CLIENT_OFFLINE_CATCH_UP_H_

#include <cstdint>
#include <functional>

#include "absl/status/statusor.h"
#include "client/consent_client.h"
#include "client/offline/offline_registry.h"

namespace consent::offline {

struct CatchUpResult {
  // Events applied, and the revision the copy reached.
  int64_t events = 0;
  int64_t revision = 0;
  // The server's policy differed from the copy's and was adopted.
  bool policy_changed = false;
};

// Applies WatchChanges from the copy's revision + 1 (pseudonymized when the
// snapshot is) until the server says the copy has every event up to its
// revision at that moment (a checkpoint), then adopts the server's policy
// if it is not the copy's (a policy activation is not an event). So every
// write acknowledged before that checkpoint, in particular before CatchUp
// was called, is honoured by the copy when CatchUp returns. With
// `keep_following`, goes on after each checkpoint while it returns true
// (it gets the revision reached), adopting the server's policy at each. The caller needs the
// auditor role: the feed of other callers carries no attribute values, and Apply refuses it.
// Errors: the client's, and OfflineRegistry::Apply's.
absl::StatusOr<CatchUpResult> CatchUp(
    Client& client, OfflineRegistry& registry,
    const std::function<bool(int64_t revision)>& keep_following = nullptr);

}  // namespace consent::offline

#endif  // CONSENT_CLIENT_OFFLINE_CATCH_UP_H_
