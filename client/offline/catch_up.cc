#include "client/offline/catch_up.h"

namespace consent::offline {

namespace {

// Adopts the server's policy if it is not the copy's: a policy activation
// is not an event of the feed.
absl::Status SyncPolicy(Client& client, OfflineRegistry& registry, CatchUpResult* result) {
  auto policy = client.GetPolicy();
  if (!policy.ok()) return policy.status();
  if (policy->text() == registry.policy()->text()) return absl::OkStatus();
  if (absl::Status s = registry.SetPolicy(policy->text()); !s.ok()) return s;
  result->policy_changed = true;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CatchUpResult> CatchUp(Client& client, OfflineRegistry& registry,
                                      const std::function<bool(int64_t revision)>& keep_following) {
  CatchUpResult result;
  v1::WatchChangesRequest request;
  request.set_start_revision(registry.revision() + 1);
  request.set_pseudonymize(registry.info().pseudonymized);
  request.set_checkpoint_when_current(true);
  absl::Status applied;
  absl::Status watched = client.Watch(request, [&](const v1::WatchChangesResponse& message) {
    if (message.has_event()) {
      applied = registry.Apply(message.event());
      if (!applied.ok()) return false;
      ++result.events;
      return true;
    }
    applied = registry.Advance(message.checkpoint().revision());
    if (applied.ok()) applied = SyncPolicy(client, registry, &result);
    if (!applied.ok()) return false;
    return keep_following != nullptr && keep_following(message.checkpoint().revision());
  });
  if (!watched.ok()) return watched;
  if (!applied.ok()) return applied;
  result.revision = registry.revision();
  return result;
}

}  // namespace consent::offline
