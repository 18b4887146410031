// The decision engine from outside, over gRPC: a real consentd server
// (in-process, on loopback, with a real RocksDB) whose clock the test moves,
// so time-dependent rules are tested without sleeping.
#include <atomic>
#include <random>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "client/consent_client.h"
#include "core/proto_time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/fake_clock.h"
#include "tests/in_process_server.h"
#include "tests/server/reference_model.h"
#include "tests/test_util.h"

namespace consent {
namespace {

using ::consent::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

const absl::Time kStart =
    absl::FromCivil(absl::CivilSecond(2026, 1, 1, 0, 0, 0), absl::UTCTimeZone());

class DecisionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    policy_path_ = dir_.Sub("policy.textproto");
    testing::WriteFile(policy_path_, testing::ReadFile(testing::DefaultPolicyPath()));
    StartServer();
  }
  void TearDown() override {
    if (server_) {
      EXPECT_TRUE(server_->Shutdown().ok());
    }
  }

  void StartServer() {
    ServerOptions options = testing::InProcessOptions(dir_.Sub("data"), policy_path_);
    auto server = ConsentServer::Start(options, &clock_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = Client::Connect(server_->listen_address());
  }

  void RestartServer() {
    ASSERT_TRUE(server_->Shutdown().ok());
    server_.reset();
    StartServer();
  }

  void Attributes(const std::string& user, const std::string& jurisdiction, int birth_year) {
    v1::UpdateSubjectRequest request;
    request.set_user_id(user);
    request.mutable_attributes()->set_jurisdiction(jurisdiction);
    auto* birth = request.mutable_attributes()->mutable_birth_date();
    birth->set_year(birth_year);
    birth->set_month(6);
    birth->set_day(15);
    request.mutable_update_mask()->add_paths("jurisdiction");
    request.mutable_update_mask()->add_paths("birth_date");
    auto response = client_->UpdateSubject(request);
    ASSERT_TRUE(response.ok()) << response.status();
  }

  int64_t Set(const std::string& user, v1::PreferenceState state,
              const std::string& purpose = "ai_training") {
    v1::SetPreferenceRequest request;
    request.set_user_id(user);
    request.set_purpose(purpose);
    request.set_state(state);
    auto response = client_->SetPreference(request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? response->revision() : -1;
  }

  absl::StatusOr<int64_t> Exclude(const std::string& user, const std::string& content,
                                  const std::string& purpose, bool excluded = true) {
    v1::SetContentExclusionRequest request;
    request.set_user_id(user);
    request.set_content_id(content);
    request.set_purpose(purpose);
    request.set_excluded(excluded);
    auto response = client_->SetContentExclusion(request);
    if (!response.ok()) return response.status();
    return response->revision();
  }

  static v1::Content Post(const std::string& id) {
    v1::Content content;
    content.set_content_id(id);
    content.set_content_type(v1::CONTENT_TYPE_POST);
    content.set_visibility(v1::VISIBILITY_PUBLIC);
    *content.mutable_create_time() = ToProto(absl::FromUnixSeconds(1'700'000'000));  // 2023-11-14
    return content;
  }

  absl::StatusOr<v1::CheckResponse> Check(const std::string& user, const std::string& content_id,
                                          const std::string& purpose = "ai_training",
                                          std::optional<absl::Time> as_of = std::nullopt,
                                          bool explain = false) {
    v1::CheckRequest request;
    request.set_purpose(purpose);
    request.set_user_id(user);
    *request.mutable_content() = Post(content_id);
    if (as_of) *request.mutable_as_of() = ToProto(*as_of);
    request.set_explain(explain);
    return client_->Check(request);
  }

  v1::DecisionReason Reason(const std::string& user, const std::string& content_id,
                            const std::string& purpose = "ai_training",
                            std::optional<absl::Time> as_of = std::nullopt) {
    auto response = Check(user, content_id, purpose, as_of);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? response->decision().reason() : v1::DECISION_REASON_UNSPECIFIED;
  }

  TempDir dir_;
  FakeClock clock_{kStart};
  std::string policy_path_;
  std::unique_ptr<ConsentServer> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(DecisionsTest, ExclusionDeniesThatItemForThePurposeAndItsChildren) {
  Attributes("alice", "GB", 1980);
  ASSERT_TRUE(Exclude("alice", "p1", "ai_training").ok());
  EXPECT_EQ(Reason("alice", "p1", "ai_training.generative"),
            v1::DECISION_REASON_DENIED_CONTENT_EXCLUDED);
  EXPECT_EQ(Reason("alice", "p1"), v1::DECISION_REASON_DENIED_CONTENT_EXCLUDED);
  EXPECT_EQ(Reason("alice", "p2"), v1::DECISION_REASON_ALLOWED_DEFAULT);

  // An exclusion for a child does not reach the parent or a sibling.
  ASSERT_TRUE(Exclude("alice", "p3", "ai_training.generative").ok());
  EXPECT_EQ(Reason("alice", "p3", "ai_training.generative"),
            v1::DECISION_REASON_DENIED_CONTENT_EXCLUDED);
  EXPECT_EQ(Reason("alice", "p3", "ai_training"), v1::DECISION_REASON_ALLOWED_DEFAULT);
  EXPECT_EQ(Reason("alice", "p3", "ai_training.ranking"), v1::DECISION_REASON_ALLOWED_DEFAULT);

  // Including the item again allows it; the count follows.
  ASSERT_TRUE(Exclude("alice", "p1", "ai_training", /*excluded=*/false).ok());
  EXPECT_EQ(Reason("alice", "p1"), v1::DECISION_REASON_ALLOWED_DEFAULT);
  v1::GetSubjectRequest get;
  get.set_user_id("alice");
  EXPECT_EQ(client_->GetSubject(get)->subject().exclusion_count(), 1);

  // Exclusion beats consent (rule 8 before 9); a minor stays a minor (7 before 8).
  Set("alice", v1::PREFERENCE_STATE_CONSENTED);
  EXPECT_EQ(Reason("alice", "p3", "ai_training.generative"),
            v1::DECISION_REASON_DENIED_CONTENT_EXCLUDED);
  Attributes("kid", "GB", 2015);
  ASSERT_TRUE(Exclude("kid", "k1", "ai_training").ok());
  EXPECT_EQ(Reason("kid", "k1"), v1::DECISION_REASON_DENIED_MINOR);
}

TEST_F(DecisionsTest, ExclusionIsValidated) {
  auto bad = Exclude("alice", "", "ai_training.unknown");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(FieldViolations(bad.status()),
              ElementsAre("content_id: is required",
                          "purpose: \"ai_training.unknown\" is not defined by policy version "
                          "2026-11-27.1"));
}

TEST_F(DecisionsTest, ExplainListsEachRuleUpToTheDecidingOne) {
  Attributes("alice", "GB", 1980);
  const int64_t objected = Set("alice", v1::PREFERENCE_STATE_OBJECTED);
  auto response = Check("alice", "p1", "ai_training.generative", std::nullopt, /*explain=*/true);
  ASSERT_TRUE(response.ok()) << response.status();
  std::vector<int> rules;
  for (const auto& e : response->explanation()) rules.push_back(e.rule());
  EXPECT_THAT(rules, ElementsAre(1, 2, 3, 4, 5, 6, 7, 8, 9));
  const v1::RuleEvaluation& last = response->explanation(8);
  EXPECT_EQ(last.outcome(), v1::RULE_OUTCOME_DECIDED);
  EXPECT_EQ(last.name(), "preference");
  EXPECT_EQ(last.detail(), absl::StrCat("OBJECTED for ai_training, set at revision ", objected));
  EXPECT_EQ(response->explanation(2).detail(),
            "jurisdiction GB: rules of group uk, rule for ai_training: LEGITIMATE_INTEREST");
  EXPECT_EQ(response->explanation(6).detail(),
            "min_age 18, age must be known; author was 43 at create_time 2023-11-14T22:13:20Z");
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(response->explanation(i).outcome(), v1::RULE_OUTCOME_PASSED) << i;
  }
  // Without explain, no explanation.
  EXPECT_EQ(Check("alice", "p1")->explanation_size(), 0);
}

TEST_F(DecisionsTest, ExpiryAndEffectiveTimesFollowTheClock) {
  Attributes("alice", "GB", 1980);
  v1::SetPreferenceRequest request;
  request.set_user_id("alice");
  request.set_purpose("ai_training");
  request.set_state(v1::PREFERENCE_STATE_OBJECTED);
  *request.mutable_effective_time() = ToProto(kStart + absl::Hours(24));
  *request.mutable_expire_time() = ToProto(kStart + absl::Hours(48));
  ASSERT_TRUE(client_->SetPreference(request).ok());
  EXPECT_EQ(Reason("alice", "p1"), v1::DECISION_REASON_ALLOWED_DEFAULT);
  clock_.Advance(absl::Hours(24));
  EXPECT_EQ(Reason("alice", "p1"), v1::DECISION_REASON_DENIED_OBJECTION);
  clock_.Advance(absl::Hours(24));
  EXPECT_EQ(Reason("alice", "p1"), v1::DECISION_REASON_ALLOWED_DEFAULT);
}

TEST_F(DecisionsTest, AsOfAnswersFromHistory) {
  Attributes("alice", "GB", 1980);  // at kStart
  clock_.Advance(absl::Hours(1));
  Set("alice", v1::PREFERENCE_STATE_OBJECTED);  // kStart + 1h
  clock_.Advance(absl::Hours(1));
  ASSERT_TRUE(Exclude("alice", "p9", "ai_training").ok());  // kStart + 2h
  clock_.Advance(absl::Hours(1));
  v1::DeleteSubjectRequest del;
  del.set_user_id("alice");
  ASSERT_TRUE(client_->DeleteSubject(del).ok());  // kStart + 3h
  clock_.Advance(absl::Hours(1));

  EXPECT_EQ(Reason("alice", "p1"), v1::DECISION_REASON_DENIED_ACCOUNT_DELETED);
  EXPECT_EQ(Reason("alice", "p1", "ai_training", kStart - absl::Seconds(1) + absl::Seconds(1)),
            v1::DECISION_REASON_ALLOWED_DEFAULT);
  EXPECT_EQ(Reason("alice", "p1", "ai_training", kStart + absl::Minutes(59)),
            v1::DECISION_REASON_ALLOWED_DEFAULT);
  EXPECT_EQ(Reason("alice", "p1", "ai_training", kStart + absl::Hours(1)),
            v1::DECISION_REASON_DENIED_OBJECTION);
  EXPECT_EQ(Reason("alice", "p9", "ai_training", kStart + absl::Hours(2)),
            v1::DECISION_REASON_DENIED_CONTENT_EXCLUDED);
  EXPECT_EQ(Reason("alice", "p9", "ai_training", kStart + absl::Minutes(119)),
            v1::DECISION_REASON_DENIED_OBJECTION);
  EXPECT_EQ(Reason("alice", "p1", "ai_training", kStart + absl::Hours(3)),
            v1::DECISION_REASON_DENIED_ACCOUNT_DELETED);
  // Before alice was recorded at all: no record, age unknown.
  EXPECT_EQ(Reason("bob", "p1", "ai_training", kStart), v1::DECISION_REASON_DENIED_MINOR);

  // The revision of an as_of decision is the subject's last revision then.
  auto then = Check("alice", "p1", "ai_training", kStart + absl::Minutes(90));
  ASSERT_TRUE(then.ok());
  EXPECT_EQ(then->decision().revision(), 2);

  // BatchCheck answers as_of too, in order.
  v1::BatchCheckRequest batch;
  batch.set_purpose("ai_training");
  *batch.mutable_as_of() = ToProto(kStart + absl::Minutes(150));
  for (const char* id : {"p1", "p9", "p1"}) {
    v1::CheckItem* item = batch.add_items();
    item->set_user_id("alice");
    *item->mutable_content() = Post(id);
  }
  auto decisions = client_->BatchCheck(batch);
  ASSERT_TRUE(decisions.ok()) << decisions.status();
  std::vector<v1::DecisionReason> reasons;
  for (const auto& d : decisions->decisions()) reasons.push_back(d.reason());
  EXPECT_THAT(reasons, ElementsAre(v1::DECISION_REASON_DENIED_OBJECTION,
                                   v1::DECISION_REASON_DENIED_CONTENT_EXCLUDED,
                                   v1::DECISION_REASON_DENIED_OBJECTION));
  // The response's revision is the registry's when the history was read
  // (all four writes), whatever the as_of time.
  EXPECT_EQ(decisions->revision(), 4);
}

TEST_F(DecisionsTest, AsOfOutsideHistoryIsRejected) {
  auto future = Check("alice", "p1", "ai_training", clock_.Now() + absl::Seconds(1));
  EXPECT_EQ(future.status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_EQ(FieldViolations(future.status()).size(), 1u);
  EXPECT_THAT(FieldViolations(future.status())[0], HasSubstr("as_of: is in the future"));
  auto before = Check("alice", "p1", "ai_training", kStart - absl::Seconds(1));
  EXPECT_EQ(before.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(before.status().message(), HasSubstr("before the registry's first policy"));
  EXPECT_EQ(Reason("alice", "p1", "ai_training", clock_.Now()), v1::DECISION_REASON_DENIED_MINOR);
}

// A create_time in the future would make a minor of today old enough
// (rule 7): more than 5 minutes after the evaluation time it is refused,
// within them the evaluation time counts.
TEST_F(DecisionsTest, CreateTimeAfterTheEvaluationTime) {
  v1::UpdateSubjectRequest attributes;
  attributes.set_user_id("minnie");
  attributes.mutable_attributes()->set_jurisdiction("GB");
  auto* birth = attributes.mutable_attributes()->mutable_birth_date();
  birth->set_year(2008);  // 18 on 2026-01-02
  birth->set_month(1);
  birth->set_day(2);
  attributes.mutable_update_mask()->add_paths("jurisdiction");
  attributes.mutable_update_mask()->add_paths("birth_date");
  ASSERT_TRUE(client_->UpdateSubject(attributes).ok());
  clock_.Set(absl::FromCivil(absl::CivilSecond(2026, 1, 1, 23, 58, 0), absl::UTCTimeZone()));

  auto check = [&](absl::Time created, std::optional<absl::Time> as_of = std::nullopt) {
    v1::CheckRequest request;
    request.set_purpose("ai_training");
    request.set_user_id("minnie");
    *request.mutable_content() = Post("p1");
    *request.mutable_content()->mutable_create_time() = ToProto(created);
    if (as_of) *request.mutable_as_of() = ToProto(*as_of);
    return client_->Check(request);
  };
  // Three minutes ahead, past her birthday: the evaluation time counts.
  auto skewed = check(clock_.Now() + absl::Minutes(3));
  ASSERT_TRUE(skewed.ok()) << skewed.status();
  EXPECT_EQ(skewed->decision().reason(), v1::DECISION_REASON_DENIED_MINOR);
  auto future = check(clock_.Now() + absl::Minutes(5) + absl::Seconds(1));
  EXPECT_EQ(future.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(FieldViolations(future.status()),
              ElementsAre("content.create_time: is 2026-01-02T00:03:01+00:00, more than 5 "
                          "minutes after the evaluation time 2026-01-01T23:58:00+00:00"));
  // Against as_of, the same bound.
  auto as_of = check(kStart + absl::Minutes(6), kStart);
  EXPECT_EQ(as_of.status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_EQ(FieldViolations(as_of.status()).size(), 1u);
  EXPECT_THAT(FieldViolations(as_of.status())[0], HasSubstr("content.create_time: is "));

  // In a batch, that item's answer is the error naming it; the others are
  // decided.
  v1::BatchCheckRequest batch;
  batch.set_purpose("ai_training");
  for (absl::Duration ahead : {absl::Minutes(1), absl::Hours(24)}) {
    v1::CheckItem* item = batch.add_items();
    item->set_user_id("minnie");
    *item->mutable_content() = Post("p1");
    *item->mutable_content()->mutable_create_time() = ToProto(clock_.Now() + ahead);
  }
  auto batched = client_->BatchCheck(batch);
  ASSERT_TRUE(batched.ok()) << batched.status();
  EXPECT_EQ(batched->decisions(0).reason(), v1::DECISION_REASON_DENIED_MINOR);
  EXPECT_FALSE(batched->decisions(1).allowed());
  EXPECT_EQ(batched->decisions(1).error().code(),
            static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(batched->decisions(1).error().message(),
              HasSubstr("items[1].content.create_time: is "));
}

// Rule 9 over gRPC, now and as_of: an objection recorded later on an
// ancestor overrides an earlier consent on a descendant; a later consent on
// an ancestor never overrides a descendant's objection.
TEST_F(DecisionsTest, LaterAncestorObjectionOverridesEarlierConsent) {
  Attributes("alice", "GB", 1980);
  Set("alice", v1::PREFERENCE_STATE_CONSENTED, "ai_training.safety");
  EXPECT_EQ(Reason("alice", "p1", "ai_training.safety"), v1::DECISION_REASON_ALLOWED_CONSENT);
  clock_.Advance(absl::Hours(1));
  const absl::Time consented = clock_.Now();
  clock_.Advance(absl::Hours(1));
  Set("alice", v1::PREFERENCE_STATE_OBJECTED, "ai_training");
  EXPECT_EQ(Reason("alice", "p1", "ai_training.safety"), v1::DECISION_REASON_DENIED_OBJECTION);
  EXPECT_EQ(Reason("alice", "p1", "ai_training.safety", consented),
            v1::DECISION_REASON_ALLOWED_CONSENT);
  auto explained = Check("alice", "p1", "ai_training.safety", std::nullopt, /*explain=*/true);
  ASSERT_TRUE(explained.ok()) << explained.status();
  EXPECT_THAT(explained->explanation().rbegin()->detail(),
              HasSubstr("OBJECTED for ai_training, set at revision 3, overrides the earlier "
                        "CONSENTED for ai_training.safety (revision 2)"));
  // Consenting to research again, after the objection: that consent stands.
  Set("alice", v1::PREFERENCE_STATE_CONSENTED, "ai_training.safety");
  EXPECT_EQ(Reason("alice", "p1", "ai_training.safety"), v1::DECISION_REASON_ALLOWED_CONSENT);
  EXPECT_EQ(Reason("alice", "p1", "ai_training.generative"), v1::DECISION_REASON_DENIED_OBJECTION);

  Attributes("bob", "GB", 1980);
  Set("bob", v1::PREFERENCE_STATE_OBJECTED, "ai_training.generative");
  Set("bob", v1::PREFERENCE_STATE_CONSENTED, "ai_training");
  EXPECT_EQ(Reason("bob", "p1", "ai_training.generative"), v1::DECISION_REASON_DENIED_OBJECTION);
  EXPECT_EQ(Reason("bob", "p1", "ai_training.safety"), v1::DECISION_REASON_ALLOWED_CONSENT);
}

TEST_F(DecisionsTest, AsOfUsesThePolicyActiveThenAcrossRestarts) {
  Attributes("alice", "GB", 1980);
  clock_.Advance(absl::Hours(1));
  // A new policy version: the UK moves to consent.
  std::string text = testing::ReadFile(policy_path_);
  const std::string version = "version: \"2026-11-27.1\"";
  text.replace(text.find(version), version.size(), "version: \"uk-consent\"");
  const std::string uk = "legal_basis: LEGAL_BASIS_LEGITIMATE_INTEREST";
  text.replace(text.find(uk), uk.size(), "legal_basis: LEGAL_BASIS_CONSENT");
  testing::WriteFile(policy_path_, text);
  ASSERT_TRUE(server_->ReloadPolicy().ok());
  clock_.Advance(absl::Hours(1));

  auto check = [&](std::optional<absl::Time> at) {
    auto r = Check("alice", "p1", "ai_training", at);
    EXPECT_TRUE(r.ok()) << r.status();
    return std::make_pair(r->decision().policy_version(), r->decision().reason());
  };
  EXPECT_EQ(check(std::nullopt),
            std::make_pair(std::string("uk-consent"), v1::DECISION_REASON_DENIED_NO_CONSENT));
  EXPECT_EQ(check(kStart + absl::Minutes(30)),
            std::make_pair(std::string("2026-11-27.1"), v1::DECISION_REASON_ALLOWED_DEFAULT));
  EXPECT_EQ(check(kStart + absl::Hours(1)),
            std::make_pair(std::string("uk-consent"), v1::DECISION_REASON_DENIED_NO_CONSENT));

  // Both versions are kept in the store: the same answers after a restart.
  RestartServer();
  EXPECT_EQ(check(kStart + absl::Minutes(30)),
            std::make_pair(std::string("2026-11-27.1"), v1::DECISION_REASON_ALLOWED_DEFAULT));
  EXPECT_EQ(check(std::nullopt),
            std::make_pair(std::string("uk-consent"), v1::DECISION_REASON_DENIED_NO_CONSENT));
}

// A policy that allows more than the one in force is activated only when
// its own file says loosens_version: "<the active version>", by reload and
// at start alike; the refusal names each change.
TEST_F(DecisionsTest, ALooseningPolicyNeedsItsOwnPermission) {
  Attributes("alice", "GB", 1980);
  Set("alice", v1::PREFERENCE_STATE_OBJECTED, "ai_training.ranking");
  const std::string original = testing::ReadFile(policy_path_);
  auto with = [](std::string text, const std::string& version, const std::string& from,
                 const std::string& to) {
    const std::string current = "version: \"2026-11-27.1\"";
    text.replace(text.find(current), current.size(), "version: \"" + version + "\"");
    if (!from.empty()) text.replace(text.find(from), from.size(), to);
    return text;
  };
  // Stricter: the UK on consent.
  const std::string uk = "legal_basis: LEGAL_BASIS_LEGITIMATE_INTEREST";
  testing::WriteFile(policy_path_,
                     with(original, "strict", uk, "legal_basis: LEGAL_BASIS_CONSENT"));
  ASSERT_TRUE(server_->ReloadPolicy().ok());
  // Back to legitimate interest, without permission: refused, "strict" stays.
  testing::WriteFile(policy_path_, with(original, "loose", "", ""));
  absl::Status refused = server_->ReloadPolicy();
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(refused.message(),
            "policy \"loose\" loosens the active policy \"strict\" and it does not say "
            "loosens_version; to activate it, the new file must say loosens_version: \"strict\". "
            "Changes: ai_training in GB: legal basis CONSENT becomes LEGITIMATE_INTEREST; "
            "ai_training.generative in GB: legal basis CONSENT becomes LEGITIMATE_INTEREST; "
            "ai_training.ranking in GB: legal basis CONSENT becomes LEGITIMATE_INTEREST; "
            "ai_training.safety in GB: legal basis CONSENT becomes LEGITIMATE_INTEREST");
  EXPECT_EQ(client_->GetPolicy()->version(), "strict");
  // The same file is refused at start: consentd does not come up on it.
  ASSERT_TRUE(server_->Shutdown().ok());
  server_.reset();
  ServerOptions options = testing::InProcessOptions(dir_.Sub("data"), policy_path_);
  auto refused_start = ConsentServer::Start(options, &clock_);
  EXPECT_EQ(refused_start.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused_start.status().message(), HasSubstr("loosens the active policy \"strict\""));
  // With the permission in the file: activated, and recorded with it.
  testing::WriteFile(policy_path_,
                     with(original, "loose", "", "") + "loosens_version: \"strict\"\n");
  StartServer();
  EXPECT_EQ(client_->GetPolicy()->version(), "loose");
  EXPECT_THAT(client_->GetPolicy()->text(), HasSubstr("loosens_version: \"strict\""));

  // Dropping a purpose that a stored preference names loosens too; one
  // that nothing names does not.
  const std::string ranking =
      "purposes {\n  name: \"ai_training.ranking\"\n  description: \"Training ranking and "
      "recommendation models\"\n}\n";
  ASSERT_NE(original.find(ranking), std::string::npos);
  testing::WriteFile(policy_path_, with(original, "no-ranking", ranking, ""));
  refused = server_->ReloadPolicy();
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.message(),
              HasSubstr("Changes: purpose ai_training.ranking is dropped while stored "
                        "preferences or exclusions name it"));
  const std::string safety =
      "purposes {\n  name: \"ai_training.safety\"\n  description: \"Training integrity and "
      "safety classifiers\"\n}\n";
  ASSERT_NE(original.find(safety), std::string::npos);
  testing::WriteFile(policy_path_, with(original, "no-safety", safety, ""));
  EXPECT_TRUE(server_->ReloadPolicy().ok());
}

TEST_F(DecisionsTest, ChangedPolicyTextNeedsANewVersion) {
  std::string text = testing::ReadFile(policy_path_);
  const std::string uk = "legal_basis: LEGAL_BASIS_LEGITIMATE_INTEREST";
  text.replace(text.find(uk), uk.size(), "legal_basis: LEGAL_BASIS_CONSENT");
  testing::WriteFile(policy_path_, text);
  absl::Status status = server_->ReloadPolicy();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("give the new policy a new version"));
  auto policy = client_->GetPolicy();
  ASSERT_TRUE(policy.ok());
  EXPECT_THAT(policy->text(), HasSubstr(uk));
}

TEST_F(DecisionsTest, EventTimesNeverGoBackwards) {
  Attributes("alice", "GB", 1980);
  clock_.Advance(absl::Hours(2));
  Set("alice", v1::PREFERENCE_STATE_OBJECTED);  // stamped kStart + 2h
  clock_.Set(kStart + absl::Hours(1));          // the clock steps back
  Set("alice", v1::PREFERENCE_STATE_CLEARED);   // stamped kStart + 2h too, not + 1h
  clock_.Set(kStart + absl::Hours(3));
  // At + 1h neither write had happened; at + 2h both had.
  EXPECT_EQ(Reason("alice", "p1", "ai_training", kStart + absl::Hours(1)),
            v1::DECISION_REASON_ALLOWED_DEFAULT);
  EXPECT_EQ(Reason("alice", "p1", "ai_training", kStart + absl::Hours(2)),
            v1::DECISION_REASON_ALLOWED_DEFAULT);
  v1::GetSubjectRequest get;
  get.set_user_id("alice");
  EXPECT_EQ(client_->GetSubject(get)->subject().update_time().seconds(),
            absl::ToUnixSeconds(kStart + absl::Hours(2)));
}

TEST_F(DecisionsTest, ReloadsUnderConcurrentChecksAreNeverTorn) {
  Attributes("alice", "GB", 1980);
  // Going back to legitimate interest loosens "uk-consent": allowed by the
  // file itself.
  const std::string legit = testing::ReadFile(policy_path_) + "loosens_version: \"uk-consent\"\n";
  std::string consent = legit;
  const std::string version = "version: \"2026-11-27.1\"";
  consent.replace(consent.find(version), version.size(), "version: \"uk-consent\"");
  const std::string uk = "legal_basis: LEGAL_BASIS_LEGITIMATE_INTEREST";
  consent.replace(consent.find(uk), uk.size(), "legal_basis: LEGAL_BASIS_CONSENT");

  std::atomic<bool> stop{false};
  std::atomic<int> checks{0}, torn{0}, errors{0};
  std::vector<std::thread> checkers;
  for (int t = 0; t < 3; ++t) {
    checkers.emplace_back([&] {
      auto client = Client::Connect(server_->listen_address());
      v1::CheckRequest request;
      request.set_purpose("ai_training");
      request.set_user_id("alice");
      *request.mutable_content() = Post("p1");
      while (!stop.load()) {
        auto response = client->Check(request);
        if (!response.ok()) {
          errors.fetch_add(1);
          continue;
        }
        const v1::Decision& d = response->decision();
        const bool consistent = (d.policy_version() == "2026-11-27.1" &&
                                 d.reason() == v1::DECISION_REASON_ALLOWED_DEFAULT) ||
                                (d.policy_version() == "uk-consent" &&
                                 d.reason() == v1::DECISION_REASON_DENIED_NO_CONSENT);
        if (!consistent) torn.fetch_add(1);
        checks.fetch_add(1);
      }
    });
  }
  for (int i = 0; i < 200; ++i) {
    clock_.Advance(absl::Seconds(1));
    testing::WriteFile(policy_path_, i % 2 == 0 ? consent : legit);
    ASSERT_TRUE(server_->ReloadPolicy().ok()) << i;
  }
  while (checks.load() < 2000) std::this_thread::yield();
  stop.store(true);
  for (auto& t : checkers) t.join();
  EXPECT_EQ(torn.load(), 0);
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(client_->GetPolicy()->version(), "2026-11-27.1");
}

TEST_F(DecisionsTest, RandomizedAgainstReferenceModel) {
  testing::RunAgainstReferenceModel(clock_, kStart, {client_.get()}, 10000, 20261127);
}

}  // namespace
}  // namespace consent
