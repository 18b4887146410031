// What a caller sees when the disk fails under the store: a failed WAL
// append or sync fails every commit of its group (replays included), says
// the outcome is unknown, stops writes until the database is reopened, and
// a retry with the same request id then gives the definitive answer. The
// faults come from tests/storage/fault_file_system.h over the real RocksDB.
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/consent_store.h"
#include "tests/storage/fault_file_system.h"
#include "tests/test_util.h"

namespace consent::storage {
namespace {

using ::consent::testing::FaultFileSystem;
using ::consent::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using WalFault = FaultFileSystem::WalFault;

const absl::Time kNow = absl::FromUnixSeconds(1'780'000'000);

// Sets the user's jurisdiction. With `entered` and `gate`: on the store's
// preparing thread, says it has started, then waits for the gate, holding
// later commits in the queue.
SubjectUpdate SetJurisdiction(const std::string& user, const std::string& code,
                              absl::Notification* entered = nullptr,
                              absl::Notification* gate = nullptr) {
  SubjectUpdate update;
  update.user_id = user;
  update.apply = [code, entered, gate](UpdateContext&, v1::Subject& s, v1::ChangeEvent& e) {
    if (entered != nullptr) entered->Notify();
    if (gate != nullptr) gate->WaitForNotification();
    *e.mutable_attributes()->mutable_before() = s.attributes();
    s.mutable_attributes()->set_jurisdiction(code);
    *e.mutable_attributes()->mutable_after() = s.attributes();
    e.set_kind(v1::CHANGE_KIND_SUBJECT_ATTRIBUTES);
    return absl::OkStatus();
  };
  return update;
}

std::vector<SubjectUpdate> One(SubjectUpdate update) {
  std::vector<SubjectUpdate> updates;
  updates.push_back(std::move(update));
  return updates;
}

RequestKey Key(const std::string& id) { return RequestKey{id, "fingerprint-" + id}; }

// Results of CommitAsync calls, by name.
class Results {
 public:
  std::function<void(absl::StatusOr<CommitResult>)> For(const std::string& name) {
    return [this, name](absl::StatusOr<CommitResult> result) {
      absl::MutexLock lock(&mu_);
      results_.emplace(name, std::move(result));
    };
  }
  absl::StatusOr<CommitResult> Await(const std::string& name) {
    absl::MutexLock lock(&mu_);
    auto done = [this, &name]()
                    ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return results_.count(name) > 0; };
    mu_.Await(absl::Condition(&done));
    return results_.at(name);
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, absl::StatusOr<CommitResult>> results_ ABSL_GUARDED_BY(mu_);
};

class DurabilityTest : public ::testing::Test {
 protected:
  void Open(absl::Duration reopen_interval = absl::ZeroDuration()) {
    StoreOptions options;
    options.data_dir = dir_.Sub("db");
    options.subject_index = true;
    options.rocksdb.file_system = fs_;
    options.reopen_interval = reopen_interval;
    options.on_write_state = [this](bool writable, const absl::Status& cause) {
      absl::MutexLock lock(&mu_);
      states_.push_back(writable ? "writable" : absl::StrCat("refusing: ", cause.message()));
    };
    auto store = ConsentStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  std::vector<std::string> States() {
    absl::MutexLock lock(&mu_);
    return states_;
  }
  std::string Jurisdiction(const std::string& user) {
    SubjectViewArena arena;
    std::vector<const SubjectView*> views;
    const absl::string_view id = user;
    EXPECT_TRUE(store_->GetSubjects({&id, 1}, &arena, &views).ok());
    return views[0] == nullptr ? "<none>" : std::string(views[0]->jurisdiction);
  }

  // Commits "first" (which waits for the gate), then `queued` behind it, so
  // that the queued commits form the next group; the gate opens once all
  // are queued.
  void CommitBehindAGate(Results& results, std::vector<std::pair<std::string, RequestKey>> queued) {
    // Members: the preparing thread may still be in the gate's Wait after
    // this returns.
    store_->CommitAsync(One(SetJurisdiction("first", "GB", &entered_, &gate_)), kNow, {},
                        results.For("first"));
    entered_.WaitForNotification();  // "first" is a group of its own
    for (auto& [name, key] : queued) {
      store_->CommitAsync(One(SetJurisdiction(name.substr(0, name.find('#')), "FR")), kNow, key,
                          results.For(name));
    }
    gate_.Notify();
  }

  TempDir dir_;
  // CommitBehindAGate's, once per test.
  absl::Notification entered_;
  absl::Notification gate_;
  std::shared_ptr<FaultFileSystem> fs_ = std::make_shared<FaultFileSystem>();
  std::unique_ptr<ConsentStore> store_;
  absl::Mutex mu_;
  std::vector<std::string> states_ ABSL_GUARDED_BY(mu_);
};

// A request and its replay in one group whose sync fails: neither may be
// answered OK (the replay used to be: only commits with changes in the
// batch got the error). The sync failed after the append, so the write is
// on disk after the reopen: a retry with the same request id is answered
// as a replay of it, at its revision, and the chain continues from it.
TEST_F(DurabilityTest, FailedSyncFailsTheWholeGroupAndTheRetryFindsTheWrite) {
  Open();
  ASSERT_TRUE(store_->Commit(One(SetJurisdiction("zero", "GB")), kNow).ok());
  fs_->FailWal(WalFault::kSync, /*after=*/1);  // the "first" group syncs, the next fails
  Results results;
  CommitBehindAGate(results, {{"alice", Key("r1")}, {"alice#replay", Key("r1")}});
  ASSERT_TRUE(results.Await("first").ok());
  EXPECT_EQ(results.Await("first")->revisions, std::vector<int64_t>{2});
  for (const char* name : {"alice", "alice#replay"}) {
    const absl::StatusOr<CommitResult> result = results.Await(name);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << name;
    EXPECT_THAT(result.status().message(), HasSubstr("the outcome of this write is unknown"))
        << name;
    EXPECT_THAT(result.status().message(), HasSubstr("injected WAL sync failure")) << name;
  }
  EXPECT_EQ(fs_->failures(), 1);
  EXPECT_EQ(store_->CurrentRevision(), 2);
  EXPECT_EQ(Jurisdiction("alice"), "<none>");  // never acknowledged
  ASSERT_THAT(States(), ElementsAre(HasSubstr("refusing: committing write")));

  // The retry reopens the database: the write was on disk after all.
  fs_->Heal();
  auto retry = store_->Commit(One(SetJurisdiction("alice", "FR")), kNow, Key("r1"));
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->outcome, CommitResult::Outcome::kReplayed);
  EXPECT_EQ(retry->revisions, std::vector<int64_t>{3});
  EXPECT_THAT(States(), ElementsAre(HasSubstr("refusing"), "writable"));
  EXPECT_EQ(store_->CurrentRevision(), 3);
  EXPECT_EQ(Jurisdiction("alice"), "FR");  // the subject index took it in
  auto history = store_->ReadUserEvents("alice", 0, 10);
  ASSERT_TRUE(history.ok());
  ASSERT_EQ(history->size(), 1u);
  EXPECT_EQ((*history)[0].revision(), 3);
  auto next = store_->Commit(One(SetJurisdiction("bob", "DE")), kNow);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->revisions, std::vector<int64_t>{4});
  auto chain = store_->VerifyChain(0, 0);
  ASSERT_TRUE(chain.ok());
  EXPECT_TRUE(chain->ok) << chain->detail;
  EXPECT_EQ(chain->verified, 4);
  auto stats = store_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->writes_refused, 0);
  EXPECT_EQ(stats->write_failures, 1);
  EXPECT_EQ(stats->reopens, 1);
}

// A failed append leaves nothing on disk: the retry writes afresh, and the
// revisions the failed group would have taken are not handed out twice.
TEST_F(DurabilityTest, FailedAppendLeavesNothingAndTheRetryWritesAfresh) {
  Open();
  ASSERT_TRUE(store_->Commit(One(SetJurisdiction("zero", "GB")), kNow).ok());
  fs_->FailWal(WalFault::kAppend);
  auto failed = store_->Commit(One(SetJurisdiction("alice", "FR")), kNow, Key("r1"));
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(failed.status().message(), HasSubstr("the outcome of this write is unknown"));
  fs_->Heal();
  auto retry = store_->Commit(One(SetJurisdiction("alice", "FR")), kNow, Key("r1"));
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->outcome, CommitResult::Outcome::kApplied);
  EXPECT_EQ(retry->revisions, std::vector<int64_t>{2});
  EXPECT_EQ(Jurisdiction("alice"), "FR");
  auto chain = store_->VerifyChain(0, 0);
  ASSERT_TRUE(chain.ok());
  EXPECT_TRUE(chain->ok) << chain->detail;
  EXPECT_EQ(chain->verified, 2);
}

// A group prepared on top of the failed one was not written, and says so.
TEST_F(DurabilityTest, GroupsBehindAFailedWriteAreNotWritten) {
  Open();
  fs_->FailWal(WalFault::kSync);
  // No reopen succeeds either, so a group prepared after the failure is
  // refused rather than written after a reopen.
  fs_->FailFileCreation(true);
  Results results;
  CommitBehindAGate(results, {{"alice", Key("a")}, {"bob", Key("b")}});
  EXPECT_THAT(results.Await("first").status().message(),
              HasSubstr("the outcome of this write is unknown"));
  for (const char* name : {"alice", "bob"}) {
    const absl::Status status = results.Await(name).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << name;
    // Prepared while "first" was being written, or after it failed.
    EXPECT_THAT(status.message(),
                ::testing::AnyOf(HasSubstr("not written: an earlier write in the pipeline failed"),
                                 HasSubstr("writes are refused")))
        << name << ": " << status;
  }
  EXPECT_EQ(store_->CurrentRevision(), 0);
}

// While the database cannot be reopened for writing, writes are refused
// with the reason, reads answer from what was committed (read-only), and
// once the fault is gone the next write reopens it, with no restart.
TEST_F(DurabilityTest, WritesAreRefusedUntilTheDatabaseReopensAndReadsGoOn) {
  Open();
  ASSERT_TRUE(store_->Commit(One(SetJurisdiction("alice", "GB")), kNow).ok());
  fs_->FailWal(WalFault::kAppend);
  fs_->FailFileCreation(true);  // the reopen cannot make its new files
  EXPECT_EQ(store_->Commit(One(SetJurisdiction("bob", "FR")), kNow).status().code(),
            absl::StatusCode::kUnavailable);
  auto refused = store_->Commit(One(SetJurisdiction("bob", "FR")), kNow);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(refused.status().message(),
              HasSubstr("writes are refused: a synced write failed (committing write: IO error: "
                        "injected WAL append failure) and reopening the database failed"));
  EXPECT_THAT(refused.status().message(), HasSubstr("checks still answer"));
  auto stats = store_->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->writes_refused, 1);
  // Reads: the index, and RocksDB (opened read-only).
  EXPECT_EQ(Jurisdiction("alice"), "GB");
  auto alice = store_->GetSubject("alice");
  ASSERT_TRUE(alice.ok()) << alice.status();
  EXPECT_EQ(alice->attributes().jurisdiction(), "GB");
  EXPECT_EQ(store_->GetSubject("bob").status().code(), absl::StatusCode::kNotFound);

  fs_->Heal();
  auto written = store_->Commit(One(SetJurisdiction("bob", "FR")), kNow);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(written->revisions, std::vector<int64_t>{2});
  EXPECT_EQ(Jurisdiction("bob"), "FR");
  EXPECT_THAT(States(), ElementsAre(HasSubstr("refusing"), "writable"));
  stats = store_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->writes_refused, 0);
  ASSERT_TRUE(store_->Close().ok());
  // Everything acknowledged is there after a clean reopen.
  fs_->Heal();
  Open();
  EXPECT_EQ(store_->CurrentRevision(), 2);
  EXPECT_EQ(store_->GetSubject("bob")->attributes().jurisdiction(), "FR");
}

// With a reopen interval, a write between attempts is refused at once
// without touching the disk.
TEST_F(DurabilityTest, ReopenIsTriedAtMostOncePerInterval) {
  Open(absl::Hours(1));
  fs_->FailWal(WalFault::kSync);
  EXPECT_EQ(store_->Commit(One(SetJurisdiction("alice", "GB")), kNow).status().code(),
            absl::StatusCode::kUnavailable);
  fs_->Heal();
  // The first refused write tries the reopen (the interval has not started).
  auto first = store_->Commit(One(SetJurisdiction("bob", "GB")), kNow);
  ASSERT_TRUE(first.ok()) << first.status();
  fs_->FailWal(WalFault::kSync);
  EXPECT_EQ(store_->Commit(One(SetJurisdiction("carol", "GB")), kNow).status().code(),
            absl::StatusCode::kUnavailable);
  fs_->Heal();
  auto refused = store_->Commit(One(SetJurisdiction("dave", "GB")), kNow);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(refused.status().message(), HasSubstr("has not reopened its database yet"));
  auto policy = store_->RecordPolicy(kNow, "text");
  EXPECT_EQ(policy.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace consent::storage
