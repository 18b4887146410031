#include "core/policy.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "core/text_proto.h"
#include "core/validation.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace consent {
namespace {

using ParseTree = google::protobuf::TextFormat::ParseInfoTree;

// "line N: " where the index-th value of `field` (-1: a singular field) of
// a `type` message was parsed, per `tree`; "" when unknown.
std::string LineOf(const ParseTree* tree, const google::protobuf::Descriptor* type,
                   const char* field, int index) {
  if (tree == nullptr) return "";
  const google::protobuf::TextFormat::ParseLocation location =
      tree->GetLocation(type->FindFieldByName(field), index);
  return location.line < 0 ? "" : absl::StrCat("line ", location.line + 1, ": ");
}

// The parse tree of a nested message field, or null.
const ParseTree* Nested(const ParseTree* tree, const google::protobuf::Descriptor* type,
                        const char* field, int index) {
  return tree == nullptr ? nullptr : tree->GetTreeForNested(type->FindFieldByName(field), index);
}

// Validates one rule set; problems go to `errors` prefixed with the line
// and `where`. `tree` locates the rule set's fields in the text.
void ValidateRuleSet(const v1::RuleSet& rules, const std::string& where, const ParseTree* tree,
                     const absl::flat_hash_set<std::string>& purposes,
                     std::vector<std::string>* errors) {
  absl::flat_hash_set<std::string> seen;
  for (int i = 0; i < rules.purpose_rules_size(); ++i) {
    const v1::PurposeRule& rule = rules.purpose_rules(i);
    const std::string at = absl::StrCat(LineOf(tree, v1::RuleSet::descriptor(), "purpose_rules", i),
                                        where, ".purpose_rules[", i, "]");
    if (!purposes.contains(rule.purpose())) {
      errors->push_back(
          absl::StrCat(at, ": purpose \"", rule.purpose(), "\" is not defined in purposes"));
      continue;
    }
    if (!seen.insert(rule.purpose()).second) {
      errors->push_back(absl::StrCat(at, ": a second rule for purpose \"", rule.purpose(), "\""));
    }
    if (rule.min_notice_days() != 0 &&
        (rule.prohibited() || rule.legal_basis() != v1::LEGAL_BASIS_LEGITIMATE_INTEREST)) {
      errors->push_back(
          absl::StrCat(at, ": min_notice_days applies to legitimate interest only (not to ",
                       rule.prohibited() ? "a prohibited purpose" : "another legal basis", ")"));
    } else if (rule.min_notice_days() < 0 || rule.min_notice_days() > kMaxNoticeDays) {
      errors->push_back(absl::StrCat(at, ": min_notice_days must be 0 to ", kMaxNoticeDays));
    }
    if (rule.prohibited()) continue;
    if (rule.legal_basis() == v1::LEGAL_BASIS_UNSPECIFIED) {
      errors->push_back(absl::StrCat(at, ": legal_basis is required unless prohibited"));
    }
    if (rule.allowed_visibilities_size() == 0) {
      errors->push_back(absl::StrCat(at, ": allowed_visibilities is required unless prohibited"));
    }
    if (rule.sensitive_handling() == v1::SENSITIVE_HANDLING_UNSPECIFIED) {
      errors->push_back(absl::StrCat(at, ": sensitive_handling is required unless prohibited"));
    }
    if (rule.sensitive_handling() != v1::SENSITIVE_HANDLING_EXCLUDE_LISTED &&
        rule.excluded_sensitive_categories_size() > 0) {
      errors->push_back(absl::StrCat(
          at, ": excluded_sensitive_categories needs sensitive_handling EXCLUDE_LISTED"));
    }
    if (rule.min_age() < 0 || rule.min_age() > 150) {
      errors->push_back(absl::StrCat(at, ": min_age must be 0 to 150"));
    }
  }
}

}  // namespace

absl::string_view ParentPurpose(absl::string_view purpose) {
  size_t dot = purpose.rfind('.');
  return dot == absl::string_view::npos ? absl::string_view() : purpose.substr(0, dot);
}

absl::StatusOr<std::shared_ptr<const CompiledPolicy>> CompiledPolicy::FromFile(
    const std::string& path) {
  absl::StatusOr<std::string> text = ReadTextFile(path, "policy file");
  if (!text.ok()) return text.status();
  return FromText(*std::move(text), path);
}

absl::StatusOr<std::shared_ptr<const CompiledPolicy>> CompiledPolicy::FromText(
    std::string text, absl::string_view source_name) {
  std::shared_ptr<CompiledPolicy> policy(new CompiledPolicy());
  google::protobuf::TextFormat::Parser parser;
  TextErrorCollector collector;
  parser.RecordErrorsTo(&collector);
  ParseTree tree;  // where each field was parsed, for error lines
  parser.WriteLocationsTo(&tree);
  if (!parser.ParseFromString(text, &policy->proto_)) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy ", source_name, ": ", absl::StrJoin(collector.errors(), "; ")));
  }
  const v1::Policy& p = policy->proto_;
  const google::protobuf::Descriptor* policy_type = v1::Policy::descriptor();
  const google::protobuf::Descriptor* group_type = v1::JurisdictionGroup::descriptor();
  std::vector<std::string> errors;
  if (p.version().empty()) {
    errors.push_back(
        absl::StrCat(LineOf(&tree, policy_type, "version", -1), "version is required"));
  }

  for (int i = 0; i < p.purposes_size(); ++i) {
    const std::string& name = p.purposes(i).name();
    const std::string line = LineOf(&tree, policy_type, "purposes", i);
    if (std::string problem = PurposeProblem(name); !problem.empty()) {
      errors.push_back(absl::StrCat(line, "purposes[", i, "].name \"", name, "\" ", problem));
    } else if (!policy->purposes_.insert(name).second) {
      errors.push_back(absl::StrCat(line, "purposes[", i, "]: duplicate purpose \"", name, "\""));
    }
  }
  for (int i = 0; i < p.purposes_size(); ++i) {
    const std::string& name = p.purposes(i).name();
    absl::string_view parent = ParentPurpose(name);
    if (!parent.empty() && PurposeProblem(name).empty() && !policy->purposes_.contains(parent)) {
      errors.push_back(absl::StrCat(LineOf(&tree, policy_type, "purposes", i), "purpose \"", name,
                                    "\" has undefined parent \"", parent, "\""));
    }
  }
  if (p.purposes_size() == 0) errors.push_back("purposes: at least one is required");

  for (int g = 0; g < p.jurisdiction_groups_size(); ++g) {
    const v1::JurisdictionGroup& group = p.jurisdiction_groups(g);
    const std::string where = absl::StrCat("jurisdiction_groups[", g, "]");
    const ParseTree* group_tree = Nested(&tree, policy_type, "jurisdiction_groups", g);
    if (group.jurisdictions_size() == 0) {
      errors.push_back(absl::StrCat(LineOf(&tree, policy_type, "jurisdiction_groups", g), where,
                                    " (", group.name(), "): no jurisdictions"));
    }
    for (int k = 0; k < group.jurisdictions_size(); ++k) {
      const std::string& code = group.jurisdictions(k);
      const std::string line = LineOf(group_tree, group_type, "jurisdictions", k);
      if (std::string problem = JurisdictionProblem(code); !problem.empty()) {
        errors.push_back(absl::StrCat(line, where, ": jurisdiction \"", code, "\" ", problem));
        continue;
      }
      auto [it, inserted] = policy->group_of_jurisdiction_.emplace(code, g);
      if (!inserted) {
        errors.push_back(absl::StrCat(line, "jurisdiction \"", code, "\" is in two groups: ",
                                      p.jurisdiction_groups(static_cast<int>(it->second)).name(),
                                      " and ", group.name()));
      }
    }
    ValidateRuleSet(group.rules(), where + ".rules", Nested(group_tree, group_type, "rules", -1),
                    policy->purposes_, &errors);
  }
  ValidateRuleSet(p.default_rules(), "default_rules",
                  Nested(&tree, policy_type, "default_rules", -1), policy->purposes_, &errors);

  if (!errors.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy ", source_name, ": ", absl::StrJoin(errors, "; ")));
  }

  auto index = [](const v1::RuleSet& rules) {
    RuleIndex out;
    for (const v1::PurposeRule& rule : rules.purpose_rules()) {
      out.emplace(rule.purpose(), &rule);
    }
    return out;
  };
  for (const v1::JurisdictionGroup& group : p.jurisdiction_groups()) {
    policy->group_rules_.push_back(index(group.rules()));
  }
  policy->default_rules_ = index(p.default_rules());
  policy->text_ = std::move(text);
  return std::shared_ptr<const CompiledPolicy>(std::move(policy));
}

int CompiledPolicy::GroupIndex(absl::string_view jurisdiction) const {
  auto it = group_of_jurisdiction_.find(jurisdiction);
  if (it == group_of_jurisdiction_.end() && jurisdiction.size() > 2) {
    it = group_of_jurisdiction_.find(jurisdiction.substr(0, 2));
  }
  return it == group_of_jurisdiction_.end() ? -1 : static_cast<int>(it->second);
}

absl::string_view CompiledPolicy::GroupName(absl::string_view jurisdiction) const {
  const int group = GroupIndex(jurisdiction);
  return group < 0 ? absl::string_view("default") : proto_.jurisdiction_groups(group).name();
}

const v1::PurposeRule* CompiledPolicy::FindRule(absl::string_view jurisdiction,
                                                absl::string_view purpose) const {
  const int group = GroupIndex(jurisdiction);
  const RuleIndex& rules = group < 0 ? default_rules_ : group_rules_[static_cast<size_t>(group)];
  for (absl::string_view p = purpose; !p.empty(); p = ParentPurpose(p)) {
    auto it = rules.find(p);
    if (it != rules.end()) return it->second;
  }
  return nullptr;
}

std::shared_ptr<const CompiledPolicy> PolicyHolder::Activate(
    absl::Time at, std::shared_ptr<const CompiledPolicy> policy) {
  absl::MutexLock lock(&mu_);
  history_.emplace_back(at, policy);
  return std::atomic_exchange(&current_, std::move(policy));
}

std::shared_ptr<const CompiledPolicy> PolicyHolder::ActiveAt(absl::Time at) const {
  absl::MutexLock lock(&mu_);
  // The last activation at or before `at`.
  auto it = std::upper_bound(history_.begin(), history_.end(), at,
                             [](absl::Time t, const auto& entry) { return t < entry.first; });
  if (it == history_.begin()) return nullptr;
  return std::prev(it)->second;
}

absl::Time PolicyHolder::first_activation() const {
  absl::MutexLock lock(&mu_);
  return history_.empty() ? absl::InfinitePast() : history_.front().first;
}

}  // namespace consent
