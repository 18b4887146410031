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
  EXPECT_EQ(registry_->command_applier()->ApplyAlone(command, 1, &response).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*store_->AppliedSequence(), 1);
  command.mutable_activate_policy()->set_text(strict);
  ASSERT_TRUE(registry_->command_applier()->ApplyAlone(command, 2, &response).ok());
  replication::v1::PolicyActivated activated;
  ASSERT_TRUE(activated.ParseFromString(response));
  EXPECT_EQ(activated.version(), "uk-consent");
  EXPECT_EQ(activated.previous_version(), "2026-11-27.1");
  EXPECT_TRUE(activated.changed());
  EXPECT_EQ(policies_.Get()->version(), "uk-consent");
  EXPECT_EQ(*store_->AppliedSequence(), 2);
  // Applied again after a crash before its record: the same text changes
  // nothing.
  ASSERT_TRUE(registry_->command_applier()->ApplyAlone(command, 3, &response).ok());
  ASSERT_TRUE(activated.ParseFromString(response));
  EXPECT_FALSE(activated.changed());
}

v1::ImportRecord Record(int64_t offset, const std::string& user, const std::string& purpose) {
  v1::ImportRecord record;
  record.set_offset(offset);
  record.set_user_id(user);
  record.set_jurisdiction("GB");
  v1::ImportedPreference* preference = record.add_preferences();
  preference->set_purpose(purpose);
  preference->set_state(v1::PREFERENCE_STATE_OBJECTED);
  return record;
}

TEST_F(RegistryReplicationTest, ImportStepsApplyTheirRecordsAboveTheProgressOnce) {
  Command deletion;
  *deletion.mutable_time() = ToProto(clock_.Now());
  deletion.set_caller("settings");
  deletion.mutable_delete_subject()->set_user_id("carol");
  ASSERT_TRUE(Apply(deletion, 1).status.ok());
  const int64_t deleted_at = store_->CurrentRevision();

  auto step = [this](int64_t offset, std::vector<v1::ImportRecord> records) {
    Command command;
    *command.mutable_time() = ToProto(clock_.Now());
    command.set_caller("loader");
    command.mutable_import_step()->set_import_id("load");
    command.mutable_import_step()->set_offset(offset);
    for (v1::ImportRecord& record : records) {
      *command.mutable_import_step()->add_records() = std::move(record);
    }
    return command;
  };
  auto apply = [this](const Command& command, int64_t sequence,
                      replication::v1::ImportStepApplied* applied) {
    std::string response;
    absl::Status status = registry_->command_applier()->ApplyAlone(command, sequence, &response);
    if (status.ok() && !applied->ParseFromString(response)) {
      return absl::InternalError("the answer does not parse");
    }
    return status;
  };

  // Offset 40 (the step's end) was rejected by the accepting replica and
  // is not in the command. A purpose the policy does not define and a
  // deleted subject are refused here; alice is imported.
  replication::v1::ImportStepApplied applied;
  ASSERT_TRUE(apply(step(40, {Record(10, "alice", "ai_training"), Record(20, "bob", "no_such"),
                              Record(30, "carol", "ai_training")}),
                    2, &applied)
                  .ok());
  EXPECT_EQ(applied.imported(), 1);
  EXPECT_EQ(applied.skipped(), 0);
  EXPECT_EQ(applied.acknowledged_offset(), 40);
  ASSERT_EQ(applied.rejections_size(), 2);
  EXPECT_EQ(applied.rejections(0).offset(), 20);
  EXPECT_EQ(applied.rejections(0).field(), "preferences[0].purpose");
  EXPECT_EQ(applied.rejections(1).offset(), 30);
  EXPECT_EQ(applied.rejections(1).user_id(), "carol");
  EXPECT_EQ(applied.rejections(1).description(),
            "the subject was deleted; a deleted subject takes no more writes");
  EXPECT_EQ(*store_->ImportedThrough("load"), 40);
  EXPECT_EQ(*store_->AppliedSequence(), 2);
  EXPECT_EQ(store_->CurrentRevision(), deleted_at + 2);  // alice's attributes and objection
  v1::ListHistoryRequest history;
  history.set_user_id("alice");
  v1::ListHistoryResponse events;
  ASSERT_TRUE(registry_->ListHistory(history, &events).ok());
  ASSERT_EQ(events.events_size(), 2);
  EXPECT_EQ(events.events(1).caller(), "loader");
  EXPECT_EQ(events.events(1).request_id(), "load:10");
  EXPECT_EQ(events.events(1).source().channel(), "import");
  EXPECT_EQ(events.events(1).event_time(), ToProto(clock_.Now()));

  // Resumed from an older progress (another replica's call): the records
  // at or below 40 are skipped, dave is imported.
  ASSERT_TRUE(apply(step(50, {Record(30, "carol", "ai_training"), Record(40, "erin", "ai_training"),
                              Record(50, "dave", "ai_training")}),
                    3, &applied)
                  .ok());
  EXPECT_EQ(applied.imported(), 1);
  EXPECT_EQ(applied.skipped(), 2);
  EXPECT_EQ(applied.rejections_size(), 0);
  EXPECT_EQ(applied.acknowledged_offset(), 50);
  EXPECT_EQ(store_->GetSubject("erin").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->GetSubject("dave")->attributes().jurisdiction(), "GB");
  const int64_t revision = store_->CurrentRevision();

  // The whole step again: skipped, recorded, nothing written.
  ASSERT_TRUE(apply(step(50, {Record(50, "dave", "ai_training")}), 4, &applied).ok());
  EXPECT_EQ(applied.imported(), 0);
  EXPECT_EQ(applied.skipped(), 1);
  EXPECT_EQ(applied.acknowledged_offset(), 50);
  EXPECT_EQ(store_->CurrentRevision(), revision);
  EXPECT_EQ(*store_->AppliedSequence(), 4);

  // A step without an import id: refused, recorded.
  Command bad = step(60, {Record(60, "frank", "ai_training")});
  bad.mutable_import_step()->clear_import_id();
  EXPECT_EQ(apply(bad, 5, &applied).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*store_->AppliedSequence(), 5);
  EXPECT_EQ(store_->CurrentRevision(), revision);
}

}  // namespace
}  // namespace consent
