#include "server/registry.h"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "google/protobuf/util/time_util.h"
#include "google/rpc/error_details.pb.h"
#include "server/decision_engine.h"
#include "server/errors.h"
#include "server/validation.h"

namespace consent {
namespace {

using google::protobuf::util::TimeUtil;

google::protobuf::Timestamp ToProto(absl::Time t) {
  return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(t));
}

void ValidateId(absl::string_view id, const std::string& field, Violations* v) {
  if (std::string problem = IdProblem(id); !problem.empty()) v->Add(field, problem);
}

void ValidateOptionalId(absl::string_view id, const std::string& field, Violations* v) {
  if (!id.empty()) ValidateId(id, field, v);
}

// Rule 1 of docs/decisions.md: a purpose must be well formed and defined.
void ValidatePurpose(absl::string_view purpose, const std::string& field,
                     const CompiledPolicy& policy, Violations* v) {
  if (std::string problem = PurposeProblem(purpose); !problem.empty()) {
    v->Add(field, problem);
  } else if (!policy.HasPurpose(purpose)) {
    v->Add(field,
           absl::StrCat("\"", purpose, "\" is not defined by policy version ", policy.version()));
  }
}

void ValidateExpectedRevision(bool has, int64_t expected, const std::string& field, Violations* v) {
  if (has && expected < 0) v->Add(field, "must not be negative");
}

absl::Status CheckExpectedRevision(bool has, int64_t expected, const v1::Subject& subject) {
  if (!has || expected == subject.revision()) return absl::OkStatus();
  absl::Status status = absl::AbortedError(
      absl::StrCat("expected_revision ", expected,
                   " does not match the subject's current revision ", subject.revision()));
  google::rpc::ErrorInfo info;
  info.set_reason("REVISION_MISMATCH");
  info.set_domain("consent.v1");
  (*info.mutable_metadata())["current_revision"] = absl::StrCat(subject.revision());
  AttachDetail(status, info);
  return status;
}

absl::Status RejectDeleted(const v1::Subject& subject) {
  if (subject.attributes().account_state() != v1::ACCOUNT_STATE_DELETED) {
    return absl::OkStatus();
  }
  absl::Status status = absl::FailedPreconditionError(
      absl::StrCat("subject was deleted at revision ", subject.revision(),
                   "; a deleted subject takes no more writes"));
  google::rpc::PreconditionFailure failure;
  auto* violation = failure.add_violations();
  violation->set_type("SUBJECT_DELETED");
  violation->set_subject("user_id");
  violation->set_description("the account was deleted");
  AttachDetail(status, failure);
  return status;
}

void ValidateSetPreference(const v1::SetPreferenceRequest& r, const std::string& prefix,
                           const CompiledPolicy& policy, Violations* v) {
  ValidateId(r.user_id(), prefix + "user_id", v);
  ValidatePurpose(r.purpose(), prefix + "purpose", policy, v);
  if (r.state() == v1::PREFERENCE_STATE_UNSPECIFIED) {
    v->Add(prefix + "state", "is required: OBJECTED, CONSENTED or CLEARED");
  } else if (!v1::PreferenceState_IsValid(r.state())) {
    v->Add(prefix + "state", "is not a known preference state");
  }
  if (r.has_effective_time()) {
    if (std::string p = TimestampProblem(r.effective_time()); !p.empty()) {
      v->Add(prefix + "effective_time", p);
    }
  }
  if (r.has_expire_time()) {
    if (std::string p = TimestampProblem(r.expire_time()); !p.empty()) {
      v->Add(prefix + "expire_time", p);
    } else if (r.has_effective_time() && r.expire_time() <= r.effective_time()) {
      v->Add(prefix + "expire_time", "must be after effective_time");
    }
  }
  if (r.state() == v1::PREFERENCE_STATE_CLEARED &&
      (r.has_effective_time() || r.has_expire_time())) {
    v->Add(prefix + "state", "CLEARED takes no effective_time or expire_time");
  }
  ValidateSource(r.source(), prefix + "source", v);
  ValidateOptionalId(r.request_id(), prefix + "request_id", v);
  ValidateExpectedRevision(r.has_expected_revision(), r.expected_revision(),
                           prefix + "expected_revision", v);
}

// The update a SetPreferenceRequest makes. `request` and `context` must
// outlive the commit.
storage::SubjectUpdate PreferenceUpdate(const v1::SetPreferenceRequest& request,
                                        const CallContext& context, absl::Time now) {
  storage::SubjectUpdate update;
  update.user_id = request.user_id();
  update.apply = [&request, &context, now](bool /*exists*/, int64_t revision, v1::Subject& subject,
                                           v1::ChangeEvent& event) -> absl::Status {
    if (absl::Status s = CheckExpectedRevision(request.has_expected_revision(),
                                               request.expected_revision(), subject);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = RejectDeleted(subject); !s.ok()) return s;

    auto* prefs = subject.mutable_preferences();
    auto it = std::lower_bound(
        prefs->begin(), prefs->end(), request.purpose(),
        [](const v1::Preference& p, const std::string& purpose) { return p.purpose() < purpose; });
    const bool had = it != prefs->end() && it->purpose() == request.purpose();
    v1::PreferenceChange* change = event.mutable_preference();
    change->set_purpose(request.purpose());
    if (had) *change->mutable_before() = *it;

    if (request.state() == v1::PREFERENCE_STATE_CLEARED) {
      if (had) prefs->erase(it);
    } else {
      v1::Preference pref;
      pref.set_purpose(request.purpose());
      pref.set_state(request.state());
      if (request.has_effective_time()) {
        *pref.mutable_effective_time() = request.effective_time();
      }
      if (request.has_expire_time()) *pref.mutable_expire_time() = request.expire_time();
      if (request.has_source()) *pref.mutable_source() = request.source();
      pref.set_revision(revision);
      *pref.mutable_update_time() = ToProto(now);
      *change->mutable_after() = pref;
      if (had) {
        *it = std::move(pref);
      } else {
        const auto index = it - prefs->begin();
        prefs->Add(std::move(pref));
        // Move the new element from the end into its sorted place.
        for (auto i = prefs->size() - 1; i > index; --i) prefs->SwapElements(i, i - 1);
      }
    }
    event.set_kind(v1::CHANGE_KIND_PREFERENCE);
    event.set_caller(context.caller);
    event.set_request_id(request.request_id());
    if (request.has_source()) *event.mutable_source() = request.source();
    return absl::OkStatus();
  };
  return update;
}

// Evaluates the rules and fills `decision`. `revision` is the registry's
// revision read before the subject; the subject's own may be newer.
void FillDecision(const CompiledPolicy& policy, const v1::Subject* record,
                  absl::string_view purpose, const v1::Content& content, absl::Time at,
                  int64_t revision, v1::Decision* decision) {
  const Verdict verdict = Decide(policy, record, purpose, content, at);
  decision->set_allowed(IsAllowed(verdict.reason));
  decision->set_reason(verdict.reason);
  decision->set_policy_version(policy.version());
  decision->set_revision(record ? std::max(revision, record->revision()) : revision);
}

const v1::Preference* FindPreference(const v1::Subject& subject, absl::string_view purpose) {
  for (const v1::Preference& p : subject.preferences()) {
    if (p.purpose() == purpose) return &p;
  }
  return nullptr;
}

}  // namespace

absl::Status Registry::SetPreference(const v1::SetPreferenceRequest& request,
                                     const CallContext& context,
                                     v1::SetPreferenceResponse* response) {
  const auto policy = policies_->Get();
  Violations v;
  ValidateSetPreference(request, "", *policy, &v);
  if (!v.empty()) return v.ToStatus();

  const absl::Time now = clock_->Now();
  std::vector<storage::SubjectUpdate> updates;
  updates.push_back(PreferenceUpdate(request, context, now));
  auto result = store_->Commit(std::move(updates), now);
  if (!result.ok()) return result.status();
  response->set_revision(result->revisions[0]);
  if (const v1::Preference* p = FindPreference(result->subjects[0], request.purpose())) {
    *response->mutable_preference() = *p;
  }
  return absl::OkStatus();
}

absl::Status Registry::BatchSetPreferences(const v1::BatchSetPreferencesRequest& request,
                                           const CallContext& context,
                                           v1::BatchSetPreferencesResponse* response) {
  const auto policy = policies_->Get();
  Violations v;
  if (request.requests_size() == 0) {
    v.Add("requests", "at least one item is required");
  } else if (request.requests_size() > kMaxBatchSetItems) {
    v.Add("requests", absl::StrCat(request.requests_size(), " items; at most ", kMaxBatchSetItems,
                                   " allowed per batch"));
  } else {
    for (int i = 0; i < request.requests_size(); ++i) {
      ValidateSetPreference(request.requests(i), absl::StrCat("requests[", i, "]."), *policy, &v);
    }
  }
  ValidateOptionalId(request.request_id(), "request_id", &v);
  if (!v.empty()) return v.ToStatus();

  const absl::Time now = clock_->Now();
  std::vector<storage::SubjectUpdate> updates;
  updates.reserve(request.requests_size());
  for (const v1::SetPreferenceRequest& item : request.requests()) {
    updates.push_back(PreferenceUpdate(item, context, now));
  }
  auto result = store_->Commit(std::move(updates), now);
  if (!result.ok()) return result.status();
  for (int64_t r : result->revisions) response->add_revisions(r);
  response->set_revision(result->revisions.back());
  return absl::OkStatus();
}

absl::Status Registry::UpdateSubject(const v1::UpdateSubjectRequest& request,
                                     const CallContext& context,
                                     v1::UpdateSubjectResponse* response) {
  Violations v;
  ValidateId(request.user_id(), "user_id", &v);
  const v1::SubjectAttributes& attrs = request.attributes();
  if (!request.has_update_mask() || request.update_mask().paths_size() == 0) {
    v.Add("update_mask", "is required: name the attributes to set");
  }
  for (int i = 0; i < request.update_mask().paths_size(); ++i) {
    const std::string& path = request.update_mask().paths(i);
    const std::string field = absl::StrCat("update_mask.paths[", i, "]");
    if (path == "jurisdiction") {
      if (!attrs.jurisdiction().empty()) {
        if (std::string p = JurisdictionProblem(attrs.jurisdiction()); !p.empty()) {
          v.Add("attributes.jurisdiction", p);
        }
      }
    } else if (path == "birth_date") {
      if (attrs.has_birth_date()) {
        if (std::string p = DateProblem(attrs.birth_date()); !p.empty()) {
          v.Add("attributes.birth_date", p);
        } else if (absl::CivilDay(attrs.birth_date().year(), attrs.birth_date().month(),
                                  attrs.birth_date().day()) >
                   absl::ToCivilDay(clock_->Now(), absl::UTCTimeZone())) {
          v.Add("attributes.birth_date", "is in the future");
        }
      }
    } else if (path == "account_state") {
      if (attrs.account_state() == v1::ACCOUNT_STATE_DELETED) {
        v.Add("attributes.account_state", "DELETED is set by DeleteSubject only");
      } else if (!v1::AccountState_IsValid(attrs.account_state())) {
        v.Add("attributes.account_state", "is not a known account state");
      }
    } else {
      v.Add(field,
            absl::StrCat("\"", path, "\" is not one of jurisdiction, birth_date, account_state"));
    }
  }
  ValidateSource(request.source(), "source", &v);
  ValidateOptionalId(request.request_id(), "request_id", &v);
  ValidateExpectedRevision(request.has_expected_revision(), request.expected_revision(),
                           "expected_revision", &v);
  if (!v.empty()) return v.ToStatus();

  std::vector<storage::SubjectUpdate> updates(1);
  updates[0].user_id = request.user_id();
  updates[0].apply = [&request, &context](bool, int64_t, v1::Subject& subject,
                                          v1::ChangeEvent& event) -> absl::Status {
    if (absl::Status s = CheckExpectedRevision(request.has_expected_revision(),
                                               request.expected_revision(), subject);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = RejectDeleted(subject); !s.ok()) return s;
    v1::AttributesChange* change = event.mutable_attributes();
    *change->mutable_before() = subject.attributes();
    v1::SubjectAttributes* target = subject.mutable_attributes();
    const v1::SubjectAttributes& source = request.attributes();
    for (const std::string& path : request.update_mask().paths()) {
      if (path == "jurisdiction") {
        target->set_jurisdiction(source.jurisdiction());
      } else if (path == "birth_date") {
        if (source.has_birth_date()) {
          *target->mutable_birth_date() = source.birth_date();
        } else {
          target->clear_birth_date();
        }
      } else if (path == "account_state") {
        target->set_account_state(source.account_state());
      }
    }
    *change->mutable_after() = *target;
    event.set_kind(v1::CHANGE_KIND_SUBJECT_ATTRIBUTES);
    event.set_caller(context.caller);
    event.set_request_id(request.request_id());
    if (request.has_source()) *event.mutable_source() = request.source();
    return absl::OkStatus();
  };
  auto result = store_->Commit(std::move(updates), clock_->Now());
  if (!result.ok()) return result.status();
  response->set_revision(result->revisions[0]);
  *response->mutable_subject() = std::move(result->subjects[0]);
  return absl::OkStatus();
}

absl::Status Registry::DeleteSubject(const v1::DeleteSubjectRequest& request,
                                     const CallContext& context,
                                     v1::DeleteSubjectResponse* response) {
  Violations v;
  ValidateId(request.user_id(), "user_id", &v);
  ValidateSource(request.source(), "source", &v);
  ValidateOptionalId(request.request_id(), "request_id", &v);
  ValidateExpectedRevision(request.has_expected_revision(), request.expected_revision(),
                           "expected_revision", &v);
  if (!v.empty()) return v.ToStatus();

  const absl::Time now = clock_->Now();
  std::vector<storage::SubjectUpdate> updates(1);
  updates[0].user_id = request.user_id();
  updates[0].apply = [&request, &context, now](bool, int64_t, v1::Subject& subject,
                                               v1::ChangeEvent& event) -> absl::Status {
    if (absl::Status s = CheckExpectedRevision(request.has_expected_revision(),
                                               request.expected_revision(), subject);
        !s.ok()) {
      return s;
    }
    if (subject.attributes().account_state() == v1::ACCOUNT_STATE_DELETED) {
      return absl::AlreadyExistsError(
          absl::StrCat("subject was already deleted at revision ", subject.revision()));
    }
    *event.mutable_deletion()->mutable_before() = subject.attributes();
    // The tombstone keeps no personal data: only that, and when, the
    // account was deleted. History keeps what is needed to prove it.
    subject.clear_attributes();
    subject.clear_preferences();
    subject.mutable_attributes()->set_account_state(v1::ACCOUNT_STATE_DELETED);
    *subject.mutable_delete_time() = ToProto(now);
    event.set_kind(v1::CHANGE_KIND_SUBJECT_DELETED);
    event.set_caller(context.caller);
    event.set_request_id(request.request_id());
    if (request.has_source()) *event.mutable_source() = request.source();
    return absl::OkStatus();
  };
  auto result = store_->Commit(std::move(updates), now);
  if (!result.ok()) return result.status();
  response->set_revision(result->revisions[0]);
  return absl::OkStatus();
}

absl::Status Registry::GetSubject(const v1::GetSubjectRequest& request,
                                  v1::GetSubjectResponse* response) {
  if (std::string p = IdProblem(request.user_id()); !p.empty()) {
    return FieldError("user_id", p);
  }
  const int64_t revision = store_->CurrentRevision();
  auto subject = store_->GetSubject(request.user_id());
  if (!subject.ok()) {
    if (absl::IsNotFound(subject.status())) {
      return absl::NotFoundError("nothing was ever recorded for this user_id");
    }
    return subject.status();
  }
  response->set_revision(std::max(revision, subject->revision()));
  *response->mutable_subject() = *std::move(subject);
  return absl::OkStatus();
}

absl::Status Registry::CheckReadOptions(bool has_as_of, int64_t min_revision) const {
  if (has_as_of) {
    return absl::UnimplementedError(
        "as_of (point-in-time checks) is not implemented by this server yet");
  }
  if (min_revision < 0) return FieldError("min_revision", "must not be negative");
  const int64_t current = store_->CurrentRevision();
  if (min_revision > current) {
    absl::Status status = absl::FailedPreconditionError(absl::StrCat(
        "min_revision ", min_revision, " is ahead of the registry's revision ", current));
    google::rpc::PreconditionFailure failure;
    auto* violation = failure.add_violations();
    violation->set_type("REVISION_NOT_REACHED");
    violation->set_subject("min_revision");
    violation->set_description(absl::StrCat("current revision is ", current));
    AttachDetail(status, failure);
    return status;
  }
  return absl::OkStatus();
}

absl::Status Registry::Check(const v1::CheckRequest& request, v1::CheckResponse* response) {
  const auto policy = policies_->Get();
  Violations v;
  ValidatePurpose(request.purpose(), "purpose", *policy, &v);
  ValidateId(request.user_id(), "user_id", &v);
  if (!request.has_content()) {
    v.Add("content", "is required");
  } else {
    ValidateContent(request.content(), "content", &v);
  }
  if (!v.empty()) return v.ToStatus();
  if (absl::Status s = CheckReadOptions(request.has_as_of(), request.min_revision()); !s.ok()) {
    return s;
  }

  const int64_t revision = store_->CurrentRevision();
  auto subject = store_->GetSubject(request.user_id());
  if (!subject.ok() && !absl::IsNotFound(subject.status())) return subject.status();
  const v1::Subject* record = subject.ok() ? &*subject : nullptr;
  FillDecision(*policy, record, request.purpose(), request.content(), clock_->Now(), revision,
               response->mutable_decision());
  return absl::OkStatus();
}

absl::Status Registry::BatchCheck(const v1::BatchCheckRequest& request,
                                  v1::BatchCheckResponse* response) {
  const auto policy = policies_->Get();
  Violations v;
  ValidatePurpose(request.purpose(), "purpose", *policy, &v);
  const int n = request.items_size();
  if (n == 0) {
    v.Add("items", "at least one item is required");
  } else if (n > kMaxBatchCheckItems) {
    v.Add("items", absl::StrCat(n, " items; at most ", kMaxBatchCheckItems, " allowed per batch"));
  } else {
    for (int i = 0; i < n; ++i) {
      const v1::CheckItem& item = request.items(i);
      const std::string prefix = absl::StrCat("items[", i, "]");
      ValidateId(item.user_id(), prefix + ".user_id", &v);
      if (!item.has_content()) {
        v.Add(prefix + ".content", "is required");
      } else {
        ValidateContent(item.content(), prefix + ".content", &v);
      }
    }
  }
  if (!v.empty()) return v.ToStatus();
  if (absl::Status s = CheckReadOptions(request.has_as_of(), request.min_revision()); !s.ok()) {
    return s;
  }

  const int64_t revision = store_->CurrentRevision();
  std::vector<absl::string_view> ids;
  ids.reserve(n);
  for (const v1::CheckItem& item : request.items()) ids.push_back(item.user_id());
  std::vector<std::optional<v1::Subject>> subjects;
  if (absl::Status s = store_->GetSubjects(ids, &subjects); !s.ok()) return s;

  const absl::Time now = clock_->Now();
  response->mutable_decisions()->Reserve(n);
  for (int i = 0; i < n; ++i) {
    const v1::Subject* record = subjects[i] ? &*subjects[i] : nullptr;
    FillDecision(*policy, record, request.purpose(), request.items(i).content(), now, revision,
                 response->add_decisions());
  }
  return absl::OkStatus();
}

}  // namespace consent
