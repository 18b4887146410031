#include "server/registry_checks.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "core/proto_time.h"
#include "core/status_details.h"
#include "core/subject_view.h"
#include "core/validation.h"
#include "google/rpc/error_details.pb.h"
#include "server/errors.h"

namespace consent {

absl::StatusOr<RegistryChecks::ReadView> RegistryChecks::PrepareRead(
    bool has_as_of, const google::protobuf::Timestamp& as_of, int64_t min_revision) const {
  if (min_revision < 0) return FieldError("min_revision", "must not be negative");
  int64_t current = store_->CurrentRevision();
  if (min_revision > current && revision_wait_) current = revision_wait_(min_revision);
  if (min_revision > current) {
    // Standalone, the one copy will never have it; a replica may, later.
    absl::Status status =
        revision_wait_
            ? absl::UnavailableError(absl::StrCat(
                  "min_revision ", min_revision, " is ahead of this replica's revision ", current,
                  " after waiting for it to be applied; retry, here or on "
                  "another replica"))
            : absl::FailedPreconditionError(absl::StrCat(
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

absl::Status RegistryChecks::LoadAsOf(absl::string_view user_id, absl::Time at,
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

const std::vector<std::string> kNoExclusions;

const std::vector<std::string>& ExclusionsOf(const SubjectAsOf& state,
                                             const std::string& content_id) {
  auto it = state.exclusions.find(content_id);
  return it == state.exclusions.end() ? kNoExclusions : it->second;
}

}  // namespace

absl::Status RegistryChecks::Check(const v1::CheckRequest& request,
                                   v1::CheckResponse* response) const {
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
    // The decision view (the subject index when there is one); to explain,
    // the whole record, whose notices name themselves.
    const absl::string_view id = request.user_id();
    SubjectViewArena arena;
    std::vector<const SubjectView*> records;
    if (request.explain()) {
      auto subject = store_->GetSubject(request.user_id());
      if (!subject.ok() && !absl::IsNotFound(subject.status())) return subject.status();
      records.push_back(subject.ok() ? arena.Add(*subject) : nullptr);
      if (subject.ok() && records[0] == nullptr) {
        return absl::DataLossError("the subject's record does not decode");
      }
    } else if (absl::Status s = store_->GetSubjects({&id, 1}, &arena, &records); !s.ok()) {
      return s;
    }
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
  FillDecision(verdict, *view->policy, revision, response->mutable_decision());
  for (auto& e : explanation) *response->add_explanation() = std::move(e);
  return absl::OkStatus();
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

absl::Status RegistryChecks::BatchCheck(const v1::BatchCheckRequest& request,
                                        DecisionSink* decisions, const CallControl& control) const {
  // The request as a whole: a problem here fails the call.
  Violations v;
  if (std::string p = PurposeProblem(request.purpose()); !p.empty()) v.Add("purpose", p);
  const int n = request.items_size();
  if (n == 0) {
    v.Add("items", "at least one item is required");
  } else if (n > kMaxBatchCheckItems) {
    v.Add("items", absl::StrCat(n, " items; at most ", kMaxBatchCheckItems, " allowed per batch"));
  }
  if (!v.empty()) return v.ToStatus();
  auto view = PrepareRead(request.has_as_of(), request.as_of(), request.min_revision());
  if (!view.ok()) return view.status();
  if (absl::Status s = CheckPurposeDefined(request.purpose(), *view->policy); !s.ok()) return s;

  // Each item: a problem of its own is that item's answer, naming its
  // first bad field. `invalid` lists them in item order.
  std::vector<std::pair<int, absl::Status>> invalid;
  for (int i = 0; i < n; ++i) {
    const v1::CheckItem& item = request.items(i);
    Violations item_problems;
    ValidateCheckItem(item.user_id(), item.has_content(), item.content(), i, &item_problems);
    if (item_problems.empty()) {
      ValidateCreateTime(
          item.content(), view->at, [i] { return absl::StrCat("items[", i, "].content"); },
          &item_problems);
    }
    if (!item_problems.empty()) invalid.emplace_back(i, item_problems.ToStatus(/*max_shown=*/1));
  }
  decisions->Reserve(n, *view->policy);
  RuleFinder rules(*view->policy, request.purpose());
  // Walks `invalid` alongside the items: true (and the error added) when
  // item i is invalid.
  size_t next_invalid = 0;
  auto added_invalid = [&](int i) {
    if (next_invalid == invalid.size() || invalid[next_invalid].first != i) return false;
    decisions->AddInvalid(invalid[next_invalid++].second);
    return true;
  };

  // Every write up to it is visible to the reads below.
  const int64_t revision = store_->CurrentRevision();
  if (view->as_of) {
    // Each user's history is folded once, however many of their items.
    struct Folded {
      SubjectAsOf state;
      const SubjectView* record = nullptr;  // null: no record then
    };
    absl::flat_hash_map<std::string, Folded> folded;
    SubjectViewArena arena;
    for (int i = 0; i < n; ++i) {
      if (added_invalid(i)) continue;
      const v1::CheckItem& item = request.items(i);
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
    decisions->Finish(revision);
    return absl::OkStatus();
  }

  // The valid items' users, read at once; records[k] is the k-th valid
  // item's.
  std::vector<absl::string_view> ids;
  ids.reserve(n);
  for (int i = 0, k = 0; i < n; ++i) {
    if (k < static_cast<int>(invalid.size()) && invalid[k].first == i) {
      ++k;
      continue;
    }
    ids.push_back(request.items(i).user_id());
  }
  SubjectViewArena arena;
  std::vector<const SubjectView*> records;
  if (absl::Status s = store_->GetSubjects(ids, &arena, &records); !s.ok()) return s;
  std::vector<std::string> excluded;
  size_t next_record = 0;
  for (int i = 0; i < n; ++i) {
    if (i % 256 == 255) {
      if (absl::Status s = control.GaveUp("the batch"); !s.ok()) return s;
    }
    if (added_invalid(i)) continue;
    const v1::CheckItem& item = request.items(i);
    const SubjectView* record = records[next_record++];
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
  decisions->Finish(revision);
  return absl::OkStatus();
}

}  // namespace consent
