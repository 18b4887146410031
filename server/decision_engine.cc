#include "server/decision_engine.h"

#include <algorithm>

#include "absl/time/civil_time.h"
#include "google/protobuf/util/time_util.h"

namespace consent {
namespace {

absl::Time FromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

bool SensitiveDenied(const v1::PurposeRule& rule, const v1::Content& content) {
  if (content.sensitive_categories_size() == 0) return false;
  switch (rule.sensitive_handling()) {
    case v1::SENSITIVE_HANDLING_ALLOW:
      return false;
    case v1::SENSITIVE_HANDLING_EXCLUDE_LISTED:
      for (int c : content.sensitive_categories()) {
        const auto& listed = rule.excluded_sensitive_categories();
        if (std::find(listed.begin(), listed.end(), c) != listed.end()) return true;
      }
      return false;
    default:  // EXCLUDE_ALL, and anything unknown: fail closed
      return true;
  }
}

// Rule 7. The author's age at the content's create_time; when create_time is
// unknown the age now is an upper bound for it, so a subject under min_age
// now is certainly a minor then.
bool MinorDenied(const v1::PurposeRule& rule, const v1::Subject* subject,
                 const v1::Content& content, absl::Time at) {
  if (rule.min_age() <= 0 && !rule.require_known_age()) return false;
  const bool birth_known = subject != nullptr && subject->attributes().has_birth_date();
  if (!birth_known) return rule.require_known_age();
  const v1::Date& birth = subject->attributes().birth_date();
  if (content.has_create_time()) {
    return AgeInYears(birth, FromProto(content.create_time())) < rule.min_age();
  }
  if (AgeInYears(birth, at) < rule.min_age()) return true;
  return rule.require_known_age();
}

}  // namespace

int AgeInYears(const v1::Date& birth, absl::Time at) {
  const absl::CivilDay day = absl::ToCivilDay(at, absl::UTCTimeZone());
  int age = static_cast<int>(day.year()) - birth.year();
  if (day.month() < birth.month() || (day.month() == birth.month() && day.day() < birth.day())) {
    --age;
  }
  return age;
}

bool InEffect(const v1::Preference& preference, absl::Time at) {
  if (preference.has_effective_time() && at < FromProto(preference.effective_time())) {
    return false;
  }
  if (preference.has_expire_time() && at >= FromProto(preference.expire_time())) {
    return false;
  }
  return true;
}

Verdict Decide(const CompiledPolicy& policy, const v1::Subject* subject, absl::string_view purpose,
               const v1::Content& content, absl::Time at) {
  Verdict v;
  auto conclude = [&v](v1::DecisionReason reason, int rule) {
    v.reason = reason;
    v.rule = rule;
    return v;
  };
  // Rule 2: deleted accounts.
  if (subject != nullptr && subject->attributes().account_state() == v1::ACCOUNT_STATE_DELETED) {
    return conclude(v1::DECISION_REASON_DENIED_ACCOUNT_DELETED, 2);
  }
  // Rule 3: the policy must have a rule allowing the purpose here.
  const std::string empty;
  const std::string& jurisdiction =
      subject != nullptr ? subject->attributes().jurisdiction() : empty;
  const v1::PurposeRule* rule = policy.FindRule(jurisdiction, purpose);
  if (rule == nullptr || rule->prohibited()) {
    return conclude(v1::DECISION_REASON_DENIED_POLICY, 3);
  }
  // Rule 4: private messages never; other types as the rule says.
  const auto& excluded_types = rule->excluded_content_types();
  if (content.content_type() == v1::CONTENT_TYPE_MESSAGE ||
      std::find(excluded_types.begin(), excluded_types.end(), content.content_type()) !=
          excluded_types.end()) {
    return conclude(v1::DECISION_REASON_DENIED_CONTENT_TYPE, 4);
  }
  // Rule 5: visibility.
  const auto& visibilities = rule->allowed_visibilities();
  if (std::find(visibilities.begin(), visibilities.end(), content.visibility()) ==
      visibilities.end()) {
    return conclude(v1::DECISION_REASON_DENIED_NOT_PUBLIC, 5);
  }
  // Rule 6: special-category data.
  if (SensitiveDenied(*rule, content)) {
    return conclude(v1::DECISION_REASON_DENIED_SENSITIVE, 6);
  }
  // Rule 7: minors.
  if (MinorDenied(*rule, subject, content, at)) {
    return conclude(v1::DECISION_REASON_DENIED_MINOR, 7);
  }
  // Rule 8 (per-content exclusions) is not evaluated yet: SetContentExclusion
  // is not implemented, so no exclusion can exist.

  // Rule 9: the most specific explicit preference in effect along the path.
  if (subject != nullptr && subject->preferences_size() > 0) {
    for (absl::string_view p = purpose; !p.empty(); p = ParentPurpose(p)) {
      for (const v1::Preference& pref : subject->preferences()) {
        if (pref.purpose() != p || !InEffect(pref, at)) continue;
        v.preference_purpose = pref.purpose();
        if (pref.state() == v1::PREFERENCE_STATE_OBJECTED) {
          return conclude(v1::DECISION_REASON_DENIED_OBJECTION, 9);
        }
        if (pref.state() == v1::PREFERENCE_STATE_CONSENTED) {
          return conclude(v1::DECISION_REASON_ALLOWED_CONSENT, 9);
        }
      }
    }
  }
  // Rule 10: the legal basis decides.
  if (rule->legal_basis() == v1::LEGAL_BASIS_LEGITIMATE_INTEREST) {
    return conclude(v1::DECISION_REASON_ALLOWED_DEFAULT, 10);
  }
  return conclude(v1::DECISION_REASON_DENIED_NO_CONSENT, 10);
}

}  // namespace consent
