// The registry as a replica applies the command log (registry_replication.cc),
// over the real store, without NATS: each command's outcome, and that every
// command, refused or not, is recorded as applied so the next one follows.
#include <memory>
#include <string>

#include "absl/synchronization/notification.h"
#include "core/proto_time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/registry.h"
#include "tests/fake_clock.h"
#include "tests/test_util.h"

namespace consent {
namespace {

using replication::v1::Command;
using ::testing::HasSubstr;

const absl::Time kStart =
    absl::FromCivil(absl::CivilSecond(2026, 6, 1, 0, 0, 0), absl::UTCTimeZone());

class RegistryReplicationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    storage::StoreOptions options;
    options.data_dir = dir_.path();
    auto store = storage::ConsentStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    registry_ = std::make_unique<Registry>(store_.get(), &policies_, &clock_);
    auto policy = CompiledPolicy::FromFile(testing::DefaultPolicyPath());
    ASSERT_TRUE(policy.ok()) << policy.status();
    ASSERT_TRUE(registry_->Init(*std::move(policy)).ok());
  }

  struct Outcome {
    absl::Status status;
    std::string response;
  };
  Outcome Apply(const Command& command, int64_t sequence) {
    Outcome outcome;
    absl::Notification done;
    registry_->command_applier()->ApplyWrite(command, sequence,
                                             [&](absl::Status status, std::string response) {
                                               outcome = {std::move(status), std::move(response)};
                                               done.Notify();
                                             });
    done.WaitForNotification();
    return outcome;
  }
  Command Preference(const std::string& user, v1::PreferenceState state,
                     const std::string& purpose = "ai_training") {
    Command command;
    *command.mutable_time() = ToProto(clock_.Now());
    command.set_caller("settings");
    *command.mutable_set_preference() = testing::PreferenceOf(user, state, purpose);
    return command;
  }

  testing::TempDir dir_;
  FakeClock clock_{kStart};
  PolicyHolder policies_;
  std::unique_ptr<storage::ConsentStore> store_;
  std::unique_ptr<Registry> registry_;
};

TEST_F(RegistryReplicationTest, EveryCommandIsRecordedAsAppliedWhateverItsOutcome) {
  // Refused by its checks at apply time (a purpose the policy in force
  // there does not define): INVALID_ARGUMENT, and recorded.
  Outcome refused = Apply(Preference("alice", v1::PREFERENCE_STATE_OBJECTED, "no_such"), 1);
  EXPECT_EQ(refused.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status.message(), HasSubstr("purpose"));
  EXPECT_EQ(*store_->AppliedSequence(), 1);
  EXPECT_EQ(store_->CurrentRevision(), 0);

  // Written: its response, at the first revision.
  Command objection = Preference("alice", v1::PREFERENCE_STATE_OBJECTED);
  objection.mutable_set_preference()->set_request_id("form-1");
  Outcome written = Apply(objection, 2);
  ASSERT_TRUE(written.status.ok()) << written.status;
  v1::SetPreferenceResponse response;
  ASSERT_TRUE(response.ParseFromString(written.response));
  EXPECT_EQ(response.revision(), 1);
  EXPECT_EQ(response.preference().state(), v1::PREFERENCE_STATE_OBJECTED);
  EXPECT_EQ(*store_->AppliedSequence(), 2);

  // The same request id again (the request retried elsewhere): the first
  // answer, nothing written, recorded.
  Outcome replayed = Apply(objection, 3);
  ASSERT_TRUE(replayed.status.ok()) << replayed.status;
  EXPECT_EQ(replayed.response, written.response);
  EXPECT_EQ(store_->CurrentRevision(), 1);
  EXPECT_EQ(*store_->AppliedSequence(), 3);

  // A stale expected_revision: ABORTED, recorded.
  Command stale = Preference("alice", v1::PREFERENCE_STATE_CONSENTED);
  stale.mutable_set_preference()->set_expected_revision(0);
  EXPECT_EQ(Apply(stale, 4).status.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(*store_->AppliedSequence(), 4);

  // Delivered again: not the next, UNAVAILABLE (read the log again).
  Outcome again = Apply(stale, 4);
  EXPECT_EQ(again.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(again.status.message(), HasSubstr("is not the next"));

  // A command holding no write: refused, recorded.
  Command empty;
  *empty.mutable_time() = ToProto(clock_.Now());
  EXPECT_EQ(Apply(empty, 5).status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*store_->AppliedSequence(), 5);
}

TEST_F(RegistryReplicationTest, APolicyCommandActivatesItAndIsRecorded) {
  std::string strict = testing::ReadFile(testing::DefaultPolicyPath());
  const std::string version = "version: \"2026-11-27.1\"";
  strict.replace(strict.find(version), version.size(), "version: \"uk-consent\"");
  const std::string uk = "legal_basis: LEGAL_BASIS_LEGITIMATE_INTEREST";
  strict.replace(strict.find(uk), uk.size(), "legal_basis: LEGAL_BASIS_CONSENT");
  Command command;
  *command.mutable_time() = ToProto(clock_.Now() + absl::Hours(1));
  command.mutable_activate_policy()->set_text("version: \"\"\n");  // does not load
  std::string response;
  EXPECT_EQ(registry_->command_applier()->ApplyPolicy(command, 1, &response).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*store_->AppliedSequence(), 1);
  command.mutable_activate_policy()->set_text(strict);
  ASSERT_TRUE(registry_->command_applier()->ApplyPolicy(command, 2, &response).ok());
  replication::v1::PolicyActivated activated;
  ASSERT_TRUE(activated.ParseFromString(response));
  EXPECT_EQ(activated.version(), "uk-consent");
  EXPECT_EQ(activated.previous_version(), "2026-11-27.1");
  EXPECT_TRUE(activated.changed());
  EXPECT_EQ(policies_.Get()->version(), "uk-consent");
  EXPECT_EQ(*store_->AppliedSequence(), 2);
  // Applied again after a crash before its record: the same text changes
  // nothing.
  ASSERT_TRUE(registry_->command_applier()->ApplyPolicy(command, 3, &response).ok());
  ASSERT_TRUE(activated.ParseFromString(response));
  EXPECT_FALSE(activated.changed());
}

}  // namespace
}  // namespace consent
