#include "server/registry_import.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "core/validation.h"
#include "server/preference_write.h"

namespace consent {

// A message's records on their way through the store (standalone).
struct RegistryImport::Call::Step {
  explicit Step(RegistryImport::Call* call, std::unique_ptr<v1::ImportSubjectsRequest> m)
      : message(std::move(m)),
        batch(call->import_id_, call->context_.caller, &message->records()) {}
  std::unique_ptr<v1::ImportSubjectsRequest> message;
  ImportBatch batch;
  int64_t offset = 0;  // the last record's
  bool answered = false;
};

namespace {

// Preferences per record, at most (one per purpose of a policy is plenty).
constexpr int kMaxRecordPreferences = 64;
// What a command holds besides its step's records, at most (its time,
// caller, origin and call, the import id and offset, and the NATS
// headers), with room to spare.
constexpr int64_t kCommandOverheadBytes = 4096;

// The rejection of a record that `v` (not empty) finds bad.
v1::ImportRejection RejectionOf(const v1::ImportRecord& record, const Violations& v) {
  v1::ImportRejection rejection;
  rejection.set_offset(record.offset());
  // Echoed only when valid: an id that is not UTF-8 cannot go in a string.
  if (IdProblem(record.user_id()).empty()) rejection.set_user_id(record.user_id());
  const auto& items = v.items();
  if (!items.empty()) {
    rejection.set_field(items[0].first);
    rejection.set_description(items[0].second);
    if (items.size() > 1) {
      absl::StrAppend(rejection.mutable_description(), " (and ", items.size() - 1,
                      items.size() == 2 ? " more problem)" : " more problems)");
    }
  }
  return rejection;
}

void ValidateRecord(const v1::ImportRecord& record, const CompiledPolicy& policy, absl::Time now,
                    Violations* v) {
  ValidateId(record.user_id(), "user_id", v);
  if (!record.jurisdiction().empty()) {
    if (std::string p = JurisdictionProblem(record.jurisdiction()); !p.empty()) {
      v->Add("jurisdiction", p);
    }
  }
  if (record.has_birth_date()) {
    if (std::string p = BirthDateProblem(record.birth_date(), now); !p.empty()) {
      v->Add("birth_date", p);
    }
  }
  if (record.preferences_size() > kMaxRecordPreferences) {
    v->Add("preferences", absl::StrCat(record.preferences_size(), " preferences; at most ",
                                       kMaxRecordPreferences, " per record"));
    return;
  }
  for (int i = 0; i < record.preferences_size(); ++i) {
    const v1::ImportedPreference& p = record.preferences(i);
    const std::string prefix = absl::StrCat("preferences[", i, "].");
    ValidatePreferenceFields(p, prefix, policy, v);
    for (int j = 0; j < i; ++j) {
      if (record.preferences(j).purpose() == p.purpose()) {
        v->Add(prefix + "purpose", absl::StrCat("repeats preferences[", j, "]"));
        break;
      }
    }
  }
  if (record.jurisdiction().empty() && !record.has_birth_date() && record.preferences_size() == 0) {
    v->Add("preferences", "the record sets nothing: give jurisdiction, birth_date or preferences");
  }
}

void SortByOffset(std::vector<v1::ImportRejection>& rejections) {
  std::sort(rejections.begin(), rejections.end(),
            [](const auto& a, const auto& b) { return a.offset() < b.offset(); });
}

}  // namespace

std::optional<v1::ImportRejection> ImportRecordProblem(const v1::ImportRecord& record,
                                                       const CompiledPolicy& policy,
                                                       absl::Time now) {
  Violations v;
  ValidateRecord(record, policy, now, &v);
  if (v.empty()) return std::nullopt;
  return RejectionOf(record, v);
}

ImportBatch::ImportBatch(std::string import_id, std::string caller,
                         const google::protobuf::RepeatedPtrField<v1::ImportRecord>* records)
    : import_id_(std::move(import_id)), caller_(std::move(caller)), records_in_(records) {
  source_.set_channel("import");
}

std::vector<storage::SubjectUpdate> ImportBatch::Prepare(const CompiledPolicy& policy,
                                                         absl::Time now, int first) {
  std::vector<storage::SubjectUpdate> updates;
  const int size = records_in_->size();
  deleted_.assign(size, 0);
  records_ = size - first;
  for (int r = first; r < size; ++r) {
    const v1::ImportRecord& record = (*records_in_)[r];
    if (std::optional<v1::ImportRejection> problem = ImportRecordProblem(record, policy, now)) {
      invalid_.push_back(*std::move(problem));
      continue;
    }
    if (!record.jurisdiction().empty() || record.has_birth_date()) {
      storage::SubjectUpdate update;
      update.user_id = record.user_id();
      update.return_subject = false;
      update.apply = [this, r](storage::UpdateContext& context, v1::Subject& subject,
                               v1::ChangeEvent& event) {
        if (Refused(r, context, subject)) return absl::OkStatus();
        const v1::ImportRecord& imported = (*records_in_)[r];
        v1::AttributesChange* change = event.mutable_attributes();
        *change->mutable_before() = subject.attributes();
        v1::SubjectAttributes* attributes = subject.mutable_attributes();
        if (!imported.jurisdiction().empty()) {
          attributes->set_jurisdiction(imported.jurisdiction());
        }
        if (imported.has_birth_date()) *attributes->mutable_birth_date() = imported.birth_date();
        *change->mutable_after() = *attributes;
        Describe(r, v1::CHANGE_KIND_SUBJECT_ATTRIBUTES, event);
        return absl::OkStatus();
      };
      updates.push_back(std::move(update));
    }
    for (int i = 0; i < record.preferences_size(); ++i) {
      storage::SubjectUpdate update;
      update.user_id = record.user_id();
      update.return_subject = false;
      update.apply = [this, r, i](storage::UpdateContext& context, v1::Subject& subject,
                                  v1::ChangeEvent& event) {
        if (Refused(r, context, subject)) return absl::OkStatus();
        ApplyPreference((*records_in_)[r].preferences(i), &source_, context, subject, event);
        Describe(r, v1::CHANGE_KIND_PREFERENCE, event);
        return absl::OkStatus();
      };
      updates.push_back(std::move(update));
    }
  }
  return updates;
}

bool ImportBatch::Refused(int r, storage::UpdateContext& context, const v1::Subject& subject) {
  if (subject.attributes().account_state() != v1::ACCOUNT_STATE_DELETED) return false;
  deleted_[r] = 1;
  context.Skip();
  return true;
}

void ImportBatch::Describe(int r, v1::ChangeKind kind, v1::ChangeEvent& event) const {
  event.set_kind(kind);
  event.set_caller(caller_);
  event.set_request_id(absl::StrCat(import_id_, ":", (*records_in_)[r].offset()));
  *event.mutable_source() = source_;
}

std::vector<v1::ImportRejection> ImportBatch::Rejections() const {
  std::vector<v1::ImportRejection> rejections = invalid_;
  for (size_t r = 0; r < deleted_.size(); ++r) {
    if (!deleted_[r]) continue;
    const v1::ImportRecord& record = (*records_in_)[static_cast<int>(r)];
    v1::ImportRejection& rejection = rejections.emplace_back();
    rejection.set_offset(record.offset());
    rejection.set_user_id(record.user_id());
    rejection.set_description("the subject was deleted; a deleted subject takes no more writes");
  }
  SortByOffset(rejections);
  return rejections;
}

absl::StatusOr<std::unique_ptr<RegistryImport::Call>> RegistryImport::Begin(
    const std::string& import_id, CallContext context, StepObserver on_step) {
  if (std::string p = IdProblem(import_id); !p.empty()) return FieldError("import_id", p);
  {
    absl::MutexLock lock(&mu_);
    if (!running_.insert(import_id).second) {
      return absl::AbortedError(absl::StrCat("import \"", import_id,
                                             "\" is running on another call; one call at a time "
                                             "moves an import on"));
    }
  }
  absl::StatusOr<int64_t> through = store_->ImportedThrough(import_id);
  if (!through.ok()) {
    End(import_id);
    return through.status();
  }
  return std::unique_ptr<Call>(
      new Call(this, import_id, std::move(context), *through, std::move(on_step)));
}

void RegistryImport::End(const std::string& import_id) {
  absl::MutexLock lock(&mu_);
  running_.erase(import_id);
}

RegistryImport::Call::Call(RegistryImport* owner, std::string import_id, CallContext context,
                           int64_t start_offset, StepObserver on_step)
    : owner_(owner),
      import_id_(std::move(import_id)),
      context_(std::move(context)),
      start_offset_(start_offset),
      on_step_(std::move(on_step)),
      last_offset_(0),
      acknowledged_(start_offset) {}

RegistryImport::Call::~Call() {
  AwaitInFlight(0);
  owner_->End(import_id_);
}

absl::Status RegistryImport::Call::Add(std::unique_ptr<v1::ImportSubjectsRequest> message) {
  {
    absl::MutexLock lock(&mu_);
    if (!failure_.ok()) return failure_;
  }
  if (message->import_id() != import_id_) {
    return FieldError("import_id", absl::StrCat("differs from the call's first message (\"",
                                                import_id_, "\"): one call, one import"));
  }
  if (message->records_size() > kMaxImportRecords) {
    return FieldError("records", absl::StrCat(message->records_size(), " records; at most ",
                                              kMaxImportRecords, " per message"));
  }
  int first = 0;  // the first record not acknowledged already
  for (int i = 0; i < message->records_size(); ++i) {
    const int64_t offset = message->records(i).offset();
    if (offset <= last_offset_) {
      return FieldError(absl::StrCat("records[", i, "].offset"),
                        absl::StrCat(offset, " is not above the previous record's offset (",
                                     last_offset_, "): offsets increase through an import"));
    }
    last_offset_ = offset;
    if (offset <= start_offset_) first = i + 1;
  }
  {
    absl::MutexLock lock(&mu_);
    skipped_ += first;
  }
  if (first == message->records_size()) return absl::OkStatus();
  if (owner_->replicator_ != nullptr) return AddReplicated(*message, first);

  auto step = std::make_unique<Step>(this, std::move(message));
  step->offset = last_offset_;
  std::vector<storage::SubjectUpdate> updates =
      step->batch.Prepare(*owner_->policies_->Get(), owner_->clock_->Now(), first);

  AwaitInFlight(kMaxInFlight - 1);
  Step* submitted = step.get();
  {
    absl::MutexLock lock(&mu_);
    if (!failure_.ok()) return failure_;
    in_flight_.push_back(std::move(step));
  }
  owner_->store_->ImportAsync(std::move(updates), owner_->clock_->Now(),
                              storage::ImportStep{import_id_, submitted->offset},
                              [this, submitted](absl::StatusOr<storage::CommitResult> result) {
                                Answered(submitted, std::move(result));
                              });
  return absl::OkStatus();
}

absl::Status RegistryImport::Call::AddReplicated(const v1::ImportSubjectsRequest& message,
                                                 int first) {
  const absl::Time now = owner_->clock_->Now();
  const std::shared_ptr<const CompiledPolicy> policy = owner_->policies_->Get();
  const int64_t budget = owner_->replicator_->max_command_bytes() - kCommandOverheadBytes;
  replication::v1::Command command;
  std::vector<v1::ImportRejection> invalid;
  int64_t bytes = 0;  // of the command's records
  auto start = [&] {
    command.Clear();
    StampCommand(context_.caller, now, &command);
    command.mutable_import_step()->set_import_id(import_id_);
    invalid.clear();
    bytes = 0;
  };
  start();
  for (int r = first; r < message.records_size(); ++r) {
    const v1::ImportRecord& record = message.records(r);
    if (std::optional<v1::ImportRejection> problem = ImportRecordProblem(record, *policy, now)) {
      invalid.push_back(*std::move(problem));
      continue;
    }
    // Tag and length of the record in the step: at most 6 bytes.
    const int64_t size = static_cast<int64_t>(record.ByteSizeLong()) + 6;
    if (bytes > 0 && bytes + size > budget) {
      // The records so far, through the one before this, are a step.
      command.mutable_import_step()->set_offset(message.records(r - 1).offset());
      if (absl::Status s = SubmitStep(std::move(command), std::move(invalid)); !s.ok()) {
        return s;
      }
      start();
    }
    *command.mutable_import_step()->add_records() = record;
    bytes += size;
  }
  command.mutable_import_step()->set_offset(message.records(message.records_size() - 1).offset());
  return SubmitStep(std::move(command), std::move(invalid));
}

absl::Status RegistryImport::Call::SubmitStep(replication::v1::Command command,
                                              std::vector<v1::ImportRejection> invalid) {
  replication::v1::ImportStepApplied applied;
  const absl::Status status = owner_->replicator_->SubmitAndWait(std::move(command), &applied);
  int64_t imported = 0;
  int64_t rejected = 0;
  {
    absl::MutexLock lock(&mu_);
    if (status.ok()) {
      std::vector<v1::ImportRejection> rejections = std::move(invalid);
      for (v1::ImportRejection& rejection : *applied.mutable_rejections()) {
        rejections.push_back(std::move(rejection));
      }
      SortByOffset(rejections);
      rejected = static_cast<int64_t>(rejections.size());
      imported = applied.imported();
      Count(imported, applied.skipped(), std::move(rejections), applied.acknowledged_offset());
    } else if (failure_.ok()) {
      failure_ = status;
    }
  }
  if (on_step_) on_step_(imported, rejected, status);
  return status;
}

void RegistryImport::Call::Count(int64_t imported, int64_t skipped,
                                 std::vector<v1::ImportRejection> rejections,
                                 int64_t acknowledged) {
  imported_ += imported;
  rejected_ += static_cast<int64_t>(rejections.size());
  skipped_ += skipped;
  acknowledged_ = std::max(acknowledged_, acknowledged);
  for (v1::ImportRejection& rejection : rejections) {
    if (rejections_.size() >= kMaxImportRejections) break;
    rejections_.push_back(std::move(rejection));
  }
}

void RegistryImport::Call::Answered(Step* step, absl::StatusOr<storage::CommitResult> result) {
  int64_t imported = 0;
  int64_t rejected = 0;
  {
    absl::MutexLock lock(&mu_);
    if (result.ok()) {
      std::vector<v1::ImportRejection> rejections = step->batch.Rejections();
      rejected = static_cast<int64_t>(rejections.size());
      imported = step->batch.records() - rejected;
      Count(imported, 0, std::move(rejections), step->offset);
    } else if (failure_.ok()) {
      failure_ = result.status();
    }
  }
  if (result.ok()) owner_->notifier_->Notify(owner_->store_->CurrentRevision());
  if (on_step_) on_step_(imported, rejected, result.status());
  // Last: once the step is answered, the call may end and be destroyed.
  absl::MutexLock lock(&mu_);
  step->answered = true;
  while (!in_flight_.empty() && in_flight_.front()->answered) in_flight_.pop_front();
}

void RegistryImport::Call::AwaitInFlight(int at_most) {
  absl::MutexLock lock(&mu_);
  auto few = [this, at_most]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return in_flight_.size() <= static_cast<size_t>(at_most);
  };
  mu_.Await(absl::Condition(&few));
}

absl::Status RegistryImport::Call::Finish(v1::ImportSubjectsResponse* response) {
  AwaitInFlight(0);
  absl::MutexLock lock(&mu_);
  response->set_import_id(import_id_);
  response->set_acknowledged_offset(acknowledged_);
  response->set_imported(imported_);
  response->set_rejected(rejected_);
  response->set_skipped(skipped_);
  for (const v1::ImportRejection& rejection : rejections_) *response->add_rejections() = rejection;
  response->set_revision(owner_->store_->CurrentRevision());
  return failure_;
}

}  // namespace consent
