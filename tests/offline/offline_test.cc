// Offline evaluation against the server it copies: random histories built
// through a real consentd (in-process, loopback, real RocksDB), exported
// as signed snapshots (plain and pseudonymized), loaded by consent_offline
// and caught up from the change feed. With writes paused, every offline
// answer must equal the server's: the snapshot's with the server's as_of
// at the snapshot's time, the caught-up copy's with the server's now.
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/consent_client.h"
#include "client/offline/catch_up.h"
#include "client/offline/offline_registry.h"
#include "core/proto_time.h"
#include "core/snapshot_signing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/fake_clock.h"
#include "tests/in_process_server.h"
#include "tests/test_util.h"

namespace consent::offline {
namespace {

using ::consent::testing::TempDir;
using ::testing::HasSubstr;

const absl::Time kStart =
    absl::FromCivil(absl::CivilSecond(2026, 6, 1, 0, 0, 0), absl::UTCTimeZone());
constexpr char kPseudonymKey[] = "a-key-the-training-job-holds-32b";
const char* const kPurposes[] = {"ai_training", "ai_training.generative", "ai_training.ranking",
                                 "ai_training.safety"};
constexpr int kUsers = 150;

class OfflineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"/usr/bin/openssl", "genpkey", "-algorithm", "ed25519", "-out", dir_.Sub("sign.pem")},
             {"/usr/bin/openssl", "pkey", "-in", dir_.Sub("sign.pem"), "-pubout", "-out",
              dir_.Sub("sign.pub")}}) {
      ASSERT_EQ(testing::RunCommand(args).exit_code, 0) << args[1];
    }
    testing::WriteFile(dir_.Sub("pseudonym.key"), kPseudonymKey);
    ServerOptions options = testing::InProcessOptions(dir_.Sub("data"));
    options.snapshot_signing_key_file = dir_.Sub("sign.pem");
    options.pseudonymize_key_file = dir_.Sub("pseudonym.key");
    auto server = ConsentServer::Start(options, &clock_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = Client::Connect(server_->listen_address());
    public_key_ = snapshot::ReadPublicKeyFile(dir_.Sub("sign.pub")).value();
  }
  void TearDown() override {
    if (server_) {
      EXPECT_TRUE(server_->Shutdown().ok());
    }
  }

  static std::string User(int i) { return absl::StrCat("user-", i); }

  // `count` random writes to kUsers users, the clock moving on between
  // them (errors, such as writes to a deleted subject, are part of it).
  void RandomWrites(std::mt19937& rng, int count) {
    auto pick = [&rng](int n) { return static_cast<int>(rng() % n); };
    for (int i = 0; i < count; ++i) {
      clock_.Advance(absl::Seconds(1 + pick(3600)));
      const std::string user = User(pick(kUsers));
      const int kind = pick(100);
      if (kind < 40) {
        v1::SetPreferenceRequest r;
        r.set_user_id(user);
        r.set_purpose(kPurposes[pick(4)]);
        const v1::PreferenceState states[] = {v1::PREFERENCE_STATE_OBJECTED,
                                              v1::PREFERENCE_STATE_CONSENTED,
                                              v1::PREFERENCE_STATE_CLEARED};
        r.set_state(states[pick(3)]);
        // Bounds days away from any time the checks use.
        if (pick(5) == 0) {
          *r.mutable_effective_time() = ToProto(clock_.Now() + absl::Hours(24 * (pick(60) - 30)));
        }
        if (pick(5) == 0) *r.mutable_expire_time() = ToProto(clock_.Now() + absl::Hours(24 * 31));
        client_->SetPreference(r).IgnoreError();
      } else if (kind < 65) {
        v1::UpdateSubjectRequest r;
        r.set_user_id(user);
        const char* const jurisdictions[] = {"GB", "FR", "US-CA", "JP"};
        r.mutable_attributes()->set_jurisdiction(jurisdictions[pick(4)]);
        v1::Date* birth = r.mutable_attributes()->mutable_birth_date();
        birth->set_year(1950 + pick(75));
        birth->set_month(1 + pick(12));
        birth->set_day(1 + pick(28));
        r.mutable_update_mask()->add_paths("jurisdiction");
        if (pick(4) != 0) r.mutable_update_mask()->add_paths("birth_date");
        client_->UpdateSubject(r).IgnoreError();
      } else if (kind < 82) {
        v1::SetContentExclusionRequest r;
        r.set_user_id(user);
        r.set_content_id(absl::StrCat("post-", pick(4)));
        r.set_purpose(kPurposes[pick(4)]);
        r.set_excluded(pick(3) != 0);
        client_->SetContentExclusion(r).IgnoreError();
      } else if (kind < 97) {
        v1::RecordNoticeRequest r;
        r.set_user_id(user);
        r.set_notice_id(absl::StrCat("notice-", pick(2)));
        r.set_notice_version("v1");
        r.add_purposes(r.notice_id() == "notice-0" ? "ai_training" : "ai_training.generative");
        r.set_channel(v1::NOTICE_CHANNEL_EMAIL);
        client_->RecordNotice(r).IgnoreError();
      } else {
        v1::DeleteSubjectRequest r;
        r.set_user_id(user);
        client_->DeleteSubject(r).IgnoreError();
      }
    }
  }

  std::string Export(const std::string& name, bool pseudonymize) {
    const std::string path = dir_.Sub(name);
    std::string file;
    v1::ExportSnapshotRequest request;
    request.set_pseudonymize(pseudonymize);
    absl::Status status =
        client_->ExportSnapshot(request, [&](const v1::ExportSnapshotResponse& m) {
          file += m.chunk();
          if (m.last()) {
            EXPECT_EQ(m.size_bytes(), static_cast<int64_t>(file.size()));
          }
          return true;
        });
    EXPECT_TRUE(status.ok()) << status;
    testing::WriteFile(path, file);
    return path;
  }

  int64_t ServerRevision() {
    auto response = client_->Check(testing::PublicPostCheck("anyone", "ai_training"));
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? response->decision().revision() : -1;
  }

  std::unique_ptr<OfflineRegistry> Load(const std::string& path) {
    auto loaded = OfflineRegistry::Load(path, public_key_);
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded.ok() ? *std::move(loaded) : nullptr;
  }

  // The contents every user is checked with: public posts with and
  // without a create_time, a post for friends, one with health data, and
  // each of them under the content ids exclusions name.
  static std::vector<v1::Content> Contents() {
    std::vector<v1::Content> contents;
    for (int i = 0; i < 4; ++i) {
      v1::Content c;
      c.set_content_id(absl::StrCat("post-", i));
      c.set_content_type(v1::CONTENT_TYPE_POST);
      c.set_visibility(i == 2 ? v1::VISIBILITY_FRIENDS : v1::VISIBILITY_PUBLIC);
      if (i != 1) c.mutable_create_time()->set_seconds(1'600'000'000);
      if (i == 3) c.add_sensitive_categories(v1::SENSITIVE_CATEGORY_HEALTH);
      contents.push_back(c);
    }
    return contents;
  }

  // Asserts that `offline` answers every (user, purpose, content) as the
  // server does, at `at` (with as_of when `as_of`). Users (and a few never
  // written) are named by pseudonym offline when `pseudonymized`. Returns
  // the number of checks compared.
  int ExpectSameAnswers(const OfflineRegistry& offline, bool pseudonymized, absl::Time at,
                        bool as_of) {
    int compared = 0;
    const std::vector<v1::Content> contents = Contents();
    for (const char* purpose : kPurposes) {
      v1::BatchCheckRequest request;
      request.set_purpose(purpose);
      if (as_of) *request.mutable_as_of() = ToProto(at);
      std::vector<std::string> offline_ids;
      std::vector<v1::Content> item_contents;
      for (int u = 0; u < kUsers + 5; ++u) {
        for (const v1::Content& content : contents) {
          v1::CheckItem* item = request.add_items();
          item->set_user_id(User(u));
          *item->mutable_content() = content;
          offline_ids.push_back(pseudonymized ? snapshot::Pseudonym(kPseudonymKey, User(u))
                                              : User(u));
          item_contents.push_back(content);
        }
      }
      auto server = client_->BatchCheck(request);
      EXPECT_TRUE(server.ok()) << server.status();
      if (!server.ok()) return compared;
      std::vector<absl::string_view> ids(offline_ids.begin(), offline_ids.end());
      std::vector<OfflineDecision> batch(ids.size());
      EXPECT_TRUE(offline.CheckMany(purpose, ids, {}, item_contents, at, batch.data()).ok());
      for (int i = 0; i < request.items_size(); ++i) {
        const v1::Decision& expected = server->decisions(i);
        v1::CheckRequest one;
        one.set_purpose(purpose);
        one.set_user_id(offline_ids[i]);
        *one.mutable_content() = item_contents[i];
        v1::Decision decision;
        const absl::Status checked = offline.Check(one, at, &decision);
        EXPECT_TRUE(checked.ok()) << offline_ids[i] << ": " << checked;
        EXPECT_EQ(decision.reason(), expected.reason())
            << request.items(i).user_id() << " " << purpose << " " << item_contents[i].content_id();
        EXPECT_EQ(decision.allowed(), expected.allowed());
        EXPECT_EQ(decision.policy_version(), expected.policy_version());
        EXPECT_EQ(batch[i].reason, expected.reason()) << request.items(i).user_id();
        EXPECT_EQ(batch[i].allowed, expected.allowed());
        if (!as_of) {
          EXPECT_EQ(decision.revision(), server->revision());
        }
        ++compared;
      }
    }
    return compared;
  }

  TempDir dir_;
  FakeClock clock_{kStart};
  std::unique_ptr<ConsentServer> server_;
  std::unique_ptr<Client> client_;
  std::string public_key_;
};

TEST_F(OfflineTest, AnswersAsTheServerBeforeAndAfterCatchingUp) {
  for (const bool pseudonymized : {false, true}) {
    SCOPED_TRACE(pseudonymized ? "pseudonymized" : "plain");
    std::mt19937 rng(pseudonymized ? 2 : 1);
    RandomWrites(rng, 700);
    const std::string path = Export(pseudonymized ? "p.snap" : "s.snap", pseudonymized);
    std::unique_ptr<OfflineRegistry> offline = Load(path);
    ASSERT_NE(offline, nullptr);
    EXPECT_EQ(offline->info().pseudonymized, pseudonymized);
    const absl::Time taken = offline->info().create_time;
    EXPECT_EQ(taken, clock_.Now());

    // The snapshot is the server's state at its time, as as_of reads it
    // from history: compared after more writes.
    RandomWrites(rng, 700);
    clock_.Advance(absl::Minutes(1));
    EXPECT_EQ(ExpectSameAnswers(*offline, pseudonymized, taken, /*as_of=*/true), 4 * 155 * 4);

    // An objection acknowledged before catch_up is honoured after it.
    const std::string late = pseudonymized ? "late-p" : "late-s";
    v1::SetPreferenceRequest objection;
    objection.set_user_id(late);
    objection.set_purpose("ai_training");
    objection.set_state(v1::PREFERENCE_STATE_OBJECTED);
    ASSERT_TRUE(client_->UpdateSubject(testing::UkAdult(late)).ok());
    ASSERT_TRUE(client_->SetPreference(objection).ok());
    const int64_t before = offline->revision();
    auto caught_up = CatchUp(*client_, *offline);
    ASSERT_TRUE(caught_up.ok()) << caught_up.status();
    EXPECT_EQ(caught_up->revision, ServerRevision());
    EXPECT_EQ(caught_up->events, caught_up->revision - before);
    EXPECT_FALSE(caught_up->policy_changed);
    v1::CheckRequest check = testing::PublicPostCheck(
        pseudonymized ? snapshot::Pseudonym(kPseudonymKey, late) : late, "ai_training");
    v1::Decision decision;
    ASSERT_TRUE(offline->Check(check, clock_.Now(), &decision).ok());
    EXPECT_EQ(decision.reason(), v1::DECISION_REASON_DENIED_OBJECTION);

    // Writes paused: the copy answers as the server does now.
    EXPECT_EQ(ExpectSameAnswers(*offline, pseudonymized, clock_.Now(), /*as_of=*/false),
              4 * 155 * 4);
  }
}

TEST_F(OfflineTest, PseudonymizedFeedNamesNoAccount) {
  v1::SetPreferenceRequest objection;
  objection.set_user_id("alice");
  objection.set_purpose("ai_training");
  objection.set_state(v1::PREFERENCE_STATE_OBJECTED);
  objection.set_request_id("form-1");
  objection.mutable_source()->set_channel("settings_page");
  ASSERT_TRUE(client_->SetPreference(objection).ok());
  v1::WatchChangesRequest request;
  request.set_pseudonymize(true);
  request.set_checkpoint_when_current(true);
  std::vector<v1::WatchChangesResponse> messages;
  ASSERT_TRUE(client_
                  ->Watch(request,
                          [&](const v1::WatchChangesResponse& m) {
                            messages.push_back(m);
                            return !m.has_checkpoint();
                          })
                  .ok());
  ASSERT_EQ(messages.size(), 2u);
  const v1::ChangeEvent& event = messages[0].event();
  EXPECT_EQ(event.user_id(), snapshot::Pseudonym(kPseudonymKey, "alice"));
  EXPECT_EQ(event.revision(), 1);
  EXPECT_EQ(event.preference().purpose(), "ai_training");
  EXPECT_TRUE(event.caller().empty());
  EXPECT_TRUE(event.request_id().empty());
  EXPECT_FALSE(event.has_source());
  EXPECT_TRUE(event.hash().empty());
  EXPECT_TRUE(event.previous_hash().empty());
  // The checkpoint comes as soon as the feed is current, not after the
  // idle interval.
  EXPECT_EQ(messages[1].checkpoint().revision(), 1);
}

TEST_F(OfflineTest, CatchUpAdoptsTheServersPolicy) {
  // A server whose policy file the test rewrites.
  ASSERT_TRUE(server_->Shutdown().ok());
  std::string policy = testing::ReadFile(testing::DefaultPolicyPath());
  testing::WriteFile(dir_.Sub("policy.textproto"), policy);
  ServerOptions options = testing::InProcessOptions(dir_.Sub("data"), dir_.Sub("policy.textproto"));
  options.snapshot_signing_key_file = dir_.Sub("sign.pem");
  auto server = ConsentServer::Start(options, &clock_);
  ASSERT_TRUE(server.ok()) << server.status();
  server_ = *std::move(server);
  client_ = Client::Connect(server_->listen_address());

  // Nineteen when the post was made (PublicPostCheck: November 2023).
  v1::UpdateSubjectRequest young = testing::UkAdult("young");
  young.mutable_attributes()->mutable_birth_date()->set_year(2004);
  ASSERT_TRUE(client_->UpdateSubject(young).ok());
  std::unique_ptr<OfflineRegistry> offline = Load(Export("s.snap", false));
  ASSERT_NE(offline, nullptr);
  const v1::CheckRequest check = testing::PublicPostCheck("young", "ai_training");
  v1::Decision decision;
  ASSERT_TRUE(offline->Check(check, clock_.Now(), &decision).ok());
  EXPECT_EQ(decision.reason(), v1::DECISION_REASON_ALLOWED_DEFAULT);

  // A stricter policy (a minimum age of 21) activated on the server: not an
  // event, yet catch_up brings it.
  for (const std::string from : {"min_age: 18", "version: \"2026-11-27.1\""}) {
    const std::string to = from == "min_age: 18" ? "min_age: 21" : "version: \"stricter\"";
    for (size_t at = policy.find(from); at != std::string::npos; at = policy.find(from, at)) {
      policy.replace(at, from.size(), to);
    }
  }
  testing::WriteFile(dir_.Sub("policy.textproto"), policy);
  auto reloaded = client_->ReloadPolicy();
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  auto caught_up = CatchUp(*client_, *offline);
  ASSERT_TRUE(caught_up.ok()) << caught_up.status();
  EXPECT_TRUE(caught_up->policy_changed);
  EXPECT_EQ(caught_up->events, 0);
  EXPECT_EQ(offline->policy()->version(), "stricter");
  ASSERT_TRUE(offline->Check(check, clock_.Now(), &decision).ok());
  EXPECT_EQ(decision.reason(), v1::DECISION_REASON_DENIED_MINOR);
  EXPECT_EQ(decision.policy_version(), "stricter");
  auto server_answer = client_->Check(check);
  ASSERT_TRUE(server_answer.ok());
  EXPECT_EQ(server_answer->decision().reason(), v1::DECISION_REASON_DENIED_MINOR);
}

TEST_F(OfflineTest, RefusesWhatItCannotVouchFor) {
  ASSERT_TRUE(client_->UpdateSubject(testing::UkAdult("alice")).ok());
  const std::string path = Export("s.snap", false);
  // Another key, a changed byte, a missing file.
  ASSERT_EQ(testing::RunCommand({"/usr/bin/openssl", "genpkey", "-algorithm", "ed25519", "-out",
                                 dir_.Sub("other.pem")})
                .exit_code,
            0);
  auto other = snapshot::SigningKey::FromPemFile(dir_.Sub("other.pem"));
  ASSERT_TRUE(other.ok());
  EXPECT_THAT(OfflineRegistry::Load(path, other->public_key()).status().message(),
              HasSubstr("signed by another key"));
  std::string bytes = testing::ReadFile(path);
  bytes[bytes.size() / 2] ^= 0x20;
  testing::WriteFile(dir_.Sub("changed.snap"), bytes);
  auto changed = OfflineRegistry::Load(dir_.Sub("changed.snap"), public_key_);
  EXPECT_EQ(changed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(changed.status().message(), HasSubstr("was changed after signing"));
  EXPECT_EQ(OfflineRegistry::Load(dir_.Sub("none.snap"), public_key_).status().code(),
            absl::StatusCode::kNotFound);

  // Checks are validated as the server validates them.
  std::unique_ptr<OfflineRegistry> offline = Load(path);
  ASSERT_NE(offline, nullptr);
  v1::Decision decision;
  v1::CheckRequest bad = testing::PublicPostCheck("alice", "ai_training.unknown");
  EXPECT_THAT(offline->Check(bad, clock_.Now(), &decision).message(),
              HasSubstr("\"ai_training.unknown\" is not defined by policy version"));
  bad = testing::PublicPostCheck("", "ai_training");
  EXPECT_EQ(offline->Check(bad, clock_.Now(), &decision).code(),
            absl::StatusCode::kInvalidArgument);
  bad = testing::PublicPostCheck("alice", "ai_training");
  bad.set_min_revision(offline->revision() + 1);
  EXPECT_EQ(offline->Check(bad, clock_.Now(), &decision).code(),
            absl::StatusCode::kFailedPrecondition);

  // A feed with a gap, or an attributes change without its values (what
  // a caller without the auditor role is sent), is refused.
  v1::ChangeEvent event;
  event.set_revision(offline->revision() + 2);
  event.set_user_id("alice");
  event.mutable_exclusion()->set_content_id("post-1");
  EXPECT_THAT(offline->Apply(event).message(), HasSubstr("does not follow"));
  event.set_revision(offline->revision() + 1);
  event.clear_exclusion();
  event.set_kind(v1::CHANGE_KIND_SUBJECT_ATTRIBUTES);
  EXPECT_THAT(offline->Apply(event).message(), HasSubstr("needs them"));

  // Without its keys the server refuses exports and pseudonymized feeds.
  ASSERT_TRUE(server_->Shutdown().ok());
  auto server = ConsentServer::Start(testing::InProcessOptions(dir_.Sub("data")), &clock_);
  ASSERT_TRUE(server.ok()) << server.status();
  server_ = *std::move(server);
  client_ = Client::Connect(server_->listen_address());
  absl::Status refused =
      client_->ExportSnapshot(v1::ExportSnapshotRequest(), [](const auto&) { return true; });
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.message(), HasSubstr("--snapshot_signing_key_file"));
  v1::WatchChangesRequest watch;
  watch.set_pseudonymize(true);
  refused = client_->Watch(watch, [](const auto&) { return true; });
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.message(), HasSubstr("--pseudonymize_key_file"));
}

}  // namespace
}  // namespace consent::offline
