// The decision rules of docs/decisions.md, as a pure function of the policy,
// the subject's record and the content. Rule 1 (unknown purpose) is the
// caller's: it is a request error, not a decision.
#ifndef CONSENT_SERVER_DECISION_ENGINE_H_
#define CONSENT_SERVER_DECISION_ENGINE_H_

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "consent/v1/types.pb.h"
#include "server/policy.h"

namespace consent {

// Which rule decided, and with what; consumed by Check's explanation and by
// tests. Values are the rule numbers of docs/decisions.md.
struct Verdict {
  v1::DecisionReason reason = v1::DECISION_REASON_UNSPECIFIED;
  int rule = 0;
  // For rules 9: the purpose of the preference that decided.
  std::string preference_purpose;
};

// Decides whether `content` of the subject may be used for `purpose`, which
// must be defined by `policy`. `subject` is nullptr when nothing was ever
// recorded for the user. `at` is the evaluation time. Thread safe.
Verdict Decide(const CompiledPolicy& policy, const v1::Subject* subject, absl::string_view purpose,
               const v1::Content& content, absl::Time at);

inline bool IsAllowed(v1::DecisionReason reason) {
  return reason == v1::DECISION_REASON_ALLOWED_DEFAULT ||
         reason == v1::DECISION_REASON_ALLOWED_CONSENT;
}

// Whole years between `birth` and `at` (UTC); negative if `at` is before
// `birth`.
int AgeInYears(const v1::Date& birth, absl::Time at);

// Whether `preference` is in effect at `at`: effective_time <= at <
// expire_time, an unset bound being open.
bool InEffect(const v1::Preference& preference, absl::Time at);

}  // namespace consent

#endif  // CONSENT_SERVER_DECISION_ENGINE_H_
