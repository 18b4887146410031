// ExportSnapshot: the decision inputs of every subject at one revision, as
// a signed snapshot file (core/snapshot_format.h, docs/offline.md),
// streamed to the caller while it is built.
#ifndef CONSENT_SERVER_SNAPSHOT_EXPORT_H_
#define CONSENT_SERVER_SNAPSHOT_EXPORT_H_

#include <functional>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "consent/v1/admin.pb.h"
#include "core/clock.h"
#include "core/policy.h"
#include "core/snapshot_signing.h"
#include "storage/consent_store.h"

namespace consent {

// Thread safe once its keys are set. Does not own its collaborators.
class SnapshotExporter {
 public:
  SnapshotExporter(storage::ConsentStore* store, PolicyHolder* policies, const Clock* clock)
      : store_(store), policies_(policies), clock_(clock) {}

  // The key snapshots are signed with (none: Export is refused) and the
  // key of pseudonymized exports (empty: none). Set before serving.
  void set_keys(std::optional<snapshot::SigningKey> signing, std::string pseudonym_key) {
    signing_ = std::move(signing);
    pseudonym_key_ = std::move(pseudonym_key);
  }

  // Builds the snapshot from a consistent view of the store and hands it
  // to `send` in messages of up to 1 MiB (false: the client went away,
  // kCancelled). kCancelled also once `stopped` says so (shutdown);
  // kFailedPrecondition without the keys the request needs; storage errors
  // pass through.
  absl::Status Export(const v1::ExportSnapshotRequest& request,
                      const std::function<bool(const v1::ExportSnapshotResponse&)>& send,
                      const std::function<bool()>& stopped) const;

 private:
  storage::ConsentStore* const store_;
  PolicyHolder* const policies_;
  const Clock* const clock_;
  std::optional<snapshot::SigningKey> signing_;
  std::string pseudonym_key_;
};

}  // namespace consent

#endif  // CONSENT_SERVER_SNAPSHOT_EXPORT_H_
