// Policy text through parsing and validation: never a crash; a policy that
// loads can be compared with the shipped one (the loosening check) and
// answers FindRule for its own jurisdictions and purposes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/policy.h"
#include "server/policy_change.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto policy = consent::CompiledPolicy::FromText(
      std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  if (!policy.ok()) return 0;
  static const auto shipped =
      *consent::CompiledPolicy::FromFile(CONSENT_SOURCE_DIR "/deploy/policy/default.textproto");
  auto none = [](const std::vector<std::string>&) {
    return absl::StatusOr<std::vector<std::string>>(std::vector<std::string>{});
  };
  for (const auto& [from, to] :
       {std::make_pair(shipped, *policy), std::make_pair(*policy, shipped)}) {
    auto changes = consent::LooseningChanges(*from, *to, none);
    if (changes.ok()) consent::CheckLoosening(*from, *to, *changes).IgnoreError();
  }
  for (const auto& group : (*policy)->proto().jurisdiction_groups()) {
    for (const std::string& j : group.jurisdictions()) {
      for (const auto& purpose : (*policy)->proto().purposes()) {
        (*policy)->FindRule(j, purpose.name());
      }
    }
  }
  return 0;
}
