#include "core/policy.h"

#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace consent {
namespace {

using ::testing::HasSubstr;

constexpr char kMinimal[] = R"pb(
  version: "t1"
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
        sensitive_handling: SENSITIVE_HANDLING_EXCLUDE_ALL
      }
      purpose_rules { purpose: "ai_training.generative" prohibited: true }
    }
  }
  jurisdiction_groups {
    name: "california"
    jurisdictions: "US-CA"
    rules {
      purpose_rules {
        purpose: "ai_training"
        legal_basis: LEGAL_BASIS_CONSENT
        allowed_visibilities: VISIBILITY_PUBLIC
        sensitive_handling: SENSITIVE_HANDLING_ALLOW
      }
    }
  }
  jurisdiction_groups {
    name: "us"
    jurisdictions: "US"
    rules {
      purpose_rules {
        purpose: "analytics"
        legal_basis: LEGAL_BASIS_LEGITIMATE_INTEREST
        allowed_visibilities: VISIBILITY_PUBLIC
        sensitive_handling: SENSITIVE_HANDLING_ALLOW
      }
    }
  }
  default_rules {
    purpose_rules {
      purpose: "ai_training"
      legal_basis: LEGAL_BASIS_CONSENT
      allowed_visibilities: VISIBILITY_PUBLIC
      sensitive_handling: SENSITIVE_HANDLING_EXCLUDE_ALL
    }
  }
)pb";

std::string ErrorOf(const std::string& text) {
  auto policy = CompiledPolicy::FromText(text, "test.textproto");
  EXPECT_FALSE(policy.ok());
  if (policy.ok()) return "";
  EXPECT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(policy.status().message());
}

std::string Replace(std::string text, const std::string& from, const std::string& to) {
  size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return at == std::string::npos ? text : text.replace(at, from.size(), to);
}

TEST(PolicyTest, ShippedDefaultPolicyLoads) {
  auto policy = CompiledPolicy::FromFile(testing::DefaultPolicyPath());
  ASSERT_TRUE(policy.ok()) << policy.status();
  EXPECT_FALSE((*policy)->version().empty());
  EXPECT_TRUE((*policy)->HasPurpose("ai_training.generative"));
  const v1::PurposeRule* gb = (*policy)->FindRule("GB", "ai_training.generative");
  ASSERT_NE(gb, nullptr);
  EXPECT_EQ(gb->legal_basis(), v1::LEGAL_BASIS_LEGITIMATE_INTEREST);
  EXPECT_EQ(gb->min_age(), 18);
  const v1::PurposeRule* fr = (*policy)->FindRule("FR", "ai_training");
  ASSERT_NE(fr, nullptr);
  EXPECT_EQ(fr->legal_basis(), v1::LEGAL_BASIS_LEGITIMATE_INTEREST);
  for (const char* elsewhere : {"US", "US-CA", "BR", ""}) {
    const v1::PurposeRule* rule = (*policy)->FindRule(elsewhere, "ai_training");
    ASSERT_NE(rule, nullptr) << elsewhere;
    EXPECT_EQ(rule->legal_basis(), v1::LEGAL_BASIS_CONSENT) << elsewhere;
  }
}

TEST(PolicyTest, FindRuleUsesMostSpecificPurposeAndJurisdiction) {
  auto policy = CompiledPolicy::FromText(kMinimal, "minimal");
  ASSERT_TRUE(policy.ok()) << policy.status();
  const CompiledPolicy& p = **policy;
  EXPECT_FALSE(p.FindRule("GB", "ai_training")->prohibited());
  EXPECT_TRUE(p.FindRule("GB", "ai_training.generative")->prohibited());
  // US-CA has its own group; US-NY falls back to US, which has no
  // ai_training rule.
  EXPECT_EQ(p.FindRule("US-CA", "ai_training")->legal_basis(), v1::LEGAL_BASIS_CONSENT);
  EXPECT_EQ(p.FindRule("US-NY", "ai_training"), nullptr);
  EXPECT_NE(p.FindRule("US-NY", "analytics"), nullptr);
  // Unknown jurisdiction: default rules, which have no analytics rule.
  EXPECT_NE(p.FindRule("JP", "ai_training.generative"), nullptr);
  EXPECT_EQ(p.FindRule("JP", "analytics"), nullptr);
}

// RuleFinder answers as FindRule does, for more jurisdictions than it
// remembers, asked in turn and again (subdivision fallback, unknown, empty).
TEST(PolicyTest, RuleFinderAnswersAsFindRule) {
  auto policy = CompiledPolicy::FromText(kMinimal, "minimal");
  ASSERT_TRUE(policy.ok()) << policy.status();
  const CompiledPolicy& p = **policy;
  const std::vector<std::string> jurisdictions = {"GB", "US-CA", "US-NY", "US", "JP", "",     "FR",
                                                  "DE", "IE",    "ES",    "IT", "NL", "XX-YY"};
  for (const std::string purpose : {"ai_training", "ai_training.generative", "analytics"}) {
    RuleFinder finder(p, purpose);
    for (int round = 0; round < 3; ++round) {
      for (size_t i = 0; i < jurisdictions.size(); ++i) {
        // Each round in a different order, so some repeats are remembered
        // and some have been forgotten.
        const std::string& j = jurisdictions[(i * (round + 1) * 5) % jurisdictions.size()];
        EXPECT_EQ(finder.Find(j), p.FindRule(j, purpose)) << purpose << " in " << j;
      }
    }
  }
  RuleFinder finder(p, "ai_training");
  ASSERT_NE(finder.Find("GB"), nullptr);
  EXPECT_FALSE(finder.Find("GB")->prohibited());
  EXPECT_EQ(finder.Find("US-NY"), nullptr);
}

TEST(PolicyTest, ParentPurpose) {
  EXPECT_EQ(ParentPurpose("a.b.c"), "a.b");
  EXPECT_EQ(ParentPurpose("a"), "");
}

TEST(PolicyTest, RejectsUnknownFieldWithLine) {
  EXPECT_THAT(ErrorOf("version: \"x\"\nflavour: 3\n"), HasSubstr("policy test.textproto: line 2:"));
  EXPECT_THAT(ErrorOf("version: \"x\"\nflavour: 3\n"), HasSubstr("flavour"));
}

TEST(PolicyTest, RejectsEmptyVersion) {
  EXPECT_THAT(ErrorOf(Replace(kMinimal, "version: \"t1\"", "")), HasSubstr("version is required"));
}

TEST(PolicyTest, RejectsDuplicatePurpose) {
  EXPECT_THAT(ErrorOf(Replace(kMinimal, "purposes { name: \"analytics\" }",
                              "purposes { name: \"analytics\" } purposes { name: \"analytics\" }")),
              HasSubstr("line 5: purposes[3]: duplicate purpose \"analytics\""));
}

TEST(PolicyTest, RejectsPurposeWithUndefinedParent) {
  EXPECT_THAT(ErrorOf(Replace(kMinimal, "purposes { name: \"analytics\" }",
                              "purposes { name: \"analytics\" } purposes { name: \"x.y\" }")),
              HasSubstr("line 5: purpose \"x.y\" has undefined parent \"x\""));
}

TEST(PolicyTest, RejectsRuleForUndefinedPurpose) {
  EXPECT_THAT(ErrorOf(Replace(kMinimal, "purpose: \"analytics\"", "purpose: \"marketing\"")),
              HasSubstr("line 35: jurisdiction_groups[2].rules.purpose_rules[0]: purpose "
                        "\"marketing\" is not defined in purposes"));
}

TEST(PolicyTest, RejectsJurisdictionInTwoGroups) {
  EXPECT_THAT(ErrorOf(Replace(kMinimal, "jurisdictions: \"US\"", "jurisdictions: \"GB\"")),
              HasSubstr("line 33: jurisdiction \"GB\" is in two groups: uk and us"));
}

TEST(PolicyTest, RejectsMalformedJurisdiction) {
  EXPECT_THAT(
      ErrorOf(Replace(kMinimal, "jurisdictions: \"US\"", "jurisdictions: \"usa\"")),
      HasSubstr("line 33: jurisdiction_groups[2]: jurisdiction \"usa\" must be an ISO 3166 code"));
}

TEST(PolicyTest, RejectsRuleWithoutLegalBasisOrVisibilities) {
  const std::string text = Replace(
      kMinimal,
      "legal_basis: LEGAL_BASIS_CONSENT\n        allowed_visibilities: VISIBILITY_PUBLIC\n", "");
  const std::string error = ErrorOf(text);
  EXPECT_THAT(error, HasSubstr("jurisdiction_groups[1].rules.purpose_rules[0]: "
                               "legal_basis is required unless prohibited"));
  EXPECT_THAT(error, HasSubstr("jurisdiction_groups[1].rules.purpose_rules[0]: "
                               "allowed_visibilities is required unless prohibited"));
}

TEST(PolicyTest, NoticePeriodOnlyForLegitimateInterest) {
  // GB's ai_training rule: legitimate interest.
  const std::string uk =
      "sensitive_handling: SENSITIVE_HANDLING_EXCLUDE_ALL\n      }\n      "
      "purpose_rules { purpose: \"ai_training.generative\"";
  auto ok = CompiledPolicy::FromText(
      Replace(kMinimal, uk,
              "sensitive_handling: SENSITIVE_HANDLING_EXCLUDE_ALL\n min_notice_days: 3650 }\n "
              "purpose_rules { purpose: \"ai_training.generative\""),
      "test.textproto");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->FindRule("GB", "ai_training.generative")->min_notice_days(), 0);
  EXPECT_EQ((*ok)->FindRule("GB", "ai_training")->min_notice_days(), 3650);

  EXPECT_THAT(ErrorOf(Replace(kMinimal, uk,
                              "sensitive_handling: SENSITIVE_HANDLING_EXCLUDE_ALL\n "
                              "min_notice_days: 3651 }\n purpose_rules { purpose: "
                              "\"ai_training.generative\"")),
              HasSubstr("jurisdiction_groups[0].rules.purpose_rules[0]: min_notice_days must be "
                        "0 to 3650"));
  EXPECT_THAT(ErrorOf(Replace(kMinimal, uk,
                              "sensitive_handling: SENSITIVE_HANDLING_EXCLUDE_ALL\n "
                              "min_notice_days: -1 }\n purpose_rules { purpose: "
                              "\"ai_training.generative\"")),
              HasSubstr("purpose_rules[0]: min_notice_days must be 0 to 3650"));
  // On a consent rule (California), and on a prohibited one.
  EXPECT_THAT(ErrorOf(Replace(kMinimal,
                              "sensitive_handling: SENSITIVE_HANDLING_ALLOW\n      }\n    }\n  }\n "
                              " jurisdiction_groups {\n    name: \"us\"",
                              "sensitive_handling: SENSITIVE_HANDLING_ALLOW min_notice_days: 28 "
                              "}\n }\n }\n jurisdiction_groups {\n name: \"us\"")),
              HasSubstr("jurisdiction_groups[1].rules.purpose_rules[0]: min_notice_days applies to "
                        "legitimate interest only (not to another legal basis)"));
  EXPECT_THAT(
      ErrorOf(Replace(kMinimal, "prohibited: true", "prohibited: true min_notice_days: 28")),
      HasSubstr("jurisdiction_groups[0].rules.purpose_rules[1]: min_notice_days applies to "
                "legitimate interest only (not to a prohibited purpose)"));
}

TEST(PolicyTest, MissingFileIsNotFound) {
  auto policy = CompiledPolicy::FromFile("/nonexistent/policy.textproto");
  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(policy.status().message(), HasSubstr("/nonexistent/policy.textproto"));
}

TEST(PolicyHolderTest, ActivateKeepsHistoryForAsOf) {
  auto a = CompiledPolicy::FromText(kMinimal, "a");
  auto b = CompiledPolicy::FromText(Replace(kMinimal, "\"t1\"", "\"t2\""), "b");
  ASSERT_TRUE(a.ok() && b.ok());
  const absl::Time t1 = absl::FromUnixSeconds(1000), t2 = absl::FromUnixSeconds(2000);
  PolicyHolder holder;
  EXPECT_EQ(holder.Get(), nullptr);
  EXPECT_EQ(holder.Activate(t1, *a), nullptr);
  EXPECT_EQ(holder.Activate(t2, *b)->version(), "t1");
  EXPECT_EQ(holder.Get()->version(), "t2");
  EXPECT_EQ(holder.ActiveAt(t1 - absl::Nanoseconds(1)), nullptr);
  EXPECT_EQ(holder.ActiveAt(t1)->version(), "t1");
  EXPECT_EQ(holder.ActiveAt(t2 - absl::Nanoseconds(1))->version(), "t1");
  EXPECT_EQ(holder.ActiveAt(t2)->version(), "t2");
  EXPECT_EQ(holder.ActiveAt(absl::InfiniteFuture())->version(), "t2");
  EXPECT_EQ(holder.first_activation(), t1);
}

// Checks running while the policy is swapped must each see one whole
// policy: the version and the rules of one text, never a mix.
TEST(PolicyHolderTest, ConcurrentReadersSeeWholePolicies) {
  // Version tN makes US-CA a consent jurisdiction when N is odd and leaves
  // it without an ai_training rule when N is even.
  std::vector<std::shared_ptr<const CompiledPolicy>> versions;
  for (int n = 0; n < 8; ++n) {
    std::string text = Replace(kMinimal, "\"t1\"", absl::StrCat("\"t", n, "\""));
    if (n % 2 == 0)
      text = Replace(text, "purpose: \"ai_training\"\n        legal_basis: LEGAL_BASIS_CONSENT",
                     "purpose: \"analytics\"\n        legal_basis: LEGAL_BASIS_CONSENT");
    auto compiled = CompiledPolicy::FromText(text, "v");
    ASSERT_TRUE(compiled.ok()) << compiled.status();
    versions.push_back(*compiled);
  }
  PolicyHolder holder;
  holder.Activate(absl::FromUnixSeconds(0), versions[0]);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> reads{0}, torn{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        const auto policy = holder.Get();
        const int n = policy->version().back() - '0';
        const bool has_rule = policy->FindRule("US-CA", "ai_training") != nullptr;
        if (has_rule != (n % 2 == 1)) torn.fetch_add(1);
        reads.fetch_add(1);
      }
    });
  }
  for (int i = 1; i <= 2000; ++i) {
    holder.Activate(absl::FromUnixSeconds(i), versions[static_cast<size_t>(i % 8)]);
  }
  // Let the readers overlap the last swaps, then stop them.
  while (reads.load() < 10000) std::this_thread::yield();
  stop.store(true);
  for (auto& t : readers) t.join();
  EXPECT_EQ(torn.load(), 0);
  EXPECT_EQ(holder.Get()->version(), "t0");  // 2000 % 8
  EXPECT_EQ(holder.ActiveAt(absl::FromUnixSeconds(1999))->version(), "t7");
}

}  // namespace
}  // namespace consent
