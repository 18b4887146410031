#include "server/registry_writes.h"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "absl/time/civil_time.h"
#include "core/history.h"
#include "core/proto_time.h"
#include "core/status_details.h"
#include "core/validation.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/rpc/error_details.pb.h"
#include "server/preference_write.h"
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
  ValidatePreferenceFields(r, prefix, policy, v);
  ValidateWriteFields(r, prefix, v);
}

// The update a SetPreferenceRequest makes. `request` and `context` must
// outlive the commit.
storage::SubjectUpdate PreferenceUpdate(const v1::SetPreferenceRequest& request,
                                        const CallContext& context) {
  return WriteUpdate(request, context, v1::CHANGE_KIND_PREFERENCE,
                     [&request](storage::UpdateContext& update_context, v1::Subject& subject,
                                v1::ChangeEvent& event) {
                       ApplyPreference(request, request.has_source() ? &request.source() : nullptr,
                                       update_context, subject, event);
                       return absl::OkStatus();
                     });
}

// A notice's delivery time is not in the future beyond kMaxClockSkew, and
// not further back than this unless the request says it is a backfill.
constexpr absl::Duration kMaxDeliveryAge = absl::Hours(24 * 30);

void ValidateRecordNotice(const v1::RecordNoticeRequest& r, const std::string& prefix,
                          const CompiledPolicy& policy, absl::Time now, Violations* v) {
  ValidateId(r.user_id(), prefix + "user_id", v);
  ValidateId(r.notice_id(), prefix + "notice_id", v);
  ValidateId(r.notice_version(), prefix + "notice_version", v);
  if (r.purposes_size() == 0) {
    v->Add(prefix + "purposes", "at least one purpose is required");
  } else if (r.purposes_size() > kMaxNoticePurposes) {
    v->Add(prefix + "purposes",
           absl::StrCat(r.purposes_size(), " purposes; at most ", kMaxNoticePurposes, " allowed"));
  } else {
    for (int i = 0; i < r.purposes_size(); ++i) {
      // The field's name is built only for a violation: a batch of 10,000
      // valid items builds none.
      const std::string& purpose = r.purposes(i);
      auto field = [&] { return absl::StrCat(prefix, "purposes[", i, "]"); };
      if (!PurposeProblem(purpose).empty() || !policy.HasPurpose(purpose)) {
        ValidatePurpose(purpose, field(), policy, v);
      }
      for (int j = 0; j < i; ++j) {
        if (r.purposes(j) == purpose) v->Add(field(), absl::StrCat("repeats purposes[", j, "]"));
      }
    }
  }
  if (r.channel() == v1::NOTICE_CHANNEL_UNSPECIFIED) {
    v->Add(prefix + "channel", "is required: EMAIL, IN_APP or BANNER");
  } else if (!v1::NoticeChannel_IsValid(r.channel())) {
    v->Add(prefix + "channel", "is not a known notice channel");
  }
  if (r.has_delivery_time()) {
    const std::string field = prefix + "delivery_time";
    if (std::string p = TimestampProblem(r.delivery_time()); !p.empty()) {
      v->Add(field, p);
    } else if (const absl::Time t = FromProto(r.delivery_time()); t > now + kMaxClockSkew) {
      v->Add(field, absl::StrCat("is ", absl::FormatTime(t, absl::UTCTimeZone()),
                                 ", in the future (the server's time is ",
                                 absl::FormatTime(now, absl::UTCTimeZone()), ")"));
    } else if (t < absl::UnixEpoch()) {
      v->Add(field, "is before 1970");
    } else if (t < now - kMaxDeliveryAge && !r.backfill()) {
      v->Add(field, "is more than 30 days ago; set backfill to record a late delivery");
    }
  }
  ValidateWriteFields(r, prefix, v);
}

// The update a RecordNoticeRequest makes. `request` and `context` must
// outlive the commit.
storage::SubjectUpdate NoticeUpdate(const v1::RecordNoticeRequest& request,
                                    const CallContext& context) {
  return WriteUpdate(
      request, context, v1::CHANGE_KIND_NOTICE,
      [&request](storage::UpdateContext& update_context, v1::Subject& subject,
                 v1::ChangeEvent& event) -> absl::Status {
        if (const v1::NoticeDelivery* known =
                FindNotice(subject, request.notice_id(), request.notice_version())) {
          // A notice version says one thing: its purposes do not change.
          // Both lists are free of repeats (validation), so the same size
          // and every requested purpose known means the same set.
          const auto& was = known->purposes();
          const bool same = was.size() == request.purposes().size() &&
                            std::all_of(request.purposes().begin(), request.purposes().end(),
                                        [&was](const std::string& p) {
                                          return std::find(was.begin(), was.end(), p) != was.end();
                                        });
          if (!same) {
            absl::Status status = absl::FailedPreconditionError(absl::StrCat(
                "notice ", request.notice_id(), " version ", request.notice_version(),
                " was recorded for this user at revision ", known->revision(),
                " covering other purposes (", absl::StrJoin(known->purposes(), ", "),
                "); a notice version's purposes do not change: record a new notice_version"));
            google::rpc::PreconditionFailure failure;
            auto* violation = failure.add_violations();
            violation->set_type("NOTICE_PURPOSES_DIFFER");
            violation->set_subject("purposes");
            violation->set_description(absl::StrJoin(known->purposes(), ", "));
            AttachDetail(status, failure);
            return status;
          }
        }
        v1::NoticeChange* change = event.mutable_notice();
        v1::NoticeDelivery* notice = change->mutable_notice();
        notice->set_notice_id(request.notice_id());
        notice->set_notice_version(request.notice_version());
        *notice->mutable_purposes() = request.purposes();
        notice->set_channel(request.channel());
        *notice->mutable_record_time() = ToProto(update_context.time());
        *notice->mutable_delivery_time() =
            request.has_delivery_time() ? request.delivery_time() : notice->record_time();
        notice->set_revision(update_context.revision());
        change->set_backfill(request.backfill());
        PutNotice(&subject, *notice);
        return absl::OkStatus();
      });
}

// A batch of single-subject writes: 1 to `max_items` items, each validated
// by `validate(item, field_prefix, violations)`, and its request id.
template <typename Request, typename ValidateItem>
absl::Status ValidateBatch(const Request& request, int max_items, ValidateItem validate) {
  Violations v;
  if (request.requests_size() == 0) {
    v.Add("requests", "at least one item is required");
  } else if (request.requests_size() > max_items) {
    v.Add("requests", absl::StrCat(request.requests_size(), " items; at most ", max_items,
                                   " allowed per batch"));
  } else {
    for (int i = 0; i < request.requests_size(); ++i) {
      // Checked first under its short field names; the "requests[i]."
      // names are built only for an item that has a violation.
      Violations item;
      validate(request.requests(i), "", &item);
      if (item.empty()) continue;
      validate(request.requests(i), absl::StrCat("requests[", i, "]."), &v);
    }
  }
  ValidateOptionalId(request.request_id(), "request_id", &v);
  return v.ToStatus();
}

}  // namespace

absl::Status RegistryWrites::Validate(const v1::SetPreferenceRequest& request, absl::Time) const {
  Violations v;
  ValidateSetPreference(request, "", *policies_->Get(), &v);
  return v.ToStatus();
}

void RegistryWrites::SetPreference(const v1::SetPreferenceRequest& request,
                                   const CallContext& context, v1::SetPreferenceResponse* response,
                                   WriteDone done) {
  const absl::Time now = TimeOf(context);
  if (absl::Status s = Validate(request, now); !s.ok()) {
    return Refuse(context, now, std::move(s), std::move(done));
  }

  std::vector<storage::SubjectUpdate> updates;
  updates.push_back(PreferenceUpdate(request, context));
  // The answer is the preference the event records (none when it cleared
  // one), kept with the request id for a replay's answer: the subject
  // record is not copied out of the commit.
  updates.back().return_subject = false;
  updates.back().reply = [](const v1::Subject&, const v1::ChangeEvent& event) {
    return event.preference().has_after() ? event.preference().after().SerializeAsString()
                                          : std::string();
  };
  CommitSingle(
      std::move(updates), context, now, response,
      [response](storage::CommitResult& result) -> absl::Status {
        const std::string& reply = result.replies[0];
        if (!reply.empty() && !response->mutable_preference()->ParseFromString(reply)) {
          return absl::DataLossError(result.replayed[0]
                                         ? "the stored reply of a request id does not parse"
                                         : "the written preference does not parse");
        }
        return absl::OkStatus();
      },
      std::move(done));
}

absl::Status RegistryWrites::Validate(const v1::BatchSetPreferencesRequest& request,
                                      absl::Time) const {
  const auto policy = policies_->Get();
  return ValidateBatch(
      request, kMaxBatchSetItems,
      [&policy](const v1::SetPreferenceRequest& item, const std::string& prefix, Violations* v) {
        ValidateSetPreference(item, prefix, *policy, v);
      });
}

void RegistryWrites::BatchSetPreferences(const v1::BatchSetPreferencesRequest& request,
                                         const CallContext& context,
                                         v1::BatchSetPreferencesResponse* response,
                                         WriteDone done) {
  const absl::Time now = TimeOf(context);
  if (absl::Status s = Validate(request, now); !s.ok()) {
    return Refuse(context, now, std::move(s), std::move(done));
  }
  CommitBatch(
      request, "BatchSetPreferences", context, now,
      [&context](const v1::SetPreferenceRequest& item) { return PreferenceUpdate(item, context); },
      response, std::move(done));
}

absl::Status RegistryWrites::Validate(const v1::UpdateSubjectRequest& request,
                                      absl::Time now) const {
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
        if (std::string p = BirthDateProblem(attrs.birth_date(), now); !p.empty()) {
          v.Add("attributes.birth_date", p);
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
  return v.ToStatus();
}

void RegistryWrites::UpdateSubject(const v1::UpdateSubjectRequest& request,
                                   const CallContext& context, v1::UpdateSubjectResponse* response,
                                   WriteDone done) {
  const absl::Time now = TimeOf(context);
  if (absl::Status s = Validate(request, now); !s.ok()) {
    return Refuse(context, now, std::move(s), std::move(done));
  }

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
      std::move(updates), context, now, response,
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

absl::Status RegistryWrites::Validate(const v1::DeleteSubjectRequest& request, absl::Time) const {
  Violations v;
  ValidateId(request.user_id(), "user_id", &v);
  ValidateWriteFields(request, "", &v);
  return v.ToStatus();
}

void RegistryWrites::DeleteSubject(const v1::DeleteSubjectRequest& request,
                                   const CallContext& context, v1::DeleteSubjectResponse* response,
                                   WriteDone done) {
  const absl::Time now = TimeOf(context);
  if (absl::Status s = Validate(request, now); !s.ok()) {
    return Refuse(context, now, std::move(s), std::move(done));
  }

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
        subject.clear_notices();
        subject.mutable_attributes()->set_account_state(v1::ACCOUNT_STATE_DELETED);
        *subject.mutable_delete_time() = ToProto(update_context.time());
        return absl::OkStatus();
      }));
  CommitSingle(
      std::move(updates), context, now, response,
      [](storage::CommitResult&) { return absl::OkStatus(); }, std::move(done));
}

absl::Status RegistryWrites::Validate(const v1::RecordNoticeRequest& request,
                                      absl::Time now) const {
  Violations v;
  ValidateRecordNotice(request, "", *policies_->Get(), now, &v);
  return v.ToStatus();
}

void RegistryWrites::RecordNotice(const v1::RecordNoticeRequest& request,
                                  const CallContext& context, v1::RecordNoticeResponse* response,
                                  WriteDone done) {
  const absl::Time now = TimeOf(context);
  if (absl::Status s = Validate(request, now); !s.ok()) {
    return Refuse(context, now, std::move(s), std::move(done));
  }

  std::vector<storage::SubjectUpdate> updates;
  updates.push_back(NoticeUpdate(request, context));
  if (!request.request_id().empty()) {
    // Kept with the request id, for a replay's answer: the subject's entry.
    updates.back().reply = [&request](const v1::Subject& subject, const v1::ChangeEvent&) {
      const v1::NoticeDelivery* entry =
          FindNotice(subject, request.notice_id(), request.notice_version());
      return entry != nullptr ? entry->SerializeAsString() : std::string();
    };
  }
  CommitSingle(
      std::move(updates), context, now, response,
      [&request, response](storage::CommitResult& result) -> absl::Status {
        if (result.replayed[0]) {
          if (!response->mutable_notice()->ParseFromString(result.replies[0])) {
            return absl::DataLossError("the stored reply of a request id does not parse");
          }
        } else if (const v1::NoticeDelivery* entry = FindNotice(
                       result.subjects[0], request.notice_id(), request.notice_version())) {
          *response->mutable_notice() = *entry;
        }
        return absl::OkStatus();
      },
      std::move(done));
}

absl::Status RegistryWrites::Validate(const v1::BatchRecordNoticesRequest& request,
                                      absl::Time now) const {
  const auto policy = policies_->Get();
  return ValidateBatch(
      request, kMaxBatchNoticeItems,
      [&policy, now](const v1::RecordNoticeRequest& item, const std::string& prefix,
                     Violations* v) { ValidateRecordNotice(item, prefix, *policy, now, v); });
}

void RegistryWrites::BatchRecordNotices(const v1::BatchRecordNoticesRequest& request,
                                        const CallContext& context,
                                        v1::BatchRecordNoticesResponse* response, WriteDone done) {
  const absl::Time now = TimeOf(context);
  if (absl::Status s = Validate(request, now); !s.ok()) {
    return Refuse(context, now, std::move(s), std::move(done));
  }
  CommitBatch(
      request, "BatchRecordNotices", context, now,
      [&context](const v1::RecordNoticeRequest& item) { return NoticeUpdate(item, context); },
      response, std::move(done));
}

template <typename Request, typename Response, typename Update>
void RegistryWrites::CommitBatch(const Request& request, absl::string_view kind,
                                 const CallContext& context, absl::Time now, Update update,
                                 Response* response, WriteDone done) {
  std::vector<storage::SubjectUpdate> updates;
  updates.reserve(request.requests_size());
  for (const auto& item : request.requests()) {
    updates.push_back(update(item));
    updates.back().return_subject = false;  // the response has revisions only
  }
  Commit(
      std::move(updates), KeyOf(kind, request, request.request_id()), context, now,
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

absl::Status RegistryWrites::GetSubject(const v1::GetSubjectRequest& request,
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

absl::Status RegistryWrites::Validate(const v1::SetContentExclusionRequest& request,
                                      absl::Time) const {
  Violations v;
  ValidateId(request.user_id(), "user_id", &v);
  ValidateId(request.content_id(), "content_id", &v);
  ValidatePurpose(request.purpose(), "purpose", *policies_->Get(), &v);
  ValidateWriteFields(request, "", &v);
  return v.ToStatus();
}

void RegistryWrites::SetContentExclusion(const v1::SetContentExclusionRequest& request,
                                         const CallContext& context,
                                         v1::SetContentExclusionResponse* response,
                                         WriteDone done) {
  const absl::Time now = TimeOf(context);
  if (absl::Status s = Validate(request, now); !s.ok()) {
    return Refuse(context, now, std::move(s), std::move(done));
  }

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
      std::move(updates), context, now, response,
      [](storage::CommitResult&) { return absl::OkStatus(); }, std::move(done));
}

void RegistryWrites::Commit(std::vector<storage::SubjectUpdate> updates,
                            storage::RequestKey request, const CallContext& context, absl::Time now,
                            std::function<std::string(int index)> field_of,
                            std::function<void(absl::StatusOr<storage::CommitResult>)> then) {
  auto answer = [this, field_of = std::move(field_of),
                 then = std::move(then)](absl::StatusOr<storage::CommitResult> result) {
    if (result.ok() && result->outcome == storage::CommitResult::Outcome::kRequestIdConflict) {
      // The id names another request: retrying cannot help, the caller
      // must send a new id (docs/history.md, "Idempotency").
      return then(FieldError(
          field_of(result->conflict_index),
          absl::StrCat("was already used for a different request (revision ",
                       result->conflict_revision, "); a new request needs a new request_id")));
    }
    if (result.ok()) notifier_->Notify(store_->CurrentRevision());
    then(std::move(result));
  };
  if (context.log_sequence > 0) {
    store_->ApplyLoggedAsync(std::move(updates), now, std::move(request), context.log_sequence,
                             std::move(answer));
  } else {
    store_->CommitAsync(std::move(updates), now, std::move(request), std::move(answer));
  }
}

void RegistryWrites::Refuse(const CallContext& context, absl::Time now, absl::Status refusal,
                            WriteDone done) {
  if (context.log_sequence == 0) return done(std::move(refusal));
  // Applying checks a command again, against the policy in force at its
  // place in the log; refused there, it is recorded as applied all the
  // same, so that the next command follows it.
  store_->ApplyLoggedAsync({}, now, {}, context.log_sequence,
                           [refusal = std::move(refusal), done = std::move(done)](
                               absl::StatusOr<storage::CommitResult> recorded) {
                             done(recorded.ok() ? refusal : recorded.status());
                           });
}

absl::Status RegistryWrites::AwaitWrite(const std::function<void(WriteDone)>& start) {
  absl::Status status;
  absl::Notification finished;
  start([&](absl::Status s) {
    status = std::move(s);
    finished.Notify();
  });
  finished.WaitForNotification();
  return status;
}

}  // namespace consent
