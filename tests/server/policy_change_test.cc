// Which policy changes loosen the policy in force, and the permission a
// loosening policy must carry (loosens_version).
#include "server/policy_change.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace consent {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kBase[] = R"pb(
  version: "v1"
  purposes { name: "ai_training" }
  purposes { name: "ai_training.generative" }
  purposes { name: "analytics" }
  jurisdiction_groups {
    name: "uk"
    jurisdictions: "GB"
    rules {
      purpose_rules {
        purpose: "ai_training"
        legal_basis: LEGAL_BASIS_LEGITIMATE_INTEREST
        allowed_visibilities: VISIBILITY_PUBLIC
        excluded_content_types: CONTENT_TYPE_STORY
        sensitive_handling: SENSITIVE_HANDLING_EXCLUDE_ALL
        min_age: 18
        require_known_age: true
      }
    }
  }
  jurisdiction_groups {
    name: "us"
    jurisdictions: "US"
    rules {
      purpose_rules {
        purpose: "ai_training"
        legal_basis: LEGAL_BASIS_CONSENT
        allowed_visibilities: VISIBILITY_PUBLIC
        sensitive_handling: SENSITIVE_HANDLING_EXCLUDE_LISTED
        excluded_sensitive_categories: [ SENSITIVE_CATEGORY_HEALTH, SENSITIVE_CATEGORY_GENETIC ]
        min_age: 13
      }
      purpose_rules { purpose: "ai_training.generative" prohibited: true }
    }
  }
  default_rules {
    purpose_rules {
      purpose: "ai_training"
      legal_basis: LEGAL_BASIS_CONSENT
      allowed_visibilities: VISIBILITY_PUBLIC
      sensitive_handling: SENSITIVE_HANDLING_EXCLUDE_ALL
      min_age: 18
      require_known_age: true
    }
  }
)pb";

std::shared_ptr<const CompiledPolicy> Compile(const std::string& text) {
  auto compiled = CompiledPolicy::FromText(text, "test");
  EXPECT_TRUE(compiled.ok()) << compiled.status();
  return compiled.ok() ? *compiled : nullptr;
}

// kBase with `from` replaced by `to` (once) and the version "v2".
std::string Changed(const std::string& from, const std::string& to) {
  std::string text = kBase;
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  text.replace(text.find("version: \"v1\""), 13, "version: \"v2\"");
  return text;
}

std::vector<std::string> Changes(const std::string& next_text,
                                 std::vector<std::string> in_use = {}) {
  auto current = Compile(kBase);
  auto next = Compile(next_text);
  auto changes = LooseningChanges(*current, *next, [&](const std::vector<std::string>& dropped) {
    std::vector<std::string> used;
    for (const std::string& p : dropped) {
      if (std::find(in_use.begin(), in_use.end(), p) != in_use.end()) used.push_back(p);
    }
    return absl::StatusOr<std::vector<std::string>>(used);
  });
  EXPECT_TRUE(changes.ok()) << changes.status();
  return changes.ok() ? *changes : std::vector<std::string>{"error"};
}

TEST(PolicyChangeTest, TighteningOrRenamingLoosensNothing) {
  EXPECT_THAT(Changes(Changed("version: \"v1\"", "version: \"v1\"")), IsEmpty());
  EXPECT_THAT(Changes(Changed("min_age: 13", "min_age: 16")), IsEmpty());
  EXPECT_THAT(Changes(Changed("legal_basis: LEGAL_BASIS_LEGITIMATE_INTEREST",
                              "legal_basis: LEGAL_BASIS_CONSENT")),
              IsEmpty());
  EXPECT_THAT(Changes(Changed("excluded_sensitive_categories: [ SENSITIVE_CATEGORY_HEALTH, ",
                              "excluded_sensitive_categories: [ SENSITIVE_CATEGORY_HEALTH, "
                              "SENSITIVE_CATEGORY_BIOMETRIC, ")),
              IsEmpty());
  EXPECT_THAT(Changes(Changed("purposes { name: \"analytics\" }", "")), IsEmpty());  // unused
}

TEST(PolicyChangeTest, EachLooseningIsNamed) {
  EXPECT_THAT(Changes(Changed("purpose_rules { purpose: \"ai_training.generative\" prohibited: "
                              "true }",
                              "")),
              ElementsAre("ai_training.generative in US: was prohibited, now allowed"));
  EXPECT_THAT(
      Changes(Changed("default_rules {\n    purpose_rules {\n      purpose: \"ai_training\"",
                      "default_rules {\n    purpose_rules {\n      purpose: \"analytics\"")),
      ElementsAre("analytics in the default rules: had no rule (denied), now allowed"));
  EXPECT_THAT(Changes(Changed("jurisdictions: \"GB\"", "jurisdictions: [ \"GB\", \"IE\" ]")),
              ElementsAre("ai_training in IE: legal basis CONSENT becomes LEGITIMATE_INTEREST",
                          "ai_training.generative in IE: legal basis CONSENT becomes "
                          "LEGITIMATE_INTEREST"));
  EXPECT_THAT(Changes(Changed("allowed_visibilities: VISIBILITY_PUBLIC\n        excluded",
                              "allowed_visibilities: [ VISIBILITY_PUBLIC, VISIBILITY_FRIENDS ]\n"
                              "        excluded")),
              ElementsAre("ai_training in GB: visibility FRIENDS is allowed now",
                          "ai_training.generative in GB: visibility FRIENDS is allowed now"));
  EXPECT_THAT(Changes(Changed("        excluded_content_types: CONTENT_TYPE_STORY\n", "")),
              ElementsAre("ai_training in GB: content type STORY is no longer excluded",
                          "ai_training.generative in GB: content type STORY is no longer "
                          "excluded"));
  EXPECT_THAT(
      Changes(Changed("sensitive_handling: SENSITIVE_HANDLING_EXCLUDE_ALL\n        min_age: 18",
                      "sensitive_handling: SENSITIVE_HANDLING_ALLOW\n        min_age: 18")),
      ElementsAre("ai_training in GB: sensitive handling EXCLUDE_ALL becomes ALLOW",
                  "ai_training.generative in GB: sensitive handling EXCLUDE_ALL becomes ALLOW"));
  EXPECT_THAT(Changes(Changed("[ SENSITIVE_CATEGORY_HEALTH, SENSITIVE_CATEGORY_GENETIC ]",
                              "SENSITIVE_CATEGORY_HEALTH")),
              ElementsAre("ai_training in US: sensitive category GENETIC is no longer excluded"));
  EXPECT_THAT(Changes(Changed("min_age: 13", "min_age: 0")),
              ElementsAre("ai_training in US: min_age 13 becomes 0"));
  EXPECT_THAT(Changes(Changed("min_age: 18\n        require_known_age: true", "min_age: 18")),
              ElementsAre("ai_training in GB: require_known_age is dropped",
                          "ai_training.generative in GB: require_known_age is dropped"));
  EXPECT_THAT(Changes(Changed("purposes { name: \"analytics\" }", ""), {"analytics"}),
              ElementsAre("purpose analytics is dropped while stored preferences or exclusions "
                          "name it"));
}

TEST(PolicyChangeTest, AShorterNoticePeriodLoosens) {
  const std::string gb =
      "min_age: 18\n        require_known_age: true\n      }\n    }\n  }\n"
      "  jurisdiction_groups {\n    name: \"us\"";
  auto with_days = [&](int days) {
    return Changed(gb, absl::StrCat("min_age: 18\n require_known_age: true\n min_notice_days: ",
                                    days, "\n }\n }\n }\n jurisdiction_groups {\n name: \"us\""));
  };
  // Adding a notice period tightens; shortening or dropping it loosens.
  EXPECT_THAT(Changes(with_days(28)), IsEmpty());
  auto current = Compile(with_days(28));
  for (int days : {14, 0}) {
    auto changes = LooseningChanges(
        *current, *Compile(with_days(days)),
        [](const std::vector<std::string>&) { return absl::StatusOr<std::vector<std::string>>(); });
    ASSERT_TRUE(changes.ok());
    EXPECT_THAT(
        *changes,
        ElementsAre(
            absl::StrCat("ai_training in GB: min_notice_days 28 becomes ", days),
            absl::StrCat("ai_training.generative in GB: min_notice_days 28 becomes ", days)));
  }
  auto longer = LooseningChanges(
      *current, *Compile(with_days(56)),
      [](const std::vector<std::string>&) { return absl::StatusOr<std::vector<std::string>>(); });
  ASSERT_TRUE(longer.ok());
  EXPECT_THAT(*longer, IsEmpty());
}

TEST(PolicyChangeTest, ALooseningPolicyMustNameTheVersionItReplaces) {
  auto current = Compile(kBase);
  const std::string loosened = Changed("min_age: 13", "min_age: 0");
  const std::vector<std::string> changes = {"ai_training in US: min_age 13 becomes 0"};
  absl::Status refused = CheckLoosening(*current, *Compile(loosened), changes);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(refused.message(),
            "policy \"v2\" loosens the active policy \"v1\" and it does not say loosens_version; "
            "to activate it, the new file must say loosens_version: \"v1\". Changes: ai_training "
            "in US: min_age 13 becomes 0");
  refused = CheckLoosening(*current, *Compile(loosened + "loosens_version: \"v0\"\n"), changes);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("and it says loosens_version: \"v0\";"));
  EXPECT_TRUE(
      CheckLoosening(*current, *Compile(loosened + "loosens_version: \"v1\"\n"), changes).ok());
  // Nothing loosened: no permission needed.
  EXPECT_TRUE(CheckLoosening(*current, *Compile(loosened), {}).ok());
  // Many changes: the first 20, then how many more.
  std::vector<std::string> many;
  for (int i = 0; i < 25; ++i) many.push_back(absl::StrCat("change ", i));
  refused = CheckLoosening(*current, *Compile(loosened), many);
  EXPECT_THAT(std::string(refused.message()),
              ::testing::EndsWith("change 18; change 19; and 5 more"));
}

}  // namespace
}  // namespace consent
