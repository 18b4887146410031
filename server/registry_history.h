// The registry's history side (privacy teams, training pipelines'
// purges): ListHistory (a user's change events, paged), WatchChanges (the
// change feed) and VerifyAuditLog (the hash chain).
#ifndef CONSENT_SERVER_REGISTRY_HISTORY_H_
#define CONSENT_SERVER_REGISTRY_HISTORY_H_

#include <functional>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "consent/v1/admin.pb.h"
#include "consent/v1/registry.pb.h"
#include "core/clock.h"
#include "core/policy.h"
#include "server/revision_notifier.h"
#include "storage/consent_store.h"

namespace consent {

// Thread safe. Does not own its collaborators, which must outlive it.
//
// Errors: kInvalidArgument with a google.rpc.BadRequest naming each bad
// field (a page_token that is not ListHistory's or is another user's);
// for WatchChanges kOutOfRange before the oldest revision kept,
// kFailedPrecondition beyond the next one, kUnavailable at shutdown
// (naming the revision to resume from). Storage failures pass through.
class RegistryHistory {
 public:
  // `notifier` wakes WatchChanges when a commit lands.
  RegistryHistory(storage::ConsentStore* store, PolicyHolder* policies, const Clock* clock,
                  RevisionNotifier* notifier)
      : store_(store), policies_(policies), clock_(clock), notifier_(notifier) {}

  // WatchChanges sends a checkpoint after this long without an event.
  void set_checkpoint_interval(absl::Duration interval) { checkpoint_interval_ = interval; }
  // The key of pseudonymized feeds (request.pseudonymize); empty: none, and
  // such a request is kFailedPrecondition. Set before serving.
  void set_pseudonym_key(std::string key) { pseudonym_key_ = std::move(key); }

  absl::Status ListHistory(const v1::ListHistoryRequest& request,
                           v1::ListHistoryResponse* response) const;

  // Streams change events from request.start_revision on through `send`
  // (false: the client is gone), reading them from the store, so a slow
  // consumer only slows its own stream; when idle, waits for commits and
  // sends a checkpoint every checkpoint interval. Returns when `stopped`
  // says so or the notifier is closed (kUnavailable, naming the revision
  // to resume from), or the client went away (kCancelled). With
  // request.checkpoint_when_current, also a checkpoint each time it has
  // sent every event up to the revision current when it read them; with
  // request.pseudonymize, events name users by pseudonym and carry no
  // caller, request id, source or hashes.
  absl::Status WatchChanges(const v1::WatchChangesRequest& request,
                            const std::function<bool(const v1::WatchChangesResponse&)>& send,
                            const std::function<bool()>& stopped) const;

  absl::Status VerifyAuditLog(const v1::VerifyAuditLogRequest& request,
                              v1::VerifyAuditLogResponse* response) const;

 private:
  storage::ConsentStore* const store_;
  PolicyHolder* const policies_;
  const Clock* const clock_;
  RevisionNotifier* const notifier_;
  absl::Duration checkpoint_interval_ = absl::Seconds(5);
  std::string pseudonym_key_;
};

}  // namespace consent

#endif  // CONSENT_SERVER_REGISTRY_HISTORY_H_
