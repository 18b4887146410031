// Whether a new policy loosens the one in force: allows something that
// one denied. A loosening policy is activated only when its own text says
// so (Policy.loosens_version naming the version it replaces), whichever
// way it arrives (ReloadPolicy, SIGHUP, the file at start), so the
// permission is recorded with the policy itself (docs/decisions.md,
// "Policy versions and reloads").
#ifndef CONSENT_SERVER_POLICY_CHANGE_H_
#define CONSENT_SERVER_POLICY_CHANGE_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/policy.h"

namespace consent {

// Each way `next` allows what `current` denies, one sentence each, in a
// fixed order (by jurisdiction group, then purpose): a purpose dropped
// while stored preferences or exclusions name it (`in_use` says which of
// the dropped purposes are; it is called only when some are dropped); a
// (jurisdiction, purpose) with no rule or a prohibition that is now
// allowed; consent to legitimate interest; more visibilities; fewer
// excluded content types; a weaker sensitive handling or fewer excluded
// categories; a lower min_age; require_known_age dropped. Empty when
// `next` loosens nothing.
absl::StatusOr<std::vector<std::string>> LooseningChanges(
    const CompiledPolicy& current, const CompiledPolicy& next,
    const std::function<
        absl::StatusOr<std::vector<std::string>>(const std::vector<std::string>& dropped)>& in_use);

// OK when `next` may replace `current`: it loosens nothing, or it says
// loosens_version: "<current's version>". Otherwise kFailedPrecondition
// naming each change (the first 20, then how many more).
absl::Status CheckLoosening(const CompiledPolicy& current, const CompiledPolicy& next,
                            const std::vector<std::string>& changes);

}  // namespace consent

#endif  // CONSENT_SERVER_POLICY_CHANGE_H_
