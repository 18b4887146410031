#include "server/policy.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "server/validation.h"

namespace consent {
namespace {

class ErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    // Lines and columns are 0-based in protobuf.
    errors_.push_back(absl::StrCat("line ", line + 1, ":", column + 1, ": ", message));
  }
  void AddWarning(int line, int column, const std::string& message) override {
    AddError(line, column, message);
  }
  const std::vector<std::string>& errors() const { return errors_; }

 private:
  std::vector<std::string> errors_;
};

// Validates one rule set; problems go to `errors` prefixed with `where`.
void ValidateRuleSet(const v1::RuleSet& rules, const std::string& where,
                     const absl::flat_hash_set<std::string>& purposes,
                     std::vector<std::string>* errors) {
  absl::flat_hash_set<std::string> seen;
  for (int i = 0; i < rules.purpose_rules_size(); ++i) {
    const v1::PurposeRule& rule = rules.purpose_rules(i);
    const std::string at = absl::StrCat(where, ".purpose_rules[", i, "]");
    if (!purposes.contains(rule.purpose())) {
      errors->push_back(
          absl::StrCat(at, ": purpose \"", rule.purpose(), "\" is not defined in purposes"));
      continue;
    }
    if (!seen.insert(rule.purpose()).second) {
      errors->push_back(absl::StrCat(at, ": a second rule for purpose \"", rule.purpose(), "\""));
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
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read policy file ", path));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return FromText(buffer.str(), path);
}

absl::StatusOr<std::shared_ptr<const CompiledPolicy>> CompiledPolicy::FromText(
    std::string text, absl::string_view source_name) {
  std::shared_ptr<CompiledPolicy> policy(new CompiledPolicy());
  google::protobuf::TextFormat::Parser parser;
  ErrorCollector collector;
  parser.RecordErrorsTo(&collector);
  if (!parser.ParseFromString(text, &policy->proto_)) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy ", source_name, ": ", absl::StrJoin(collector.errors(), "; ")));
  }
  const v1::Policy& p = policy->proto_;
  std::vector<std::string> errors;
  if (p.version().empty()) errors.push_back("version is required");

  for (int i = 0; i < p.purposes_size(); ++i) {
    const std::string& name = p.purposes(i).name();
    if (std::string problem = PurposeProblem(name); !problem.empty()) {
      errors.push_back(absl::StrCat("purposes[", i, "].name \"", name, "\" ", problem));
    } else if (!policy->purposes_.insert(name).second) {
      errors.push_back(absl::StrCat("purposes[", i, "]: duplicate purpose \"", name, "\""));
    }
  }
  for (const std::string& name : policy->purposes_) {
    absl::string_view parent = ParentPurpose(name);
    if (!parent.empty() && !policy->purposes_.contains(parent)) {
      errors.push_back(
          absl::StrCat("purpose \"", name, "\" has undefined parent \"", parent, "\""));
    }
  }
  if (p.purposes_size() == 0) errors.push_back("purposes: at least one is required");

  for (int g = 0; g < p.jurisdiction_groups_size(); ++g) {
    const v1::JurisdictionGroup& group = p.jurisdiction_groups(g);
    const std::string where = absl::StrCat("jurisdiction_groups[", g, "]");
    if (group.jurisdictions_size() == 0) {
      errors.push_back(absl::StrCat(where, " (", group.name(), "): no jurisdictions"));
    }
    for (const std::string& code : group.jurisdictions()) {
      if (std::string problem = JurisdictionProblem(code); !problem.empty()) {
        errors.push_back(absl::StrCat(where, ": jurisdiction \"", code, "\" ", problem));
        continue;
      }
      auto [it, inserted] = policy->group_of_jurisdiction_.emplace(code, g);
      if (!inserted) {
        errors.push_back(absl::StrCat("jurisdiction \"", code, "\" is in two groups: ",
                                      p.jurisdiction_groups(static_cast<int>(it->second)).name(),
                                      " and ", group.name()));
      }
    }
    ValidateRuleSet(group.rules(), where + ".rules", policy->purposes_, &errors);
  }
  ValidateRuleSet(p.default_rules(), "default_rules", policy->purposes_, &errors);

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
