#include "core/decision_engine.h"

#include <algorithm>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/civil_time.h"
#include "core/enum_names.h"
#include "core/proto_time.h"
#include "google/protobuf/util/time_util.h"

namespace consent {
namespace {

std::string FormatTime(const google::protobuf::Timestamp& t) {
  return google::protobuf::util::TimeUtil::ToString(t);
}

// Records rule evaluations when asked to; free otherwise.
class Trace {
 public:
  explicit Trace(std::vector<v1::RuleEvaluation>* out) : out_(out) {}
  bool on() const { return out_ != nullptr; }
  // `detail` is a callable returning the detail string; it runs only when
  // an explanation was asked for, so checks without one build no strings.
  template <typename Detail>
  void Add(int rule, absl::string_view name, bool decided, Detail&& detail) {
    if (out_ == nullptr) return;
    v1::RuleEvaluation& e = out_->emplace_back();
    e.set_rule(rule);
    e.set_name(std::string(name));
    e.set_outcome(decided ? v1::RULE_OUTCOME_DECIDED : v1::RULE_OUTCOME_PASSED);
    e.set_detail(detail());
  }

 private:
  std::vector<v1::RuleEvaluation>* out_;
};

// The first listed category the rule excludes, or UNSPECIFIED.
v1::SensitiveCategory ExcludedSensitive(const v1::PurposeRule& rule, const v1::Content& content) {
  for (int c : content.sensitive_categories()) {
    switch (rule.sensitive_handling()) {
      case v1::SENSITIVE_HANDLING_ALLOW:
        break;
      case v1::SENSITIVE_HANDLING_EXCLUDE_LISTED: {
        const auto& listed = rule.excluded_sensitive_categories();
        if (std::find(listed.begin(), listed.end(), c) != listed.end()) {
          return static_cast<v1::SensitiveCategory>(c);
        }
        break;
      }
      default:  // EXCLUDE_ALL, and anything unknown: fail closed
        return static_cast<v1::SensitiveCategory>(c);
    }
  }
  return v1::SENSITIVE_CATEGORY_UNSPECIFIED;
}

// Rule 7. The author's age at the content's create_time; when create_time is
// unknown the age now is an upper bound for it, so a subject under min_age
// now is certainly a minor then. Sets `why`.
bool MinorDenied(const v1::PurposeRule& rule, const SubjectView* subject,
                 const v1::Content& content, absl::Time at, std::string* why, bool explain) {
  if (rule.min_age() <= 0 && !rule.require_known_age()) {
    if (explain) *why = "the rule sets no minimum age";
    return false;
  }
  // Built only to explain: every decision passes here.
  auto requirement = [&rule] {
    return absl::StrCat("min_age ", rule.min_age(),
                        rule.require_known_age() ? ", age must be known" : ", age may be unknown");
  };
  const bool birth_known = subject != nullptr && subject->birth_date.has_value();
  if (!birth_known) {
    if (explain) *why = absl::StrCat(requirement(), "; birth date unknown");
    return rule.require_known_age();
  }
  const DateView& birth = *subject->birth_date;
  if (content.has_create_time()) {
    // A create_time after the evaluation time is refused by validation
    // beyond a few minutes of clock skew (registry.cc); within them, the
    // content is as old as it can be: made at the evaluation time.
    const int age = AgeInYears(birth, std::min(FromProto(content.create_time()), at));
    if (explain) {
      *why = absl::StrCat(requirement(), "; author was ", age, " at create_time ",
                          FormatTime(content.create_time()));
    }
    return age < rule.min_age();
  }
  const int age_now = AgeInYears(birth, at);
  if (explain) {
    *why = absl::StrCat(requirement(), "; no create_time, author is ", age_now,
                        " now, so at most that at creation");
  }
  if (age_now < rule.min_age()) return true;
  return rule.require_known_age();
}

}  // namespace

CivilDate UtcDate(absl::Time at) {
  // About 10,000 years either side of 1970; beyond, the general path.
  constexpr int64_t kLimit = int64_t{10'000} * 366 * 86'400;
  const int64_t seconds = absl::ToUnixSeconds(at);  // rounds toward the past
  if (seconds > kLimit || seconds < -kLimit) {
    const absl::CivilDay day = absl::ToCivilDay(at, absl::UTCTimeZone());
    return {day.year(), day.month(), day.day()};
  }
  // H. Hinnant's civil_from_days: days since 1970-01-01 to a proleptic
  // Gregorian date, counted in 400-year eras that start on March 1st.
  const int64_t day_number = (seconds >= 0 ? seconds : seconds - 86'399) / 86'400;
  // The last day asked about on this thread, remembered: a batch's items
  // share their evaluation time, and often their content's creation day.
  thread_local int64_t last_day_number = std::numeric_limits<int64_t>::min();
  thread_local CivilDate last_date{};
  if (day_number == last_day_number) return last_date;
  const int64_t days = day_number + 719'468;
  const int64_t era = (days >= 0 ? days : days - 146'096) / 146'097;
  const int64_t day_of_era = days - era * 146'097;  // [0, 146096]
  const int64_t year_of_era =
      (day_of_era - day_of_era / 1'460 + day_of_era / 36'524 - day_of_era / 146'096) /
      365;  // [0, 399]
  const int64_t day_of_year =
      day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
  const int64_t month_from_march = (5 * day_of_year + 2) / 153;  // [0, 11]
  const int day = static_cast<int>(day_of_year - (153 * month_from_march + 2) / 5 + 1);
  const int month =
      static_cast<int>(month_from_march < 10 ? month_from_march + 3 : month_from_march - 9);
  last_day_number = day_number;
  last_date = {year_of_era + era * 400 + (month <= 2 ? 1 : 0), month, day};
  return last_date;
}

int AgeInYears(const DateView& birth, absl::Time at) {
  const CivilDate day = UtcDate(at);
  int age = static_cast<int>(day.year) - birth.year;
  if (day.month < birth.month || (day.month == birth.month && day.day < birth.day)) {
    --age;
  }
  return age;
}

bool InEffect(const PreferenceView& preference, absl::Time at) {
  if (preference.effective_time && at < *preference.effective_time) return false;
  if (preference.expire_time && at >= *preference.expire_time) return false;
  return true;
}

const NoticeView* FirstNotice(const SubjectView& subject, absl::string_view purpose) {
  const NoticeView* first = nullptr;
  for (const NoticeView& notice : subject.notices) {
    if (CoversPurpose(notice.purpose, purpose) &&
        (first == nullptr || notice.delivery_time < first->delivery_time)) {
      first = &notice;
    }
  }
  return first;
}

bool CoversPurpose(absl::string_view ancestor, absl::string_view purpose) {
  return purpose == ancestor ||
         (absl::StartsWith(purpose, ancestor) && purpose.size() > ancestor.size() &&
          purpose[ancestor.size()] == '.');
}

Verdict Decide(const CompiledPolicy& policy, const CheckSubject& subject, absl::string_view purpose,
               const v1::Content& content, absl::Time at,
               std::vector<v1::RuleEvaluation>* explanation, RuleFinder* rules) {
  Trace trace(explanation);
  const SubjectView* record = subject.record;
  Verdict v;
  // Records the deciding rule and ends evaluation.
  auto conclude = [&](v1::DecisionReason reason, int rule, absl::string_view name, auto&& detail) {
    trace.Add(rule, name, /*decided=*/true, detail);
    v.reason = reason;
    v.rule = rule;
    return v;
  };
  auto pass = [&](int rule, absl::string_view name, auto&& detail) {
    trace.Add(rule, name, /*decided=*/false, detail);
  };
  pass(1, "purpose defined",
       [&] { return absl::StrCat("\"", purpose, "\" is defined by policy ", policy.version()); });

  // Rule 2: deleted accounts.
  if (record != nullptr && record->account_state == v1::ACCOUNT_STATE_DELETED) {
    return conclude(v1::DECISION_REASON_DENIED_ACCOUNT_DELETED, 2, "account deleted",
                    [&] { return absl::StrCat("deleted at revision ", record->revision); });
  }
  pass(2, "account deleted", [&] {
    return std::string(record == nullptr ? "no record for this user" : "account not deleted");
  });

  // Rule 3: the policy must have a rule allowing the purpose here.
  const absl::string_view jurisdiction = record != nullptr ? record->jurisdiction : "";
  const v1::PurposeRule* rule =
      rules != nullptr ? rules->Find(jurisdiction) : policy.FindRule(jurisdiction, purpose);
  auto where = [&] {
    return absl::StrCat("jurisdiction ", jurisdiction.empty() ? "unknown" : jurisdiction,
                        ": rules of group ", policy.GroupName(jurisdiction));
  };
  if (rule == nullptr) {
    return conclude(v1::DECISION_REASON_DENIED_POLICY, 3, "policy rule", [&] {
      return absl::StrCat(where(), ", no rule for ", purpose, " or its parents");
    });
  }
  if (rule->prohibited()) {
    return conclude(v1::DECISION_REASON_DENIED_POLICY, 3, "policy rule", [&] {
      return absl::StrCat(where(), ", rule for ", rule->purpose(), " prohibits it");
    });
  }
  pass(3, "policy rule", [&] {
    return absl::StrCat(
        where(), ", rule for ", rule->purpose(), ": ",
        EnumValueName(v1::LegalBasis_descriptor(), rule->legal_basis(), "LEGAL_BASIS_"));
  });

  // Rule 4: private messages never; other types as the rule says.
  auto type_name = [&] {
    return EnumValueName(v1::ContentType_descriptor(), content.content_type(), "CONTENT_TYPE_");
  };
  if (content.content_type() == v1::CONTENT_TYPE_MESSAGE) {
    return conclude(v1::DECISION_REASON_DENIED_CONTENT_TYPE, 4, "content type",
                    [] { return std::string("MESSAGE: private messages are never used"); });
  }
  const auto& excluded_types = rule->excluded_content_types();
  if (std::find(excluded_types.begin(), excluded_types.end(), content.content_type()) !=
      excluded_types.end()) {
    return conclude(v1::DECISION_REASON_DENIED_CONTENT_TYPE, 4, "content type",
                    [&] { return absl::StrCat(type_name(), " is excluded by the rule"); });
  }
  pass(4, "content type", [&] { return absl::StrCat(type_name(), " is not excluded"); });

  // Rule 5: visibility.
  auto visibility_name = [&] {
    return EnumValueName(v1::Visibility_descriptor(), content.visibility(), "VISIBILITY_");
  };
  const auto& visibilities = rule->allowed_visibilities();
  if (std::find(visibilities.begin(), visibilities.end(), content.visibility()) ==
      visibilities.end()) {
    return conclude(v1::DECISION_REASON_DENIED_NOT_PUBLIC, 5, "visibility",
                    [&] { return absl::StrCat(visibility_name(), " is not allowed by the rule"); });
  }
  pass(5, "visibility", [&] { return absl::StrCat(visibility_name(), " is allowed"); });

  // Rule 6: special-category data.
  if (const v1::SensitiveCategory c = ExcludedSensitive(*rule, content);
      c != v1::SENSITIVE_CATEGORY_UNSPECIFIED) {
    return conclude(v1::DECISION_REASON_DENIED_SENSITIVE, 6, "sensitive data", [&] {
      return absl::StrCat(
          EnumValueName(v1::SensitiveCategory_descriptor(), c, "SENSITIVE_CATEGORY_"),
          " is excluded by the rule");
    });
  }
  pass(6, "sensitive data", [&] {
    return std::string(content.sensitive_categories_size() == 0 ? "none present"
                                                                : "present categories are allowed");
  });

  // Rule 7: minors.
  std::string why;
  if (MinorDenied(*rule, record, content, at, &why, trace.on())) {
    return conclude(v1::DECISION_REASON_DENIED_MINOR, 7, "minimum age", [&] { return why; });
  }
  pass(7, "minimum age", [&] { return why; });

  // Rule 8: the user excluded this item, for the purpose or an ancestor.
  for (const std::string& excluded : subject.excluded_purposes) {
    if (CoversPurpose(excluded, purpose)) {
      return conclude(v1::DECISION_REASON_DENIED_CONTENT_EXCLUDED, 8, "content exclusion", [&] {
        return absl::StrCat("content ", content.content_id(), " excluded for ", excluded);
      });
    }
  }
  pass(8, "content exclusion", [&] {
    return subject.excluded_purposes.empty()
               ? std::string("content not excluded")
               : absl::StrCat("excluded only for ", absl::StrJoin(subject.excluded_purposes, ", "));
  });

  // Rule 9: the most specific explicit preference in effect along the path
  // decides, except that a consent is overridden by an objection on an
  // ancestor purpose recorded later (at a higher revision): a broader
  // objection is never narrowed by an older consent. An objection on a
  // descendant is more specific than any ancestor's consent, so it decides.
  if (record != nullptr && !record->preferences.empty()) {
    const PreferenceView* decisive = nullptr;
    absl::string_view p = purpose;
    for (; !p.empty() && decisive == nullptr; p = ParentPurpose(p)) {
      for (const PreferenceView& pref : record->preferences) {
        if (pref.purpose == p && InEffect(pref, at) &&
            (pref.state == v1::PREFERENCE_STATE_OBJECTED ||
             pref.state == v1::PREFERENCE_STATE_CONSENTED)) {
          decisive = &pref;
          break;
        }
      }
    }
    if (decisive != nullptr && decisive->state == v1::PREFERENCE_STATE_CONSENTED) {
      // `p` is now the decisive purpose's parent: look for a later objection
      // on it or any ancestor.
      for (; !p.empty(); p = ParentPurpose(p)) {
        for (const PreferenceView& pref : record->preferences) {
          if (pref.purpose == p && pref.state == v1::PREFERENCE_STATE_OBJECTED &&
              pref.revision > decisive->revision && InEffect(pref, at)) {
            const PreferenceView* consent = decisive;
            return conclude(
                v1::DECISION_REASON_DENIED_OBJECTION, 9, "preference", [&pref, consent] {
                  return absl::StrCat("OBJECTED for ", pref.purpose, ", set at revision ",
                                      pref.revision, ", overrides the earlier CONSENTED for ",
                                      consent->purpose, " (revision ", consent->revision, ")");
                });
          }
        }
      }
    }
    if (decisive != nullptr) {
      const PreferenceView& pref = *decisive;
      auto detail = [&] {
        return absl::StrCat(
            EnumValueName(v1::PreferenceState_descriptor(), pref.state, "PREFERENCE_STATE_"),
            " for ", pref.purpose, ", set at revision ", pref.revision);
      };
      if (pref.state == v1::PREFERENCE_STATE_OBJECTED) {
        return conclude(v1::DECISION_REASON_DENIED_OBJECTION, 9, "preference", detail);
      }
      return conclude(v1::DECISION_REASON_ALLOWED_CONSENT, 9, "preference", detail);
    }
  }
  pass(9, "preference",
       [] { return std::string("no preference in effect along the purpose path"); });

  // Rule 10: the legal basis decides; legitimate interest with a notice
  // period only once the period after a notice covering the purpose ended.
  if (rule->legal_basis() == v1::LEGAL_BASIS_LEGITIMATE_INTEREST) {
    const int days = rule->min_notice_days();
    if (days <= 0) {
      return conclude(v1::DECISION_REASON_ALLOWED_DEFAULT, 10, "legal basis", [] {
        return std::string("legitimate interest: allowed unless the user objects");
      });
    }
    const NoticeView* notice = record != nullptr ? FirstNotice(*record, purpose) : nullptr;
    const absl::Duration period = NoticePeriod(days);
    auto detail = [&] {
      std::string out =
          absl::StrCat("legitimate interest with a notice period of ", days, " days: ");
      if (notice == nullptr) {
        absl::StrAppend(&out, "no notice covering ", purpose, " was delivered");
      } else {
        absl::StrAppend(&out, "notice ");
        if (!notice->notice_id.empty()) {
          absl::StrAppend(&out, notice->notice_id, " version ", notice->notice_version, " ");
        }
        absl::StrAppend(&out, "for ", notice->purpose, " delivered at ",
                        FormatTime(ToProto(notice->delivery_time)), ", period ",
                        notice->delivery_time + period <= at ? "ended" : "ends", " at ",
                        FormatTime(ToProto(notice->delivery_time + period)));
      }
      return out;
    };
    if (notice == nullptr || notice->delivery_time + period > at) {
      return conclude(v1::DECISION_REASON_DENIED_NOT_NOTIFIED, 10, "legal basis", detail);
    }
    return conclude(v1::DECISION_REASON_ALLOWED_DEFAULT, 10, "legal basis", detail);
  }
  return conclude(v1::DECISION_REASON_DENIED_NO_CONSENT, 10, "legal basis",
                  [] { return std::string("consent: denied until the user consents"); });
}

}  // namespace consent
