// The registry's operations, independent of the transport. Registry is
// the one object the gRPC services (registry_service.h), tools and tests
// hold; it owns the three parts that do the work, one per job:
//   RegistryWrites   (registry_writes.h)   the writes and GetSubject;
//   RegistryChecks   (registry_checks.h)   Check, BatchCheck (and so StreamCheck);
//   RegistryHistory  (registry_history.h)  ListHistory, WatchChanges,
//                                          VerifyAuditLog;
// and does itself what touches all of them: activating policies and
// backups. GetSubjectSummary is a function over the store and the policy
// (subject_summary.h). The errors each call gives are listed on its part's class.
//
// With replication (replication.h, set_replicator) the writes, import
// steps and policy activations go through the replicated command log:
// validated here, appended, and answered once this replica has applied
// them; the registry is also what applies the log's commands
// (command_applier, registry_replication.cc).
#ifndef CONSENT_SERVER_REGISTRY_H_
#define CONSENT_SERVER_REGISTRY_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "consent/replication/v1/command.pb.h"
#include "consent/v1/admin.pb.h"
#include "consent/v1/registry.pb.h"
#include "core/clock.h"
#include "core/policy.h"
#include "server/registry_checks.h"
#include "server/registry_history.h"
#include "server/registry_import.h"
#include "server/registry_writes.h"
#include "server/replication.h"
#include "server/revision_notifier.h"
#include "server/snapshot_export.h"
#include "server/subject_summary.h"
#include "storage/consent_store.h"

namespace consent {

// The outcome of activating a policy.
struct PolicyChange {
  std::string version;
  std::string previous_version;
  // False when the text equals the active policy's: nothing was recorded.
  bool changed = false;
};

// Thread safe. Does not own its collaborators, which must outlive it.
class Registry {
 public:
  Registry(storage::ConsentStore* store, PolicyHolder* policies, const Clock* clock)
      : store_(store),
        policies_(policies),
        clock_(clock),
        writes_(store, policies, clock, &notifier_),
        checks_(store, policies, clock),
        history_(store, policies, clock, &notifier_),
        imports_(store, policies, clock, &notifier_),
        exporter_(store, policies, clock) {}

  // WatchChanges sends a checkpoint after this long without an event. Set
  // before serving.
  void set_checkpoint_interval(absl::Duration interval) {
    history_.set_checkpoint_interval(interval);
  }
  // Where CreateBackup writes (each backup a new subdirectory); empty
  // disables CreateBackup. After each backup only the newest `keep` are
  // kept (0: all). Set before serving.
  void set_backup_dir(std::string directory, int keep = 0) {
    backup_dir_ = std::move(directory);
    backup_keep_ = keep;
  }

  // The key ExportSnapshot signs with (none: it is refused) and the key
  // of pseudonymized exports and feeds (empty: none). Set before serving.
  void set_snapshot_keys(std::optional<snapshot::SigningKey> signing, std::string pseudonym_key) {
    history_.set_pseudonym_key(pseudonym_key);
    exporter_.set_keys(std::move(signing), std::move(pseudonym_key));
  }

  // Loads every policy version kept in the store (for as_of), then
  // activates `file_policy` unless it is the latest already. Call once,
  // before serving.
  absl::Status Init(std::shared_ptr<const CompiledPolicy> file_policy) {
    if (absl::Status s = LoadStoredPolicies(); !s.ok()) return s;
    return ActivatePolicy(std::move(file_policy)).status();
  }
  // Init's first half: the policy versions kept in the store.
  absl::Status LoadStoredPolicies();

  // Makes `next` the active policy and records it (with its activation
  // time) in the store. The same text as the active policy changes nothing;
  // a different text under the active policy's version is
  // kFailedPrecondition, and so is a policy that loosens what the active
  // one allows without saying so (policy_change.h). Activations are
  // serialised. With replication, checked here, then activated through
  // the command log (on every replica, at the same place in the log).
  absl::StatusOr<PolicyChange> ActivatePolicy(std::shared_ptr<const CompiledPolicy> next);

  // Replication: from now on writes, import steps and policy activations
  // go through `replicator`'s command log, and a read whose min_revision
  // is ahead of this replica waits up to `min_revision_wait` for it (then
  // kUnavailable); `on_revision_wait(reached)` (may be empty) is told of
  // each such wait. Call once, before serving; `replicator` must have
  // been started with command_applier() and outlive the registry's use.
  void set_replicator(Replicator* replicator, absl::Duration min_revision_wait,
                      std::function<void(bool reached)> on_revision_wait = {});
  // What applies the replicated command log's commands to this registry.
  CommandApplier* command_applier() { return &applier_; }

  // Writes (RegistryWrites).
  using WriteDone = RegistryWrites::WriteDone;
  void SetPreference(const v1::SetPreferenceRequest& request, const CallContext& context,
                     v1::SetPreferenceResponse* response, WriteDone done) {
    if (replicator_ != nullptr) {
      return Replicate(request, &replication::v1::Command::mutable_set_preference, context,
                       response, std::move(done));
    }
    writes_.SetPreference(request, context, response, std::move(done));
  }
  void BatchSetPreferences(const v1::BatchSetPreferencesRequest& request,
                           const CallContext& context, v1::BatchSetPreferencesResponse* response,
                           WriteDone done) {
    if (replicator_ != nullptr) {
      return Replicate(request, &replication::v1::Command::mutable_batch_set_preferences, context,
                       response, std::move(done));
    }
    writes_.BatchSetPreferences(request, context, response, std::move(done));
  }
  void UpdateSubject(const v1::UpdateSubjectRequest& request, const CallContext& context,
                     v1::UpdateSubjectResponse* response, WriteDone done) {
    if (replicator_ != nullptr) {
      return Replicate(request, &replication::v1::Command::mutable_update_subject, context,
                       response, std::move(done));
    }
    writes_.UpdateSubject(request, context, response, std::move(done));
  }
  void SetContentExclusion(const v1::SetContentExclusionRequest& request,
                           const CallContext& context, v1::SetContentExclusionResponse* response,
                           WriteDone done) {
    if (replicator_ != nullptr) {
      return Replicate(request, &replication::v1::Command::mutable_set_content_exclusion, context,
                       response, std::move(done));
    }
    writes_.SetContentExclusion(request, context, response, std::move(done));
  }
  void DeleteSubject(const v1::DeleteSubjectRequest& request, const CallContext& context,
                     v1::DeleteSubjectResponse* response, WriteDone done) {
    if (replicator_ != nullptr) {
      return Replicate(request, &replication::v1::Command::mutable_delete_subject, context,
                       response, std::move(done));
    }
    writes_.DeleteSubject(request, context, response, std::move(done));
  }
  void RecordNotice(const v1::RecordNoticeRequest& request, const CallContext& context,
                    v1::RecordNoticeResponse* response, WriteDone done) {
    if (replicator_ != nullptr) {
      return Replicate(request, &replication::v1::Command::mutable_record_notice, context, response,
                       std::move(done));
    }
    writes_.RecordNotice(request, context, response, std::move(done));
  }
  void BatchRecordNotices(const v1::BatchRecordNoticesRequest& request, const CallContext& context,
                          v1::BatchRecordNoticesResponse* response, WriteDone done) {
    if (replicator_ != nullptr) {
      return Replicate(request, &replication::v1::Command::mutable_batch_record_notices, context,
                       response, std::move(done));
    }
    writes_.BatchRecordNotices(request, context, response, std::move(done));
  }
  static absl::Status AwaitWrite(const std::function<void(WriteDone)>& start) {
    return RegistryWrites::AwaitWrite(start);
  }
  // An ImportSubjects call (registry_import.h).
  absl::StatusOr<std::unique_ptr<RegistryImport::Call>> BeginImport(
      const std::string& import_id, CallContext context, RegistryImport::StepObserver on_step) {
    return imports_.Begin(import_id, std::move(context), std::move(on_step));
  }
  absl::Status GetSubject(const v1::GetSubjectRequest& request, v1::GetSubjectResponse* response) {
    return writes_.GetSubject(request, response);
  }
  // What the registry answers now for each purpose, for the user's own view
  // (subject_summary.h).
  absl::Status GetSubjectSummary(const v1::GetSubjectSummaryRequest& request,
                                 v1::GetSubjectSummaryResponse* response) {
    return SummarizeSubject(request, *store_, *policies_->Get(), clock_->Now(), response);
  }

  // Checks (RegistryChecks).
  absl::Status Check(const v1::CheckRequest& request, v1::CheckResponse* response) {
    return checks_.Check(request, response);
  }
  absl::Status BatchCheck(const v1::BatchCheckRequest& request, DecisionSink* decisions,
                          const CallControl& control = {}) {
    return checks_.BatchCheck(request, decisions, control);
  }

  // History, the change feed and the audit chain (RegistryHistory).
  absl::Status ListHistory(const v1::ListHistoryRequest& request,
                           v1::ListHistoryResponse* response) {
    return history_.ListHistory(request, response);
  }
  absl::Status WatchChanges(const v1::WatchChangesRequest& request,
                            const std::function<bool(const v1::WatchChangesResponse&)>& send,
                            const std::function<bool()>& stopped) {
    return history_.WatchChanges(request, send, stopped);
  }
  // Ends every WatchChanges stream (shutdown).
  void CloseWatchers() { notifier_.Close(); }
  absl::Status VerifyAuditLog(const v1::VerifyAuditLogRequest& request,
                              v1::VerifyAuditLogResponse* response) {
    return history_.VerifyAuditLog(request, response);
  }

  // A consistent copy of the store in a new directory under the backup
  // directory (set_backup_dir), named by request.directory. Writes wait
  // while the copy is taken; reads go on. INVALID_ARGUMENT for a name that
  // is not one (a path, "..", empty), ALREADY_EXISTS, FAILED_PRECONDITION
  // when backups are disabled.
  absl::Status CreateBackup(const v1::CreateBackupRequest& request,
                            v1::CreateBackupResponse* response);

  // A signed snapshot of every subject, streamed (snapshot_export.h).
  absl::Status ExportSnapshot(const v1::ExportSnapshotRequest& request,
                              const std::function<bool(const v1::ExportSnapshotResponse&)>& send,
                              const std::function<bool()>& stopped) const {
    return exporter_.Export(request, send, stopped);
  }

 private:
  // Applies the replicated log's commands (registry_replication.cc).
  class LogApplier final : public CommandApplier {
   public:
    explicit LogApplier(Registry* registry) : registry_(registry) {}
    void ApplyWrite(const replication::v1::Command& command, int64_t sequence, Done done) override;
    absl::Status ApplyAlone(const replication::v1::Command& command, int64_t sequence,
                            std::string* response) override;

   private:
    absl::Status ApplyPolicy(const replication::v1::Command& command, int64_t sequence,
                             std::string* response);
    // An import step: its records above the import's progress, each
    // validated again under the policy in force here.
    absl::Status ApplyImport(const replication::v1::Command& command, int64_t sequence,
                             std::string* response);

    Registry* const registry_;
  };

  // A write with replication: validated at the caller's time, appended as
  // a command holding `request` (in the field `field` gives), answered
  // once applied here.
  template <typename Request, typename Response>
  void Replicate(const Request& request, Request* (replication::v1::Command::*field)(),
                 const CallContext& context, Response* response, WriteDone done) {
    const absl::Time now = writes_.TimeOf(context);
    if (absl::Status s = writes_.Validate(request, now); !s.ok()) return done(s);
    replication::v1::Command command;
    StampCommand(context.caller, now, &command);
    *(command.*field)() = request;
    replicator_->Submit(std::move(command), request.request_id(),
                        [response, done = std::move(done)](absl::Status status, std::string bytes) {
                          if (status.ok() && !response->ParseFromString(bytes)) {
                            status =
                                absl::InternalError("a write's replicated answer does not parse");
                          }
                          done(std::move(status));
                        });
  }
  // Whether `next` changes the active policy (false: the same text), or
  // why it may not replace it.
  absl::StatusOr<bool> CheckActivation(const CompiledPolicy& next);
  // ActivatePolicy's checks and activation, stamped `now`.
  absl::StatusOr<PolicyChange> ActivatePolicyAt(std::shared_ptr<const CompiledPolicy> next,
                                                absl::Time now);

  storage::ConsentStore* const store_;
  PolicyHolder* const policies_;
  const Clock* const clock_;
  absl::Mutex activate_mu_;
  // Told of each commit by the writes; waited on by WatchChanges.
  RevisionNotifier notifier_;
  RegistryWrites writes_;
  RegistryChecks checks_;
  RegistryHistory history_;
  RegistryImport imports_;
  SnapshotExporter exporter_;
  std::string backup_dir_;
  int backup_keep_ = 0;
  LogApplier applier_{this};
  Replicator* replicator_ = nullptr;  // null: standalone
  absl::Duration min_revision_wait_;
};

}  // namespace consent

#endif  // CONSENT_SERVER_REGISTRY_H_
