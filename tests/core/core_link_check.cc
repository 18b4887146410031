// A program linked with consent_core and nothing else of the project's: it
// compiles the shipped policy, makes a user's record into the view
// decisions read, and decides a check. If the core needed gRPC or RocksDB
// this would not link; the CTest that runs it also checks with ldd that
// neither library is loaded. Usage: core_link_check POLICY_FILE.
#include <cstdio>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "core/decision_engine.h"
#include "core/enum_names.h"
#include "core/policy.h"
#include "core/subject_view.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: core_link_check POLICY_FILE\n");
    return 2;
  }
  auto policy = consent::CompiledPolicy::FromFile(argv[1]);
  if (!policy.ok()) {
    std::fprintf(stderr, "%s\n", std::string(policy.status().message()).c_str());
    return 1;
  }
  consent::v1::Subject subject;
  subject.set_user_id("alice");
  subject.mutable_attributes()->set_jurisdiction("GB");
  subject.mutable_attributes()->mutable_birth_date()->set_year(1990);
  subject.mutable_attributes()->mutable_birth_date()->set_month(5);
  subject.mutable_attributes()->mutable_birth_date()->set_day(17);
  consent::v1::Preference* objection = subject.add_preferences();
  objection->set_purpose("ai_training");
  objection->set_state(consent::v1::PREFERENCE_STATE_OBJECTED);
  consent::SubjectViewArena arena;
  consent::v1::Content content;
  content.set_content_id("post-1");
  content.set_content_type(consent::v1::CONTENT_TYPE_POST);
  content.set_visibility(consent::v1::VISIBILITY_PUBLIC);
  content.mutable_create_time()->set_seconds(1'700'000'000);  // 2023-11-14
  const absl::Time at = absl::FromCivil(absl::CivilDay(2026, 6, 1), absl::UTCTimeZone());
  const consent::Verdict verdict = consent::Decide(
      **policy, consent::CheckSubject{arena.Add(subject), {}}, "ai_training", content, at);
  const std::string reason = consent::EnumValueName(consent::v1::DecisionReason_descriptor(),
                                                    verdict.reason, "DECISION_REASON_");
  std::printf("%s\n", reason.c_str());
  return verdict.reason == consent::v1::DECISION_REASON_DENIED_OBJECTION ? 0 : 1;
}
