#include "server/policy_change.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "core/enum_names.h"

namespace consent {
namespace {

// How strongly a rule keeps sensitive content out: EXCLUDE_ALL > LISTED >
// ALLOW (anything unknown is treated as EXCLUDE_ALL by the engine).
int Strength(v1::SensitiveHandling handling) {
  switch (handling) {
    case v1::SENSITIVE_HANDLING_ALLOW:
      return 0;
    case v1::SENSITIVE_HANDLING_EXCLUDE_LISTED:
      return 1;
    default:
      return 2;
  }
}

template <typename Field>
std::set<int> AsSet(const Field& values) {
  return std::set<int>(values.begin(), values.end());
}

// What `next` allows that `current` denied, for one (jurisdiction, purpose).
void CompareRules(const v1::PurposeRule* current, const v1::PurposeRule* next,
                  const std::string& where, std::vector<std::string>* out) {
  const bool was_allowed = current != nullptr && !current->prohibited();
  const bool is_allowed = next != nullptr && !next->prohibited();
  if (!is_allowed) return;
  if (!was_allowed) {
    out->push_back(absl::StrCat(where, ": ",
                                current == nullptr ? "had no rule (denied)" : "was prohibited",
                                ", now allowed"));
    return;
  }
  if (current->legal_basis() == v1::LEGAL_BASIS_CONSENT &&
      next->legal_basis() != v1::LEGAL_BASIS_CONSENT) {
    out->push_back(absl::StrCat(
        where, ": legal basis CONSENT becomes ",
        EnumValueName(v1::LegalBasis_descriptor(), next->legal_basis(), "LEGAL_BASIS_")));
  }
  const std::set<int> visibilities = AsSet(current->allowed_visibilities());
  for (int v : AsSet(next->allowed_visibilities())) {
    if (!visibilities.count(v)) {
      out->push_back(absl::StrCat(where, ": visibility ",
                                  EnumValueName(v1::Visibility_descriptor(), v, "VISIBILITY_"),
                                  " is allowed now"));
    }
  }
  const std::set<int> excluded_types = AsSet(next->excluded_content_types());
  for (int t : AsSet(current->excluded_content_types())) {
    if (!excluded_types.count(t)) {
      out->push_back(absl::StrCat(where, ": content type ",
                                  EnumValueName(v1::ContentType_descriptor(), t, "CONTENT_TYPE_"),
                                  " is no longer excluded"));
    }
  }
  const int was = Strength(current->sensitive_handling());
  const int is = Strength(next->sensitive_handling());
  if (is < was) {
    out->push_back(absl::StrCat(where, ": sensitive handling ",
                                EnumValueName(v1::SensitiveHandling_descriptor(),
                                              current->sensitive_handling(), "SENSITIVE_HANDLING_"),
                                " becomes ",
                                EnumValueName(v1::SensitiveHandling_descriptor(),
                                              next->sensitive_handling(), "SENSITIVE_HANDLING_")));
  } else if (is == 1 && was == 1) {
    const std::set<int> listed = AsSet(next->excluded_sensitive_categories());
    for (int c : AsSet(current->excluded_sensitive_categories())) {
      if (!listed.count(c)) {
        out->push_back(absl::StrCat(
            where, ": sensitive category ",
            EnumValueName(v1::SensitiveCategory_descriptor(), c, "SENSITIVE_CATEGORY_"),
            " is no longer excluded"));
      }
    }
  }
  if (next->min_age() < current->min_age()) {
    out->push_back(
        absl::StrCat(where, ": min_age ", current->min_age(), " becomes ", next->min_age()));
  }
  if (current->require_known_age() && !next->require_known_age()) {
    out->push_back(absl::StrCat(where, ": require_known_age is dropped"));
  }
  // A notice period matters under legitimate interest only; a CONSENT rule
  // becoming legitimate interest is reported above.
  if (current->legal_basis() == v1::LEGAL_BASIS_LEGITIMATE_INTEREST &&
      next->min_notice_days() < current->min_notice_days()) {
    out->push_back(absl::StrCat(where, ": min_notice_days ", current->min_notice_days(),
                                " becomes ", next->min_notice_days()));
  }
}

}  // namespace

absl::StatusOr<std::vector<std::string>> LooseningChanges(
    const CompiledPolicy& current, const CompiledPolicy& next,
    const std::function<absl::StatusOr<std::vector<std::string>>(
        const std::vector<std::string>& dropped)>& in_use) {
  std::vector<std::string> out;
  std::vector<std::string> dropped;
  std::set<std::string> purposes;
  for (const v1::PurposeDefinition& p : current.proto().purposes()) {
    purposes.insert(p.name());
    if (!next.HasPurpose(p.name())) dropped.push_back(p.name());
  }
  if (!dropped.empty()) {
    auto used = in_use(dropped);
    if (!used.ok()) return used.status();
    for (const std::string& purpose : *used) {
      out.push_back(absl::StrCat("purpose ", purpose,
                                 " is dropped while stored preferences or exclusions name it"));
    }
  }
  // Every jurisdiction either policy names (each decides by its group),
  // and "" for everyone else (the default rules).
  std::set<std::string> jurisdictions = {""};
  for (const CompiledPolicy* policy : {&current, &next}) {
    for (const v1::JurisdictionGroup& group : policy->proto().jurisdiction_groups()) {
      for (const std::string& j : group.jurisdictions()) jurisdictions.insert(j);
    }
  }
  for (const std::string& purpose : purposes) {
    if (!next.HasPurpose(purpose)) continue;
    for (const std::string& j : jurisdictions) {
      const std::string where = absl::StrCat(purpose, " in ", j.empty() ? "the default rules" : j);
      CompareRules(current.FindRule(j, purpose), next.FindRule(j, purpose), where, &out);
    }
  }
  return out;
}

absl::Status CheckLoosening(const CompiledPolicy& current, const CompiledPolicy& next,
                            const std::vector<std::string>& changes) {
  if (changes.empty() || next.proto().loosens_version() == current.version()) {
    return absl::OkStatus();
  }
  constexpr size_t kListed = 20;
  std::vector<std::string> listed(changes.begin(),
                                  changes.begin() + std::min(changes.size(), kListed));
  if (changes.size() > kListed)
    listed.push_back(absl::StrCat("and ", changes.size() - kListed, " more"));
  const std::string permission =
      next.proto().loosens_version().empty()
          ? std::string("it does not say loosens_version")
          : absl::StrCat("it says loosens_version: \"", next.proto().loosens_version(), "\"");
  return absl::FailedPreconditionError(absl::StrCat(
      "policy \"", next.version(), "\" loosens the active policy \"", current.version(), "\" and ",
      permission, "; to activate it, the new file must say loosens_version: \"", current.version(),
      "\". Changes: ", absl::StrJoin(listed, "; ")));
}

}  // namespace consent
