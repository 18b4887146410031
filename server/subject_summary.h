// GetSubjectSummary: what the registry answers now, for each purpose of the
// policy, for a public post of the user's created now — what an account
// settings page shows under "Your information and AI".
#ifndef CONSENT_SERVER_SUBJECT_SUMMARY_H_
#define CONSENT_SERVER_SUBJECT_SUMMARY_H_

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "consent/v1/registry.pb.h"
#include "core/policy.h"
#include "storage/consent_store.h"

namespace consent {

// Fills `response` for `request.user_id` under `policy` at `now`: for each
// purpose (in the policy's order) the decision for a PUBLIC POST created at
// `now` with no sensitive data and no exclusion, the reason in plain
// words, the legal basis, the user's preference that decides, the first
// notice covering the purpose and when its notice period ends. A user never
// recorded gets the answers for an unknown user (`recorded` false).
// Thread safe. Errors: kInvalidArgument naming user_id; storage failures.
absl::Status SummarizeSubject(const v1::GetSubjectSummaryRequest& request,
                              storage::ConsentStore& store, const CompiledPolicy& policy,
                              absl::Time now, v1::GetSubjectSummaryResponse* response);

}  // namespace consent

#endif  // CONSENT_SERVER_SUBJECT_SUMMARY_H_
