#include "server/registry.h"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/civil_time.h"
#include "core/decision_engine.h"
#include "core/proto_time.h"
#include "core/subject_view.h"
#include "core/validation.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/rpc/error_details.pb.h"
#include "server/errors.h"
#include "server/history.h"
#include "server/policy_change.h"
#include "storage/audit_chain.h"

namespace consent {
namespace {

// The idempotency key of a request: its id and a digest of its kind and
// payload (deterministic protobuf bytes).
storage::RequestKey KeyOf(absl::string_view kind, const google::protobuf::Message& request,
                          const std::string& request_id) {
  storage::RequestKey key;
  if (request_id.empty()) return key;
  key.request_id = request_id;
  std::string bytes(kind);
  bytes.push_back('\0');
  google::protobuf::io::StringOutputStream stream(&bytes);
  {
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    request.SerializeToCodedStream(&coded);
  }
  key.fingerprint = storage::Sha256(bytes);
  return key;
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

// The fields every single-subject write has: source, request_id and
// expected_revision. `prefix` names the request ("" or "requests[3].").
template <typename Request>
void ValidateWriteFields(const Request& r, const std::string& prefix, Violations* v) {
  ValidateSource(r.source(), prefix + "source", v);
  ValidateOptionalId(r.request_id(), prefix + "request_id", v);
  ValidateExpectedRevision(r.has_expected_revision(), r.expected_revision(),
                           prefix + "expected_revision", v);
}

// The update of a single-subject write: `change` does what is particular to
// the write; around it, what every write does: first the expected_revision
// check and refusing a deleted subject (the deletion itself answers that on
// its own), last the event's kind, caller, request id and source.
// `request` and `context` must outlive the commit.
template <typename Request, typename Change>
storage::SubjectUpdate WriteUpdate(const Request& request, const CallContext& context,
                                   v1::ChangeKind kind, Change change) {
  storage::SubjectUpdate update;
  update.user_id = request.user_id();
  update.request = KeyOf(Request::descriptor()->name(), request, request.request_id());
  update.apply = [&request, &context, kind, change = std::move(change)](
                     storage::UpdateContext& update_context, v1::Subject& subject,
                     v1::ChangeEvent& event) -> absl::Status {
    if (absl::Status s = CheckExpectedRevision(request.has_expected_revision(),
                                               request.expected_revision(), subject);
        !s.ok()) {
      return s;
    }
    if (kind != v1::CHANGE_KIND_SUBJECT_DELETED) {
      if (absl::Status s = RejectDeleted(subject); !s.ok()) return s;
    }
    if (absl::Status s = change(update_context, subject, event); !s.ok()) return s;
    event.set_kind(kind);
    event.set_caller(context.caller);
    event.set_request_id(request.request_id());
    if (request.has_source()) *event.mutable_source() = request.source();
    return absl::OkStatus();
  };
  return update;
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
  ValidateWriteFields(r, prefix, v);
}

// The update a SetPreferenceRequest makes. `request` and `context` must
// outlive the commit.
storage::SubjectUpdate PreferenceUpdate(const v1::SetPreferenceRequest& request,
                                        const CallContext& context) {
  return WriteUpdate(request, context, v1::CHANGE_KIND_PREFERENCE,
                     [&request](storage::UpdateContext& update_context, v1::Subject& subject,
                                v1::ChangeEvent& event) {
                       v1::PreferenceChange* change = event.mutable_preference();
                       change->set_purpose(request.purpose());
                       for (const v1::Preference& p : subject.preferences()) {
                         if (p.purpose() == request.purpose()) *change->mutable_before() = p;
                       }
                       if (request.state() == v1::PREFERENCE_STATE_CLEARED) {
                         PutPreference(&subject, request.purpose(), nullptr);
                       } else {
                         v1::Preference* pref = change->mutable_after();
                         pref->set_purpose(request.purpose());
                         pref->set_state(request.state());
                         if (request.has_effective_time())
                           *pref->mutable_effective_time() = request.effective_time();
                         if (request.has_expire_time())
                           *pref->mutable_expire_time() = request.expire_time();
                         if (request.has_source()) *pref->mutable_source() = request.source();
                         pref->set_revision(update_context.revision());
                         *pref->mutable_update_time() = ToProto(update_context.time());
                         PutPreference(&subject, request.purpose(), pref);
                       }
                       return absl::OkStatus();
                     });
}

const v1::Preference* FindPreference(const v1::Subject& subject, absl::string_view purpose) {
  for (const v1::Preference& p : subject.preferences()) {
    if (p.purpose() == purpose) return &p;
  }
  return nullptr;
}

}  // namespace

void Registry::SetPreference(const v1::SetPreferenceRequest& request, const CallContext& context,
                             v1::SetPreferenceResponse* response, WriteDone done) {
  const auto policy = policies_->Get();
  Violations v;
  ValidateSetPreference(request, "", *policy, &v);
  if (!v.empty()) return done(v.ToStatus());

  std::vector<storage::SubjectUpdate> updates;
  updates.push_back(PreferenceUpdate(request, context));
  if (!request.request_id().empty()) {
    // Kept with the request id, for a replay's answer.
    updates.back().reply = [](const v1::Subject&, const v1::ChangeEvent& event) {
      return event.preference().has_after() ? event.preference().after().SerializeAsString()
                                            : std::string();
    };
  }
  CommitSingle(
      std::move(updates), response,
      [&request, response](storage::CommitResult& result) -> absl::Status {
        if (result.replayed[0]) {
          // A replay: answer as the first attempt did (no preference: it
          // cleared one).
          const std::string& reply = result.replies[0];
          if (!reply.empty() && !response->mutable_preference()->ParseFromString(reply)) {
            return absl::DataLossError("the stored reply of a request id does not parse");
          }
        } else if (const v1::Preference* p =
                       FindPreference(result.subjects[0], request.purpose())) {
          *response->mutable_preference() = *p;
        }
        return absl::OkStatus();
      },
      std::move(done));
}

void Registry::BatchSetPreferences(const v1::BatchSetPreferencesRequest& request,
                                   const CallContext& context,
                                   v1::BatchSetPreferencesResponse* response, WriteDone done) {
  const auto policy = policies_->Get();
  Violations v;
  if (request.requests_size() == 0) {
    v.Add("requests", "at least one item is required");
  } else if (request.requests_size() > kMaxBatchSetItems) {
    v.Add("requests", absl::StrCat(request.requests_size(), " items; at most ", kMaxBatchSetItems,
                                   " allowed per batch"));
  } else {
    for (int i = 0; i < request.requests_size(); ++i) {
      // Checked first under its short field names; the "requests[i]."
      // names are built only for an item that has a violation.
      Violations item;
      ValidateSetPreference(request.requests(i), "", *policy, &item);
      if (item.empty()) continue;
      ValidateSetPreference(request.requests(i), absl::StrCat("requests[", i, "]."), *policy, &v);
    }
  }
  ValidateOptionalId(request.request_id(), "request_id", &v);
  if (!v.empty()) return done(v.ToStatus());

  std::vector<storage::SubjectUpdate> updates;
  updates.reserve(request.requests_size());
  for (const v1::SetPreferenceRequest& item : request.requests()) {
    updates.push_back(PreferenceUpdate(item, context));
    updates.back().return_subject = false;  // the response has revisions only
  }
  Commit(
      std::move(updates), KeyOf("BatchSetPreferences", request, request.request_id()),
      [](int i) {
        return i < 0 ? std::string("request_id") : absl::StrCat("requests[", i, "].request_id");
      },
      [response, done = std::move(done)](absl::StatusOr<storage::CommitResult> result) {
        if (!result.ok()) return done(result.status());
        for (int64_t r : result->revisions) response->add_revisions(r);
        response->set_revision(
            *std::max_element(result->revisions.begin(), result->revisions.end()));
        done(absl::OkStatus());
      });
}

void Registry::UpdateSubject(const v1::UpdateSubjectRequest& request, const CallContext& context,
                             v1::UpdateSubjectResponse* response, WriteDone done) {
  Violations v;
  ValidateId(request.user_id(), "user_id", &v);
  const v1::SubjectAttributes& attrs = request.attributes();
  // Three attributes can be set: a longer mask repeats one.
  constexpr int kMaxMaskPaths = 3;
  if (!request.has_update_mask() || request.update_mask().paths_size() == 0) {
    v.Add("update_mask", "is required: name the attributes to set");
  } else if (request.update_mask().paths_size() > kMaxMaskPaths) {
    v.Add("update_mask.paths",
          absl::StrCat(request.update_mask().paths_size(), " paths; at most ", kMaxMaskPaths,
                       " (jurisdiction, birth_date, account_state) allowed"));
  }
  for (int i = 0; i < std::min(request.update_mask().paths_size(), kMaxMaskPaths); ++i) {
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
  ValidateWriteFields(request, "", &v);
  if (!v.empty()) return done(v.ToStatus());

  std::vector<storage::SubjectUpdate> updates;
  updates.push_back(WriteUpdate(
      request, context, v1::CHANGE_KIND_SUBJECT_ATTRIBUTES,
      [&request](storage::UpdateContext&, v1::Subject& subject, v1::ChangeEvent& event) {
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
        return absl::OkStatus();
      }));
  if (!request.request_id().empty()) {
    // Kept with the request id, for a replay's answer.
    updates.back().reply = [](const v1::Subject& subject, const v1::ChangeEvent&) {
      return subject.SerializeAsString();
    };
  }
  CommitSingle(
      std::move(updates), response,
      [response](storage::CommitResult& result) -> absl::Status {
        if (result.replayed[0]) {
          // A replay: the subject as the first attempt left it.
          if (!response->mutable_subject()->ParseFromString(result.replies[0])) {
            return absl::DataLossError("the stored reply of a request id does not parse");
          }
        } else {
          *response->mutable_subject() = std::move(result.subjects[0]);
        }
        return absl::OkStatus();
      },
      std::move(done));
}

void Registry::DeleteSubject(const v1::DeleteSubjectRequest& request, const CallContext& context,
                             v1::DeleteSubjectResponse* response, WriteDone done) {
  Violations v;
  ValidateId(request.user_id(), "user_id", &v);
  ValidateWriteFields(request, "", &v);
  if (!v.empty()) return done(v.ToStatus());

  std::vector<storage::SubjectUpdate> updates;
  updates.push_back(WriteUpdate(
      request, context, v1::CHANGE_KIND_SUBJECT_DELETED,
      [](storage::UpdateContext& update_context, v1::Subject& subject, v1::ChangeEvent& event) {
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
        *subject.mutable_delete_time() = ToProto(update_context.time());
        return absl::OkStatus();
      }));
  CommitSingle(
      std::move(updates), response, [](storage::CommitResult&) { return absl::OkStatus(); },
      std::move(done));
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

void Registry::SetContentExclusion(const v1::SetContentExclusionRequest& request,
                                   const CallContext& context,
                                   v1::SetContentExclusionResponse* response, WriteDone done) {
  const auto policy = policies_->Get();
  Violations v;
  ValidateId(request.user_id(), "user_id", &v);
  ValidateId(request.content_id(), "content_id", &v);
  ValidatePurpose(request.purpose(), "purpose", *policy, &v);
  ValidateWriteFields(request, "", &v);
  if (!v.empty()) return done(v.ToStatus());

  std::vector<storage::SubjectUpdate> updates;
  updates.push_back(WriteUpdate(
      request, context, v1::CHANGE_KIND_CONTENT_EXCLUSION,
      [&request](storage::UpdateContext& update_context, v1::Subject& subject,
                 v1::ChangeEvent& event) {
        absl::StatusOr<bool> before =
            update_context.IsExcluded(request.content_id(), request.purpose());
        if (!before.ok()) return before.status();
        if (*before != request.excluded()) {
          update_context.SetExcluded(request.content_id(), request.purpose(), request.excluded());
          subject.set_exclusion_count(subject.exclusion_count() + (request.excluded() ? 1 : -1));
        }
        v1::ExclusionChange* change = event.mutable_exclusion();
        change->set_content_id(request.content_id());
        change->set_purpose(request.purpose());
        change->set_excluded_before(*before);
        change->set_excluded_after(request.excluded());
        return absl::OkStatus();
      }));
  CommitSingle(
      std::move(updates), response, [](storage::CommitResult&) { return absl::OkStatus(); },
      std::move(done));
}

absl::Status Registry::Init(std::shared_ptr<const CompiledPolicy> file_policy) {
  auto records = store_->ListPolicies();
  if (!records.ok()) return records.status();
  for (const auto& record : *records) {
    const std::string name =
        absl::StrCat("stored policy active from ", absl::FormatTime(record.activate_time));
    auto compiled = CompiledPolicy::FromText(record.text, name);
    if (!compiled.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "a policy kept for point-in-time checks no longer loads: ", compiled.status().message()));
    }
    policies_->Activate(record.activate_time, *std::move(compiled));
  }
  return ActivatePolicy(std::move(file_policy)).status();
}

absl::StatusOr<PolicyChange> Registry::ActivatePolicy(std::shared_ptr<const CompiledPolicy> next) {
  absl::MutexLock lock(&activate_mu_);
  const auto current = policies_->Get();
  PolicyChange change;
  change.version = next->version();
  change.previous_version = current ? current->version() : "";
  if (current != nullptr && current->text() == next->text()) return change;  // nothing new
  if (current != nullptr && current->version() == next->version()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the policy text changed but its version \"", next->version(),
        "\" is the active policy's; decisions record the version, so give the new policy a "
        "new version"));
  }
  if (current != nullptr) {
    // A policy that allows more than the one in force must say so itself.
    auto changes = LooseningChanges(
        *current, *next,
        [this](const std::vector<std::string>& dropped) { return store_->PurposesInUse(dropped); });
    if (!changes.ok()) return changes.status();
    if (absl::Status s = CheckLoosening(*current, *next, *changes); !s.ok()) return s;
  }
  auto at = store_->RecordPolicy(clock_->Now(), next->text());
  if (!at.ok()) return at.status();
  policies_->Activate(*at, std::move(next));
  change.changed = true;
  return change;
}

absl::StatusOr<Registry::ReadView> Registry::PrepareRead(bool has_as_of,
                                                         const google::protobuf::Timestamp& as_of,
                                                         int64_t min_revision) const {
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
  ReadView view;
  const absl::Time now = clock_->Now();
  if (!has_as_of) {
    view.policy = policies_->Get();
    view.at = now;
    return view;
  }
  if (std::string p = TimestampProblem(as_of); !p.empty()) return FieldError("as_of", p);
  view.as_of = true;
  view.at = FromProto(as_of);
  if (view.at > now) {
    return FieldError("as_of", absl::StrCat("is in the future (the server's time is ",
                                            absl::FormatTime(now), ")"));
  }
  view.policy = policies_->ActiveAt(view.at);
  if (view.policy == nullptr) {
    return absl::OutOfRangeError(absl::StrCat(
        "as_of ", absl::FormatTime(view.at), " is before the registry's first policy, active from ",
        absl::FormatTime(policies_->first_activation())));
  }
  return view;
}

absl::Status Registry::LoadAsOf(absl::string_view user_id, absl::Time at,
                                SubjectAsOf* state) const {
  constexpr size_t kPage = 1000;
  int64_t after = 0;
  while (true) {
    auto events = store_->ReadUserEvents(user_id, after, kPage);
    if (!events.ok()) return events.status();
    for (const v1::ChangeEvent& event : *events) {
      // Event times never decrease with revisions, so the state at `at` is
      // the prefix of events stamped at or before it.
      const absl::Time t = FromProto(event.event_time());
      if (t > at) return absl::OkStatus();
      ApplyEvent(event, state);
      after = event.revision();
    }
    if (events->size() < kPage) return absl::OkStatus();
  }
}

namespace {

// Rule 1, for reads: the purpose must be defined by the policy in force at
// the evaluation time.
absl::Status CheckPurposeDefined(absl::string_view purpose, const CompiledPolicy& policy) {
  if (policy.HasPurpose(purpose)) return absl::OkStatus();
  return FieldError("purpose", absl::StrCat("\"", purpose, "\" is not defined by policy version ",
                                            policy.version()));
}

// Validates one check: the request's own fields (index -1) or those of
// items[index]. Field names are built only for violations: a batch of
// 10,000 valid items builds none.
void ValidateCheckItem(const std::string& user_id, bool has_content, const v1::Content& content,
                       int index, Violations* v) {
  auto field = [index](absl::string_view name) {
    return index < 0 ? std::string(name) : absl::StrCat("items[", index, "].", name);
  };
  if (std::string p = IdProblem(user_id); !p.empty()) v->Add(field("user_id"), p);
  if (!has_content) {
    v->Add(field("content"), "is required");
  } else {
    ValidateContent(
        content, [&] { return field("content"); }, v);
  }
}

// A create_time later than the evaluation time would make a minor of today
// old enough (rule 7). Up to this much later is clock skew between the
// caller and the server: the decision then takes the evaluation time.
constexpr absl::Duration kMaxCreateTimeSkew = absl::Minutes(5);

// The content's create_time against the evaluation time `at` (now, or
// as_of). `field` names the content, built only for a violation.
void ValidateCreateTime(const v1::Content& content, absl::Time at,
                        absl::FunctionRef<std::string()> field, Violations* v) {
  if (!content.has_create_time()) return;
  const absl::Time created = FromProto(content.create_time());
  if (created > at + kMaxCreateTimeSkew) {
    v->Add(absl::StrCat(field(), ".create_time"),
           absl::StrCat("is ", absl::FormatTime(created, absl::UTCTimeZone()),
                        ", more than 5 minutes after the evaluation time ",
                        absl::FormatTime(at, absl::UTCTimeZone())));
  }
}

void Fill(const Verdict& verdict, const CompiledPolicy& policy, int64_t revision,
          v1::Decision* decision) {
  decision->set_allowed(IsAllowed(verdict.reason));
  decision->set_reason(verdict.reason);
  decision->set_policy_version(policy.version());
  decision->set_revision(revision);
}

const std::vector<std::string> kNoExclusions;

const std::vector<std::string>& ExclusionsOf(const SubjectAsOf& state,
                                             const std::string& content_id) {
  auto it = state.exclusions.find(content_id);
  return it == state.exclusions.end() ? kNoExclusions : it->second;
}

}  // namespace

absl::Status Registry::Check(const v1::CheckRequest& request, v1::CheckResponse* response) {
  Violations v;
  if (std::string p = PurposeProblem(request.purpose()); !p.empty()) v.Add("purpose", p);
  ValidateCheckItem(request.user_id(), request.has_content(), request.content(), -1, &v);
  if (!v.empty()) return v.ToStatus();
  auto view = PrepareRead(request.has_as_of(), request.as_of(), request.min_revision());
  if (!view.ok()) return view.status();
  if (absl::Status s = CheckPurposeDefined(request.purpose(), *view->policy); !s.ok()) return s;
  ValidateCreateTime(
      request.content(), view->at, [] { return std::string("content"); }, &v);
  if (!v.empty()) return v.ToStatus();

  std::vector<v1::RuleEvaluation> explanation;
  auto* explain = request.explain() ? &explanation : nullptr;
  Verdict verdict;
  int64_t revision;
  if (view->as_of) {
    SubjectAsOf state;
    if (absl::Status s = LoadAsOf(request.user_id(), view->at, &state); !s.ok()) return s;
    SubjectViewArena arena;
    const CheckSubject subject{state.exists ? arena.Add(state.subject) : nullptr,
                               ExclusionsOf(state, request.content().content_id())};
    verdict =
        Decide(*view->policy, subject, request.purpose(), request.content(), view->at, explain);
    revision = state.subject.revision();
  } else {
    revision = store_->CurrentRevision();
    // The decision view (the subject index when there is one).
    const absl::string_view id = request.user_id();
    SubjectViewArena arena;
    std::vector<const SubjectView*> records;
    if (absl::Status s = store_->GetSubjects({&id, 1}, &arena, &records); !s.ok()) return s;
    const SubjectView* record = records[0];
    std::vector<std::string> excluded;
    if (record) {
      revision = std::max(revision, record->revision);
      // Only users who excluded something pay for the extra read.
      if (record->exclusion_count > 0) {
        auto purposes = store_->GetExclusions(request.user_id(), request.content().content_id());
        if (!purposes.ok()) return purposes.status();
        excluded = *std::move(purposes);
      }
    }
    const CheckSubject subject{record, excluded};
    verdict =
        Decide(*view->policy, subject, request.purpose(), request.content(), view->at, explain);
  }
  Fill(verdict, *view->policy, revision, response->mutable_decision());
  for (auto& e : explanation) *response->add_explanation() = std::move(e);
  return absl::OkStatus();
}

namespace {

// CheckItems' decisions as messages.
class DecisionMessages {
 public:
  explicit DecisionMessages(google::protobuf::RepeatedPtrField<v1::Decision>* decisions)
      : decisions_(decisions) {}
  void Reserve(int n, const CompiledPolicy& policy) {
    policy_ = &policy;
    decisions_->Reserve(n);
  }
  void Add(const Verdict& verdict, int64_t revision) {
    Fill(verdict, *policy_, revision, decisions_->Add());
  }

 private:
  google::protobuf::RepeatedPtrField<v1::Decision>* decisions_;
  const CompiledPolicy* policy_ = nullptr;
};

// Writes `value` as protobuf's varint at `out`; returns the end.
char* PutVarint(uint64_t value, char* out) {
  while (value >= 0x80) {
    *out++ = static_cast<char>(value | 0x80);
    value >>= 7;
  }
  *out++ = static_cast<char>(value);
  return out;
}

}  // namespace

void EncodedDecisions::Reserve(int n, absl::string_view version) {
  // Decision.policy_version = 3, length-delimited (left out when empty, as
  // proto3 leaves out default values).
  version_field_.clear();
  if (!version.empty()) {
    char head[11];
    head[0] = 0x1a;
    version_field_.append(head, PutVarint(version.size(), head + 1));
    version_field_.append(version.data(), version.size());
  }
  // A decision: tag and length, allowed, reason, version, revision.
  bytes_.reserve(bytes_.size() + static_cast<size_t>(n) * (2 + 2 + 6 + version_field_.size() + 11));
}

void EncodedDecisions::Add(const Verdict& verdict, int64_t revision) {
  // BatchCheckResponse.decisions = 1, each a Decision: allowed = 1,
  // reason = 2, policy_version = 3, revision = 4; fields holding their
  // default value left out, in field order, as protobuf writes them.
  char head[2 + 11 + 2 + 11];  // the decision's tag and length, allowed, reason
  char revision_field[11];
  char* flags = head + 11;
  char* flags_end = flags;
  if (IsAllowed(verdict.reason)) {
    *flags_end++ = 0x08;
    *flags_end++ = 1;
  }
  if (verdict.reason != 0) {
    *flags_end++ = 0x10;
    flags_end = PutVarint(static_cast<uint64_t>(static_cast<int64_t>(verdict.reason)), flags_end);
  }
  char* revision_end = revision_field;
  if (revision != 0) {
    *revision_end++ = 0x20;
    revision_end = PutVarint(static_cast<uint64_t>(revision), revision_end);
  }
  const size_t size = static_cast<size_t>(flags_end - flags) + version_field_.size() +
                      static_cast<size_t>(revision_end - revision_field);
  char tag[11];
  tag[0] = 0x0a;
  bytes_.append(tag, PutVarint(size, tag + 1));
  bytes_.append(flags, flags_end);
  bytes_.append(version_field_);
  bytes_.append(revision_field, revision_end);
  if (verdict.reason >= 0 && verdict.reason < static_cast<int>(tally_.size())) {
    ++tally_[verdict.reason];
  }
}

absl::Status CallControl::GaveUp(absl::string_view what) const {
  if (deadline != absl::InfiniteFuture() && absl::Now() >= deadline) {
    return absl::DeadlineExceededError(
        absl::StrCat("the call's deadline passed; ", what, " stopped"));
  }
  if (cancelled && cancelled()) {
    return absl::CancelledError(absl::StrCat("the call was cancelled; ", what, " stopped"));
  }
  return absl::OkStatus();
}

template <typename Request, typename Decisions>
absl::Status Registry::CheckItems(const Request& request, Decisions* decisions,
                                  const CallControl& control) {
  Violations v;
  if (std::string p = PurposeProblem(request.purpose()); !p.empty()) v.Add("purpose", p);
  const int n = request.items_size();
  if (n == 0) {
    v.Add("items", "at least one item is required");
  } else if (n > kMaxBatchCheckItems) {
    v.Add("items", absl::StrCat(n, " items; at most ", kMaxBatchCheckItems, " allowed per batch"));
  } else {
    for (int i = 0; i < n; ++i) {
      const v1::CheckItem& item = request.items(i);
      ValidateCheckItem(item.user_id(), item.has_content(), item.content(), i, &v);
    }
  }
  if (!v.empty()) return v.ToStatus();
  auto view = PrepareRead(request.has_as_of(), request.as_of(), request.min_revision());
  if (!view.ok()) return view.status();
  if (absl::Status s = CheckPurposeDefined(request.purpose(), *view->policy); !s.ok()) return s;
  for (int i = 0; i < n; ++i) {
    ValidateCreateTime(
        request.items(i).content(), view->at,
        [i] { return absl::StrCat("items[", i, "].content"); }, &v);
  }
  if (!v.empty()) return v.ToStatus();
  decisions->Reserve(n, *view->policy);
  RuleFinder rules(*view->policy, request.purpose());

  if (view->as_of) {
    // Each user's history is folded once, however many of their items.
    struct Folded {
      SubjectAsOf state;
      const SubjectView* record = nullptr;  // null: no record then
    };
    absl::flat_hash_map<std::string, Folded> folded;
    SubjectViewArena arena;
    for (const v1::CheckItem& item : request.items()) {
      auto [it, inserted] = folded.try_emplace(item.user_id());
      Folded& user = it->second;
      if (inserted) {
        // Folding a user's history is the costly part: stop between users
        // once the caller has given up.
        if (absl::Status s = control.GaveUp("the as_of batch"); !s.ok()) return s;
        if (absl::Status s = LoadAsOf(item.user_id(), view->at, &user.state); !s.ok()) return s;
        if (user.state.exists) user.record = arena.Add(user.state.subject);
      }
      const CheckSubject subject{user.record,
                                 ExclusionsOf(user.state, item.content().content_id())};
      decisions->Add(Decide(*view->policy, subject, request.purpose(), item.content(), view->at,
                            /*explanation=*/nullptr, &rules),
                     user.state.subject.revision());
    }
    return absl::OkStatus();
  }

  const int64_t revision = store_->CurrentRevision();
  std::vector<absl::string_view> ids;
  ids.reserve(n);
  for (const v1::CheckItem& item : request.items()) ids.push_back(item.user_id());
  SubjectViewArena arena;
  std::vector<const SubjectView*> records;
  if (absl::Status s = store_->GetSubjects(ids, &arena, &records); !s.ok()) return s;
  std::vector<std::string> excluded;
  for (int i = 0; i < n; ++i) {
    if (i % 256 == 255) {
      if (absl::Status s = control.GaveUp("the batch"); !s.ok()) return s;
    }
    const v1::CheckItem& item = request.items(i);
    const SubjectView* record = records[i];
    excluded.clear();
    if (record != nullptr && record->exclusion_count > 0) {
      auto purposes = store_->GetExclusions(item.user_id(), item.content().content_id());
      if (!purposes.ok()) return purposes.status();
      excluded = *std::move(purposes);
    }
    decisions->Add(Decide(*view->policy, CheckSubject{record, excluded}, request.purpose(),
                          item.content(), view->at, /*explanation=*/nullptr, &rules),
                   record ? std::max(revision, record->revision) : revision);
  }
  return absl::OkStatus();
}

google::protobuf::ArenaOptions BatchArenaOptions() {
  google::protobuf::ArenaOptions options;
  options.start_block_size = 64 << 10;
  options.max_block_size = 1 << 20;
  return options;
}

absl::Status Registry::BatchCheck(const v1::BatchCheckRequest& request, EncodedDecisions* response,
                                  const CallControl& control) {
  return CheckItems(request, response, control);
}

absl::Status Registry::StreamCheck(const v1::StreamCheckRequest& request,
                                   v1::StreamCheckResponse* response, const CallControl& control) {
  DecisionMessages decisions(response->mutable_decisions());
  return CheckItems(request, &decisions, control);
}

absl::Status Registry::CreateBackup(const v1::CreateBackupRequest& request,
                                    v1::CreateBackupResponse* response) {
  // A name, not a path: a caller with the admin role can write backups
  // under --backup_dir only, never elsewhere on the server's disk.
  const std::string& name = request.directory();
  if (name.empty()) return FieldError("directory", "is required");
  const bool well_formed = name.size() <= 128 && name != "." && name != ".." &&
                           std::all_of(name.begin(), name.end(), [](char c) {
                             return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
                           });
  if (!well_formed) {
    return FieldError("directory",
                      "must be the name of a new directory under the server's --backup_dir: "
                      "1-128 of [A-Za-z0-9._-], not . or .. (a name, not a path)");
  }
  if (backup_dir_.empty()) {
    return absl::FailedPreconditionError(
        "backups are disabled: consentd was started without --backup_dir");
  }
  const std::string directory = absl::StrCat(backup_dir_, "/", name);
  auto revision = store_->Checkpoint(directory);
  if (!revision.ok()) return revision.status();
  response->set_directory(directory);
  response->set_revision(*revision);
  return absl::OkStatus();
}

void Registry::Commit(std::vector<storage::SubjectUpdate> updates, storage::RequestKey request,
                      std::function<std::string(int index)> field_of,
                      std::function<void(absl::StatusOr<storage::CommitResult>)> then) {
  store_->CommitAsync(
      std::move(updates), clock_->Now(), std::move(request),
      [this, field_of = std::move(field_of),
       then = std::move(then)](absl::StatusOr<storage::CommitResult> result) {
        if (result.ok() && result->outcome == storage::CommitResult::Outcome::kRequestIdConflict) {
          // The id names another request: retrying cannot help, the caller
          // must send a new id (docs/history.md, "Idempotency").
          return then(FieldError(
              field_of(result->conflict_index),
              absl::StrCat("was already used for a different request (revision ",
                           result->conflict_revision, "); a new request needs a new request_id")));
        }
        if (result.ok()) notifier_.Notify(store_->CurrentRevision());
        then(std::move(result));
      });
}

absl::Status Registry::AwaitWrite(const std::function<void(WriteDone)>& start) {
  absl::Status status;
  absl::Notification finished;
  start([&](absl::Status s) {
    status = std::move(s);
    finished.Notify();
  });
  finished.WaitForNotification();
  return status;
}

namespace {

constexpr int kDefaultHistoryPageSize = 100;
constexpr int kMaxHistoryPageSize = 1000;
constexpr char kPageTokenVersion[] = "h1";

// Opaque page token: the user it belongs to and the last revision returned.
std::string EncodePageToken(absl::string_view user_id, int64_t revision) {
  return absl::WebSafeBase64Escape(absl::StrCat(kPageTokenVersion, ":", revision, ":", user_id));
}

bool DecodePageToken(absl::string_view token, std::string* user_id, int64_t* revision) {
  std::string raw;
  if (!absl::WebSafeBase64Unescape(token, &raw)) return false;
  std::vector<absl::string_view> parts = absl::StrSplit(raw, absl::MaxSplits(':', 2));
  return parts.size() == 3 && parts[0] == kPageTokenVersion &&
         absl::SimpleAtoi(parts[1], revision) && *revision >= 0 &&
         (*user_id = std::string(parts[2]), true);
}

// Whether a change event can affect decisions for `purpose` ("" matches
// all): preference and exclusion events of the purpose, its ancestors or
// its descendants; attribute changes and deletions always.
bool AffectsPurpose(const v1::ChangeEvent& event, absl::string_view purpose) {
  if (purpose.empty()) return true;
  absl::string_view changed;
  if (event.has_preference()) {
    changed = event.preference().purpose();
  } else if (event.has_exclusion()) {
    changed = event.exclusion().purpose();
  } else {
    return true;
  }
  return CoversPurpose(changed, purpose) || CoversPurpose(purpose, changed);
}

}  // namespace

absl::Status Registry::ListHistory(const v1::ListHistoryRequest& request,
                                   v1::ListHistoryResponse* response) {
  Violations v;
  ValidateId(request.user_id(), "user_id", &v);
  if (request.page_size() < 0) v.Add("page_size", "must not be negative");
  int64_t after = 0;
  if (!request.page_token().empty()) {
    std::string token_user;
    if (!DecodePageToken(request.page_token(), &token_user, &after)) {
      v.Add("page_token", "is not a token from ListHistory");
    } else if (token_user != request.user_id()) {
      v.Add("page_token", "belongs to another user_id");
    }
  }
  if (!v.empty()) return v.ToStatus();
  const int page_size = request.page_size() == 0
                            ? kDefaultHistoryPageSize
                            : std::min(request.page_size(), kMaxHistoryPageSize);
  auto events = store_->ReadUserEvents(request.user_id(), after, page_size + 1);
  if (!events.ok()) return events.status();
  const bool more = static_cast<int>(events->size()) > page_size;
  if (more) events->pop_back();
  for (v1::ChangeEvent& e : *events) *response->add_events() = std::move(e);
  if (more) {
    response->set_next_page_token(
        EncodePageToken(request.user_id(), response->events(page_size - 1).revision()));
  }
  return absl::OkStatus();
}

absl::Status Registry::VerifyAuditLog(const v1::VerifyAuditLogRequest& request,
                                      v1::VerifyAuditLogResponse* response) {
  Violations v;
  if (request.start_revision() < 0) v.Add("start_revision", "must not be negative");
  if (request.end_revision() < 0) v.Add("end_revision", "must not be negative");
  if (request.end_revision() > 0 && request.start_revision() > request.end_revision()) {
    v.Add("end_revision", "must not be before start_revision");
  }
  if (!v.empty()) return v.ToStatus();
  auto report = store_->VerifyChain(request.start_revision(), request.end_revision());
  if (!report.ok()) return report.status();
  response->set_ok(report->ok);
  response->set_verified_count(report->verified);
  response->set_first_broken_revision(report->first_broken_revision);
  response->set_detail(report->ok ? absl::StrCat(report->verified, " events verified")
                                  : report->detail);
  return absl::OkStatus();
}

absl::Status Registry::WatchChanges(
    const v1::WatchChangesRequest& request,
    const std::function<bool(const v1::WatchChangesResponse&)>& send,
    const std::function<bool()>& stopped) {
  Violations v;
  if (request.start_revision() < 0) v.Add("start_revision", "must not be negative");
  if (!request.purpose().empty()) {
    ValidatePurpose(request.purpose(), "purpose", *policies_->Get(), &v);
  }
  if (!v.empty()) return v.ToStatus();
  auto oldest = store_->OldestRevision();
  if (!oldest.ok()) return oldest.status();
  int64_t next = std::max<int64_t>(request.start_revision(), 1);
  const int64_t current = store_->CurrentRevision();
  if (*oldest > 0 && next < *oldest) {
    return absl::OutOfRangeError(absl::StrCat("start_revision ", next,
                                              " is older than the oldest revision kept, ", *oldest,
                                              "; start from there"));
  }
  if (next > current + 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "start_revision ", next, " is beyond the registry's next revision ", current + 1));
  }
  constexpr size_t kReadBatch = 256;
  absl::Time last_sent = absl::Now();
  v1::WatchChangesResponse message;
  while (!stopped()) {
    auto events = store_->ReadEvents(next, kReadBatch);
    if (!events.ok()) return events.status();
    for (v1::ChangeEvent& event : *events) {
      next = event.revision() + 1;
      if (!AffectsPurpose(event, request.purpose())) continue;
      *message.mutable_event() = std::move(event);
      if (!send(message)) return absl::CancelledError("the watcher went away");
      last_sent = absl::Now();
    }
    // Idle (or only filtered events): a checkpoint says how far we are.
    if (absl::Now() - last_sent >= checkpoint_interval_) {
      v1::Checkpoint* checkpoint = message.mutable_checkpoint();
      checkpoint->set_revision(next - 1);
      *checkpoint->mutable_time() = ToProto(clock_->Now());
      if (!send(message)) return absl::CancelledError("the watcher went away");
      last_sent = absl::Now();
    }
    if (events->size() == kReadBatch) continue;  // more to catch up on
    if (!notifier_.WaitBeyond(next - 1, last_sent + checkpoint_interval_)) break;
  }
  return absl::UnavailableError(
      absl::StrCat("consentd is shutting down; resume with start_revision ", next));
}

}  // namespace consent
