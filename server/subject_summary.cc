#include "server/subject_summary.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/decision_engine.h"
#include "core/history.h"
#include "core/proto_time.h"
#include "core/subject_view.h"
#include "core/validation.h"

namespace consent {
namespace {

std::string DateOf(const google::protobuf::Timestamp& t) {
  return absl::FormatTime("%Y-%m-%d", FromProto(t), absl::UTCTimeZone());
}

bool Decisive(const v1::Preference& pref, absl::Time at) {
  PreferenceView view;
  if (pref.has_effective_time()) view.effective_time = FromProto(pref.effective_time());
  if (pref.has_expire_time()) view.expire_time = FromProto(pref.expire_time());
  return InEffect(view, at) && (pref.state() == v1::PREFERENCE_STATE_OBJECTED ||
                                pref.state() == v1::PREFERENCE_STATE_CONSENTED);
}

// The preference rule 9 decides by for `purpose` at `at`: the most
// specific in effect along the purpose path, unless it is a consent that
// an objection on an ancestor recorded later overrides (then that
// objection). Null when none is in effect.
const v1::Preference* PreferenceFor(const v1::Subject& subject, absl::string_view purpose,
                                    absl::Time at) {
  const v1::Preference* decisive = nullptr;
  absl::string_view p = purpose;
  for (; !p.empty() && decisive == nullptr; p = ParentPurpose(p)) {
    for (const v1::Preference& pref : subject.preferences()) {
      if (pref.purpose() == p && Decisive(pref, at)) {
        decisive = &pref;
        break;
      }
    }
  }
  if (decisive == nullptr || decisive->state() != v1::PREFERENCE_STATE_CONSENTED) return decisive;
  for (; !p.empty(); p = ParentPurpose(p)) {  // the consent's ancestors
    for (const v1::Preference& pref : subject.preferences()) {
      if (pref.purpose() == p && pref.state() == v1::PREFERENCE_STATE_OBJECTED &&
          pref.revision() > decisive->revision() && Decisive(pref, at)) {
        return &pref;
      }
    }
  }
  return decisive;
}

// The plain-words explanation of one purpose's answer (PurposeSummary.
// explanation), addressed to the user.
std::string ExplainInPlainWords(const v1::PurposeSummary& s, int min_age) {
  const std::string told = s.has_notice() ? absl::StrCat(" You were told about it on ",
                                                         DateOf(s.notice().delivery_time()), ".")
                                          : std::string();
  switch (s.reason()) {
    case v1::DECISION_REASON_ALLOWED_DEFAULT:
      return absl::StrCat(
          "Used: the platform relies on its legitimate interest, and you have "
          "not objected. You can object at any time.",
          told);
    case v1::DECISION_REASON_ALLOWED_CONSENT:
      return absl::StrCat("Used: you consented on ", DateOf(s.preference().update_time()),
                          ". You can withdraw your consent at any time.");
    case v1::DECISION_REASON_DENIED_ACCOUNT_DELETED:
      return "Not used: the account was deleted.";
    case v1::DECISION_REASON_DENIED_POLICY:
      return "Not used: this use is not allowed where you live.";
    case v1::DECISION_REASON_DENIED_CONTENT_TYPE:
      return "Not used: posts are not used for this purpose.";
    case v1::DECISION_REASON_DENIED_NOT_PUBLIC:
      return "Not used: only content visible to everyone could be used, and posts are not.";
    case v1::DECISION_REASON_DENIED_SENSITIVE:
      return "Not used: content with sensitive data is not used.";
    case v1::DECISION_REASON_DENIED_MINOR:
      return absl::StrCat("Not used: content posted by people under ", min_age,
                          " is not used, and your age is under it or not known.");
    case v1::DECISION_REASON_DENIED_CONTENT_EXCLUDED:
      return "Not used: you excluded this content.";
    case v1::DECISION_REASON_DENIED_OBJECTION:
      return absl::StrCat("Not used: you objected on ", DateOf(s.preference().update_time()), ".");
    case v1::DECISION_REASON_DENIED_NO_CONSENT:
      return "Not used unless you consent.";
    case v1::DECISION_REASON_DENIED_NOT_NOTIFIED:
      if (!s.has_notice()) {
        return absl::StrCat("Not used: you have not been told about this use yet. Once you are, ",
                            s.min_notice_days(), " days pass before it can start.");
      }
      return absl::StrCat("Not used yet: you were told about it on ",
                          DateOf(s.notice().delivery_time()), "; it can start on ",
                          DateOf(s.notice_period_end_time()), " unless you object before then.");
    default:
      return "Not used.";
  }
}

}  // namespace

absl::Status SummarizeSubject(const v1::GetSubjectSummaryRequest& request,
                              storage::ConsentStore& store, const CompiledPolicy& policy,
                              absl::Time now, v1::GetSubjectSummaryResponse* response) {
  if (std::string p = IdProblem(request.user_id()); !p.empty()) {
    return FieldError("user_id", p);
  }
  const int64_t revision = store.CurrentRevision();
  v1::Subject subject;
  auto read = store.GetSubject(request.user_id());
  if (read.ok()) {
    subject = *std::move(read);
  } else if (!absl::IsNotFound(read.status())) {
    return read.status();
  }
  const bool recorded = read.ok();
  SubjectViewArena arena;
  const SubjectView* view = recorded ? arena.Add(subject) : nullptr;
  if (recorded && view == nullptr) {
    return absl::DataLossError("the subject's record does not decode");
  }

  response->set_user_id(request.user_id());
  response->set_recorded(recorded);
  response->set_jurisdiction(subject.attributes().jurisdiction());
  response->set_policy_version(policy.version());
  response->set_revision(std::max(revision, subject.revision()));
  *response->mutable_evaluation_time() = ToProto(now);

  v1::Content post;
  post.set_content_id("summary");
  post.set_content_type(v1::CONTENT_TYPE_POST);
  post.set_visibility(v1::VISIBILITY_PUBLIC);
  *post.mutable_create_time() = ToProto(now);
  for (const v1::PurposeDefinition& definition : policy.proto().purposes()) {
    const std::string& purpose = definition.name();
    v1::PurposeSummary* s = response->add_purposes();
    s->set_purpose(purpose);
    s->set_description(definition.description());
    const Verdict verdict = Decide(policy, CheckSubject{view, {}}, purpose, post, now);
    s->set_allowed(IsAllowed(verdict.reason));
    s->set_reason(verdict.reason);
    const v1::PurposeRule* rule = policy.FindRule(subject.attributes().jurisdiction(), purpose);
    const bool ruled = rule != nullptr && !rule->prohibited();
    if (ruled) {
      s->set_legal_basis(rule->legal_basis());
      s->set_min_notice_days(rule->min_notice_days());
    }
    if (const v1::Preference* pref = PreferenceFor(subject, purpose, now)) {
      *s->mutable_preference() = *pref;
    }
    if (const NoticeView* first = view != nullptr ? FirstNotice(*view, purpose) : nullptr) {
      if (const v1::NoticeDelivery* notice =
              FindNotice(subject, first->notice_id, first->notice_version)) {
        *s->mutable_notice() = *notice;
        if (s->min_notice_days() > 0) {
          *s->mutable_notice_period_end_time() =
              ToProto(first->delivery_time + NoticePeriod(s->min_notice_days()));
        }
      }
    }
    s->set_explanation(ExplainInPlainWords(*s, ruled ? rule->min_age() : 0));
  }
  return absl::OkStatus();
}

}  // namespace consent
