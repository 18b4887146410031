// The registry with replication (replication.h): writes and policy
// activations through the command log, reads that wait for min_revision,
// and the registry as what applies the log's commands.
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "core/proto_time.h"
#include "core/validation.h"
#include "server/registry.h"

namespace consent {
namespace {

using replication::v1::Command;

// Records the command at `sequence` as applied with nothing written
// (RegistryWrites::Refuse: for a command refused before it reached the
// store, or one that writes apart from it), so the next command follows
// it; waits, then returns `outcome`, or the failure to record it.
absl::Status RecordApplied(RegistryWrites& writes, const Command& command, int64_t sequence,
                           absl::Status outcome) {
  CallContext context;
  context.caller = command.caller();
  context.time = FromProto(command.time());
  context.log_sequence = sequence;
  return RegistryWrites::AwaitWrite([&](RegistryWrites::WriteDone done) {
    writes.Refuse(context, context.time, std::move(outcome), std::move(done));
  });
}

}  // namespace

void Registry::set_replicator(Replicator* replicator, absl::Duration min_revision_wait,
                              std::function<void(bool reached)> on_revision_wait) {
  replicator_ = replicator;
  imports_.set_replicator(replicator);
  min_revision_wait_ = min_revision_wait;
  checks_.set_revision_wait(
      [this, on_revision_wait = std::move(on_revision_wait)](int64_t revision) -> int64_t {
        const absl::Time deadline = absl::Now() + min_revision_wait_;
        int64_t current = store_->CurrentRevision();
        while (current < revision && absl::Now() < deadline) {
          if (!notifier_.WaitBeyond(current, deadline)) break;  // shutting down
          current = store_->CurrentRevision();
        }
        if (on_revision_wait) on_revision_wait(current >= revision);
        return current;
      });
}

absl::StatusOr<PolicyChange> Registry::ActivatePolicy(std::shared_ptr<const CompiledPolicy> next) {
  if (replicator_ == nullptr) return ActivatePolicyAt(std::move(next), clock_->Now());
  // Checked here first, so that a refused policy never reaches the log;
  // applying checks again, against the policy in force at its place there.
  PolicyChange unchanged;
  unchanged.version = next->version();
  {
    absl::MutexLock lock(&activate_mu_);
    const auto current = policies_->Get();
    unchanged.previous_version = current ? current->version() : "";
    auto changed = CheckActivation(*next);
    if (!changed.ok()) return changed.status();
    if (!*changed) return unchanged;
  }
  Command command;
  StampCommand("policy", clock_->Now(), &command);
  command.mutable_activate_policy()->set_text(next->text());
  replication::v1::PolicyActivated activated;
  if (absl::Status s = replicator_->SubmitAndWait(std::move(command), &activated); !s.ok()) {
    return s;
  }
  PolicyChange change;
  change.version = activated.version();
  change.previous_version = activated.previous_version();
  change.changed = activated.changed();
  return change;
}

void Registry::LogApplier::ApplyWrite(const Command& command, int64_t sequence, Done done) {
  Registry& r = *registry_;
  if (r.policies_->Get() == nullptr) {
    // Every log starts with a policy activation; without one, refused alike
    // on every replica.
    return done(RecordApplied(r.writes_, command, sequence,
                              absl::FailedPreconditionError(
                                  "no policy was active at this place in the command log")),
                "");
  }
  // What a write needs until it is answered: its context and response.
  auto apply = [&](const auto& request, auto write, auto response_type) {
    using Response = decltype(response_type);
    struct Applying {
      CallContext context;
      Response response;
    };
    auto applying = std::make_shared<Applying>();
    applying->context.caller = command.caller();
    applying->context.time = FromProto(command.time());
    applying->context.log_sequence = sequence;
    (r.writes_.*write)(request, applying->context, &applying->response,
                       [applying, done = std::move(done)](absl::Status status) {
                         done(status,
                              status.ok() ? applying->response.SerializeAsString() : std::string());
                       });
  };
  switch (command.write_case()) {
    case Command::kSetPreference:
      return apply(command.set_preference(), &RegistryWrites::SetPreference,
                   v1::SetPreferenceResponse());
    case Command::kBatchSetPreferences:
      return apply(command.batch_set_preferences(), &RegistryWrites::BatchSetPreferences,
                   v1::BatchSetPreferencesResponse());
    case Command::kUpdateSubject:
      return apply(command.update_subject(), &RegistryWrites::UpdateSubject,
                   v1::UpdateSubjectResponse());
    case Command::kSetContentExclusion:
      return apply(command.set_content_exclusion(), &RegistryWrites::SetContentExclusion,
                   v1::SetContentExclusionResponse());
    case Command::kDeleteSubject:
      return apply(command.delete_subject(), &RegistryWrites::DeleteSubject,
                   v1::DeleteSubjectResponse());
    case Command::kRecordNotice:
      return apply(command.record_notice(), &RegistryWrites::RecordNotice,
                   v1::RecordNoticeResponse());
    case Command::kBatchRecordNotices:
      return apply(command.batch_record_notices(), &RegistryWrites::BatchRecordNotices,
                   v1::BatchRecordNoticesResponse());
    case Command::kActivatePolicy:  // applied alone
    case Command::kImportStep:
    case Command::WRITE_NOT_SET:
      break;
  }
  done(RecordApplied(r.writes_, command, sequence,
                     absl::InvalidArgumentError("the command holds no write")),
       "");
}

absl::Status Registry::LogApplier::ApplyAlone(const Command& command, int64_t sequence,
                                              std::string* response) {
  if (command.write_case() == Command::kImportStep) {
    return ApplyImport(command, sequence, response);
  }
  return ApplyPolicy(command, sequence, response);
}

absl::Status Registry::LogApplier::ApplyImport(const Command& command, int64_t sequence,
                                               std::string* response) {
  Registry& r = *registry_;
  const absl::Time now = FromProto(command.time());
  const replication::v1::ImportStep& step = command.import_step();
  auto refuse = [&](absl::Status refused) {
    return RecordApplied(r.writes_, command, sequence, std::move(refused));
  };
  const std::shared_ptr<const CompiledPolicy> policy = r.policies_->Get();
  if (policy == nullptr) {
    return refuse(
        absl::FailedPreconditionError("no policy was active at this place in the command log"));
  }
  if (!IdProblem(step.import_id()).empty() || step.offset() <= 0) {
    return refuse(absl::InvalidArgumentError("the import step has no valid import id or offset"));
  }
  // Nothing else is being applied: the progress read is that of every
  // command before this one.
  absl::StatusOr<int64_t> through = r.store_->ImportedThrough(step.import_id());
  if (!through.ok()) return through.status();
  replication::v1::ImportStepApplied applied;
  int first = 0;
  while (first < step.records_size() && step.records(first).offset() <= *through) ++first;
  applied.set_skipped(first);
  if (step.offset() <= *through) {
    // Sent again, or by another call that got there first.
    if (absl::Status s = RecordApplied(r.writes_, command, sequence, absl::OkStatus()); !s.ok()) {
      return s;
    }
    applied.set_acknowledged_offset(*through);
    *response = applied.SerializeAsString();
    return absl::OkStatus();
  }
  ImportBatch batch(step.import_id(), command.caller(), &step.records());
  std::vector<storage::SubjectUpdate> updates = batch.Prepare(*policy, now, first);
  absl::StatusOr<storage::CommitResult> result = absl::InternalError("not answered");
  absl::Notification committed;
  r.store_->ApplyLoggedImportAsync(std::move(updates), now,
                                   storage::ImportStep{step.import_id(), step.offset()}, sequence,
                                   [&](absl::StatusOr<storage::CommitResult> c) {
                                     result = std::move(c);
                                     committed.Notify();
                                   });
  committed.WaitForNotification();
  if (!result.ok()) return result.status();
  r.notifier_.Notify(r.store_->CurrentRevision());
  std::vector<v1::ImportRejection> rejections = batch.Rejections();
  applied.set_imported(batch.records() - static_cast<int64_t>(rejections.size()));
  for (v1::ImportRejection& rejection : rejections) {
    *applied.add_rejections() = std::move(rejection);
  }
  applied.set_acknowledged_offset(step.offset());
  *response = applied.SerializeAsString();
  return absl::OkStatus();
}

absl::Status Registry::LogApplier::ApplyPolicy(const Command& command, int64_t sequence,
                                               std::string* response) {
  Registry& r = *registry_;
  const absl::Time now = FromProto(command.time());
  auto compiled = CompiledPolicy::FromText(command.activate_policy().text(),
                                           absl::StrCat("the policy at command ", sequence));
  absl::StatusOr<PolicyChange> change = compiled.ok()
                                            ? r.ActivatePolicyAt(*std::move(compiled), now)
                                            : absl::StatusOr<PolicyChange>(compiled.status());
  if (!change.ok() && !storage::IsRefusal(change.status())) return change.status();
  // Recorded apart from the policy: applied again after a crash between
  // the two, the same text changes nothing, and is recorded then.
  if (absl::Status s = RecordApplied(r.writes_, command, sequence, change.status()); !s.ok()) {
    return s;
  }
  replication::v1::PolicyActivated activated;
  activated.set_version(change->version);
  activated.set_previous_version(change->previous_version);
  activated.set_changed(change->changed);
  *response = activated.SerializeAsString();
  return absl::OkStatus();
}

}  // namespace consent
