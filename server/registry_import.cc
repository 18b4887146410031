#include "server/registry_import.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "core/validation.h"
#include "server/preference_write.h"

namespace consent {

// A message's records on their way through the store.
struct RegistryImport::Call::Step {
  Call* call = nullptr;
  std::unique_ptr<v1::ImportSubjectsRequest> message;
  int64_t offset = 0;  // the last record's
  // Records not skipped, and those rejected by validation (record order).
  int64_t records = 0;
  std::vector<v1::ImportRejection> invalid;
  std::vector<storage::SubjectUpdate> updates;
  // Per record: refused when applied, the subject being deleted. Written
  // by the store's preparing thread, read once the step is answered.
  std::vector<char> deleted;
  bool answered = false;
};

namespace {

// Preferences per record, at most (one per purpose of a policy is plenty).
constexpr int kMaxRecordPreferences = 64;

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

}  // namespace

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
      acknowledged_(start_offset) {
  source_.set_channel("import");
}

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
  skipped_ += first;
  if (first == message->records_size()) return absl::OkStatus();

  auto step = std::make_unique<Step>();
  step->call = this;
  step->message = std::move(message);
  step->offset = last_offset_;
  Prepare(*step, *owner_->policies_->Get(), first);

  AwaitInFlight(kMaxInFlight - 1);
  Step* submitted = step.get();
  std::vector<storage::SubjectUpdate> updates = std::move(step->updates);
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

void RegistryImport::Call::Prepare(Step& step, const CompiledPolicy& policy, int first) {
  const v1::ImportSubjectsRequest& message = *step.message;
  const absl::Time now = owner_->clock_->Now();
  step.deleted.assign(message.records_size(), 0);
  step.records = message.records_size() - first;
  Step* const s = &step;
  for (int r = first; r < message.records_size(); ++r) {
    const v1::ImportRecord& record = message.records(r);
    Violations v;
    ValidateRecord(record, policy, now, &v);
    if (!v.empty()) {
      step.invalid.push_back(RejectionOf(record, v));
      continue;
    }
    if (!record.jurisdiction().empty() || record.has_birth_date()) {
      storage::SubjectUpdate update;
      update.user_id = record.user_id();
      update.return_subject = false;
      update.apply = [s, r](storage::UpdateContext& context, v1::Subject& subject,
                            v1::ChangeEvent& event) {
        if (Refused(*s, r, context, subject)) return absl::OkStatus();
        const v1::ImportRecord& imported = s->message->records(r);
        v1::AttributesChange* change = event.mutable_attributes();
        *change->mutable_before() = subject.attributes();
        v1::SubjectAttributes* attributes = subject.mutable_attributes();
        if (!imported.jurisdiction().empty()) {
          attributes->set_jurisdiction(imported.jurisdiction());
        }
        if (imported.has_birth_date()) *attributes->mutable_birth_date() = imported.birth_date();
        *change->mutable_after() = *attributes;
        Describe(*s, r, v1::CHANGE_KIND_SUBJECT_ATTRIBUTES, event);
        return absl::OkStatus();
      };
      step.updates.push_back(std::move(update));
    }
    for (int i = 0; i < record.preferences_size(); ++i) {
      storage::SubjectUpdate update;
      update.user_id = record.user_id();
      update.return_subject = false;
      update.apply = [s, r, i](storage::UpdateContext& context, v1::Subject& subject,
                               v1::ChangeEvent& event) {
        if (Refused(*s, r, context, subject)) return absl::OkStatus();
        ApplyPreference(s->message->records(r).preferences(i), &s->call->source_, context, subject,
                        event);
        Describe(*s, r, v1::CHANGE_KIND_PREFERENCE, event);
        return absl::OkStatus();
      };
      step.updates.push_back(std::move(update));
    }
  }
}

bool RegistryImport::Call::Refused(Step& step, int r, storage::UpdateContext& context,
                                   const v1::Subject& subject) {
  if (subject.attributes().account_state() != v1::ACCOUNT_STATE_DELETED) return false;
  step.deleted[r] = 1;
  context.Skip();
  return true;
}

void RegistryImport::Call::Describe(const Step& step, int r, v1::ChangeKind kind,
                                    v1::ChangeEvent& event) {
  const Call& call = *step.call;
  event.set_kind(kind);
  event.set_caller(call.context_.caller);
  event.set_request_id(absl::StrCat(call.import_id_, ":", step.message->records(r).offset()));
  *event.mutable_source() = call.source_;
}

void RegistryImport::Call::Answered(Step* step, absl::StatusOr<storage::CommitResult> result) {
  int64_t imported = 0;
  int64_t rejected = 0;
  {
    absl::MutexLock lock(&mu_);
    if (result.ok()) {
      std::vector<v1::ImportRejection> rejections = std::move(step->invalid);
      const v1::ImportSubjectsRequest& message = *step->message;
      for (int r = 0; r < message.records_size(); ++r) {
        if (!step->deleted[r]) continue;
        v1::ImportRejection& rejection = rejections.emplace_back();
        rejection.set_offset(message.records(r).offset());
        rejection.set_user_id(message.records(r).user_id());
        rejection.set_description(
            "the subject was deleted; a deleted subject takes no more writes");
      }
      std::sort(rejections.begin(), rejections.end(),
                [](const auto& a, const auto& b) { return a.offset() < b.offset(); });
      rejected = static_cast<int64_t>(rejections.size());
      imported = step->records - rejected;
      imported_ += imported;
      rejected_ += rejected;
      acknowledged_ = step->offset;
      for (v1::ImportRejection& rejection : rejections) {
        if (rejections_.size() >= kMaxImportRejections) break;
        rejections_.push_back(std::move(rejection));
      }
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
