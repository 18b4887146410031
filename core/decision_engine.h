// The decision rules of docs/decisions.md, as a pure function of the policy,
// the subject's record, the user's exclusions of the content and the
// content itself. Rule 1 (unknown purpose) is the caller's: it is a request
// error, not a decision.
#ifndef CONSENT_CORE_DECISION_ENGINE_H_
#define CONSENT_CORE_DECISION_ENGINE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "consent/v1/types.pb.h"
#include "core/policy.h"
#include "core/subject_view.h"

namespace consent {

// Which rule decided. `rule` is its number in docs/decisions.md.
struct Verdict {
  v1::DecisionReason reason = v1::DECISION_REASON_UNSPECIFIED;
  int rule = 0;
};

struct CheckSubject {
  // nullptr when nothing was ever recorded for the user.
  const SubjectView* record = nullptr;
  // Purposes for which the user excluded the content being checked.
  absl::Span<const std::string> excluded_purposes;
};

// Decides whether `content` may be used for `purpose`, which must be
// defined by `policy`, at evaluation time `at`. When `explanation` is not
// null, appends one entry per rule evaluated, in order, ending with the rule
// that decided. `rules`, when not null, finds the rule for `purpose` in
// `policy` (a batch's, shared by its items); then the call is as thread safe
// as `rules`. Thread safe otherwise.
Verdict Decide(const CompiledPolicy& policy, const CheckSubject& subject, absl::string_view purpose,
               const v1::Content& content, absl::Time at,
               std::vector<v1::RuleEvaluation>* explanation = nullptr, RuleFinder* rules = nullptr);

inline bool IsAllowed(v1::DecisionReason reason) {
  return reason == v1::DECISION_REASON_ALLOWED_DEFAULT ||
         reason == v1::DECISION_REASON_ALLOWED_CONSENT;
}

// The answer for `verdict`, made under `policy` at `revision`: what the
// server's checks and an offline copy return alike.
inline void FillDecision(const Verdict& verdict, const CompiledPolicy& policy, int64_t revision,
                         v1::Decision* decision) {
  decision->set_allowed(IsAllowed(verdict.reason));
  decision->set_reason(verdict.reason);
  decision->set_policy_version(policy.version());
  decision->set_revision(revision);
}

// A calendar date (proleptic Gregorian).
struct CivilDate {
  int64_t year;
  int month;  // 1-12
  int day;    // 1-31
};

// The UTC date of `at`, as absl::ToCivilDay(at, absl::UTCTimeZone()) gives
// it, by integer arithmetic: every decision's age check needs it, and the
// general time-zone path cost about 2% of the machine under BatchCheck
// (docs/performance.md). Remembers the last day it was asked about, per
// thread: the rules alone (offline_bench BM_RulesAlone/1, medians of 3
// alternating runs) went from 24.9 to 16.9 ns a decision.
CivilDate UtcDate(absl::Time at);

// Whole years between `birth` and `at` (UTC); negative if `at` is before
// `birth`.
int AgeInYears(const DateView& birth, absl::Time at);

// Whether `preference` is in effect at `at`: effective_time <= at <
// expire_time, an unset bound being open.
bool InEffect(const PreferenceView& preference, absl::Time at);

// The notice covering `purpose` (for it or an ancestor) delivered first;
// null when there is none.
const NoticeView* FirstNotice(const SubjectView& subject, absl::string_view purpose);

// A notice period of `days` days of 24 hours: a notice delivered at t
// counts from t + NoticePeriod(days) on.
inline absl::Duration NoticePeriod(int days) { return absl::Hours(24) * days; }

// Whether `ancestor` is `purpose` or one of its ancestors on the dotted path.
bool CoversPurpose(absl::string_view ancestor, absl::string_view purpose);

}  // namespace consent

#endif  // CONSENT_CORE_DECISION_ENGINE_H_
