#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "storage/audit_chain.h"
#include "storage/consent_store.h"
#include "storage/history_runs.h"
#include "storage/keys.h"
#include "tests/test_util.h"

namespace consent::storage {
namespace {

using ::consent::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

const absl::Time kNow = absl::FromUnixSeconds(1'780'000'000);

// An update that sets the jurisdiction and records an attributes event.
SubjectUpdate SetJurisdiction(const std::string& user, const std::string& code) {
  SubjectUpdate update;
  update.user_id = user;
  update.apply = [code](UpdateContext&, v1::Subject& s, v1::ChangeEvent& e) {
    *e.mutable_attributes()->mutable_before() = s.attributes();
    s.mutable_attributes()->set_jurisdiction(code);
    *e.mutable_attributes()->mutable_after() = s.attributes();
    e.set_kind(v1::CHANGE_KIND_SUBJECT_ATTRIBUTES);
    return absl::OkStatus();
  };
  return update;
}

// An update that fails (ABORTED), so its whole commit writes nothing.
SubjectUpdate Failing(const std::string& user) {
  SubjectUpdate update;
  update.user_id = user;
  update.apply = [](UpdateContext&, v1::Subject&, v1::ChangeEvent&) {
    return absl::AbortedError("no");
  };
  return update;
}

std::unique_ptr<ConsentStore> OpenOrDie(const std::string& dir) {
  StoreOptions options;
  options.data_dir = dir;
  auto store = ConsentStore::Open(options);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? *std::move(store) : nullptr;
}

absl::Status Commit(ConsentStore& store, std::vector<SubjectUpdate> updates) {
  return store.Commit(std::move(updates), kNow).status();
}

TEST(StoreTest, NewStoreStartsAtRevisionZero) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  EXPECT_EQ(store->CurrentRevision(), 0);
  EXPECT_EQ(store->GetSubject("alice").status().code(), absl::StatusCode::kNotFound);
}

TEST(StoreTest, RevisionsAreConsecutiveAndSurviveReopen) {
  TempDir dir;
  {
    auto store = OpenOrDie(dir.Sub("db"));
    std::vector<SubjectUpdate> updates;
    updates.push_back(SetJurisdiction("alice", "GB"));
    updates.push_back(SetJurisdiction("bob", "FR"));
    auto result = store->Commit(std::move(updates), kNow);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_THAT(result->revisions, ElementsAre(1, 2));
    ASSERT_TRUE(Commit(*store, {SetJurisdiction("alice", "DE")}).ok());
    EXPECT_EQ(store->CurrentRevision(), 3);
  }
  auto store = OpenOrDie(dir.Sub("db"));
  EXPECT_EQ(store->CurrentRevision(), 3);
  auto alice = store->GetSubject("alice");
  ASSERT_TRUE(alice.ok());
  EXPECT_EQ(alice->attributes().jurisdiction(), "DE");
  EXPECT_EQ(alice->revision(), 3);
  EXPECT_EQ(alice->create_time().seconds(), absl::ToUnixSeconds(kNow));
  ASSERT_TRUE(Commit(*store, {SetJurisdiction("carol", "IE")}).ok());
  EXPECT_EQ(store->CurrentRevision(), 4);
}

TEST(StoreTest, FailingUpdateAbortsTheWholeCommit) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  std::vector<SubjectUpdate> updates;
  updates.push_back(SetJurisdiction("alice", "GB"));
  updates.push_back(Failing("bob"));
  EXPECT_EQ(Commit(*store, std::move(updates)).code(), absl::StatusCode::kAborted);
  EXPECT_EQ(store->CurrentRevision(), 0);
  EXPECT_EQ(store->GetSubject("alice").status().code(), absl::StatusCode::kNotFound);
  auto events = store->ReadEvents(0, 10);
  ASSERT_TRUE(events.ok());
  EXPECT_TRUE(events->empty());
}

TEST(StoreTest, LaterUpdateOfSameUserSeesEarlierOne) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  SubjectUpdate check;
  check.user_id = "alice";
  bool saw_gb = false, saw_exists = false;
  check.apply = [&](UpdateContext& context, v1::Subject& s, v1::ChangeEvent&) {
    saw_gb = s.attributes().jurisdiction() == "GB";
    saw_exists = context.exists();
    EXPECT_EQ(context.revision(), 2);
    EXPECT_EQ(s.revision(), 1);
    return absl::OkStatus();
  };
  std::vector<SubjectUpdate> updates;
  updates.push_back(SetJurisdiction("alice", "GB"));
  updates.push_back(std::move(check));
  ASSERT_TRUE(Commit(*store, std::move(updates)).ok());
  EXPECT_TRUE(saw_gb);
  EXPECT_TRUE(saw_exists);
}

TEST(StoreTest, ResultCarriesSubjectsOnlyWhereAsked) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  std::vector<SubjectUpdate> updates;
  updates.push_back(SetJurisdiction("alice", "GB"));
  updates.push_back(SetJurisdiction("bob", "FR"));
  updates.back().return_subject = false;
  auto result = store->Commit(std::move(updates), kNow);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->subjects.size(), 2u);
  EXPECT_EQ(result->subjects[0].user_id(), "alice");
  EXPECT_EQ(result->subjects[0].attributes().jurisdiction(), "GB");
  EXPECT_EQ(result->subjects[0].revision(), 1);
  EXPECT_EQ(result->subjects[1].ByteSizeLong(), 0u);
  // Only the result leaves it out: bob is written like alice.
  auto bob = store->GetSubject("bob");
  ASSERT_TRUE(bob.ok()) << bob.status();
  EXPECT_EQ(bob->attributes().jurisdiction(), "FR");
  EXPECT_EQ(bob->revision(), 2);
}

TEST(StoreTest, GetSubjectsKeepsOrderAndMarksMissing) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  std::vector<SubjectUpdate> updates;
  updates.push_back(SetJurisdiction("alice", "GB"));
  updates.push_back(SetJurisdiction("carol", "FR"));
  ASSERT_TRUE(Commit(*store, std::move(updates)).ok());
  std::vector<absl::string_view> ids = {"carol", "nobody", "alice", "carol"};
  SubjectViewArena arena;
  std::vector<const SubjectView*> out;
  ASSERT_TRUE(store->GetSubjects(ids, &arena, &out).ok());
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0]->jurisdiction, "FR");
  EXPECT_EQ(out[0]->revision, 2);
  EXPECT_EQ(out[1], nullptr);
  EXPECT_EQ(out[2]->jurisdiction, "GB");
  EXPECT_EQ(out[2]->revision, 1);
  EXPECT_EQ(out[3]->jurisdiction, "FR");
}

// What CommitAsync's callbacks saw, in the order they ran.
struct AsyncResults {
  absl::Mutex mu;
  std::vector<std::pair<int, absl::StatusOr<CommitResult>>> results ABSL_GUARDED_BY(mu);
  std::vector<std::thread::id> threads ABSL_GUARDED_BY(mu);

  std::function<void(absl::StatusOr<CommitResult>)> Callback(int index) {
    return [this, index](absl::StatusOr<CommitResult> result) {
      absl::MutexLock lock(&mu);
      results.emplace_back(index, std::move(result));
      threads.push_back(std::this_thread::get_id());
    };
  }
  size_t Count() {
    absl::MutexLock lock(&mu);
    return results.size();
  }
  // Queues `n` commits with CommitAsync, commit i making `updates_of(i)`,
  // then makes a blocking commit (user "last"), which queues behind them:
  // once it returns, every one before it has been answered. Its status.
  absl::Status QueueAndDrain(ConsentStore& store, int n,
                             const std::function<std::vector<SubjectUpdate>(int)>& updates_of) {
    for (int i = 0; i < n; ++i) store.CommitAsync(updates_of(i), kNow, {}, Callback(i));
    return Commit(store, {SetJurisdiction("last", "GB")});
  }
};

TEST(StoreTest, CommitAsyncAnswersInCommitOrderOnTheStoresThread) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  constexpr int kCommits = 200;
  AsyncResults async;
  auto updates_of = [](int i) {
    return std::vector<SubjectUpdate>{
        SetJurisdiction(absl::StrCat("user-", i % 7), i % 2 ? "GB" : "FR")};
  };
  ASSERT_TRUE(async.QueueAndDrain(*store, kCommits, updates_of).ok());
  absl::MutexLock lock(&async.mu);
  ASSERT_EQ(async.results.size(), static_cast<size_t>(kCommits));
  for (int i = 0; i < kCommits; ++i) {
    EXPECT_EQ(async.results[i].first, i);
    ASSERT_TRUE(async.results[i].second.ok()) << async.results[i].second.status();
    EXPECT_THAT(async.results[i].second->revisions, ElementsAre(i + 1));
    EXPECT_NE(async.threads[i], std::this_thread::get_id());
  }
  EXPECT_EQ(store->CurrentRevision(), kCommits + 1);
}

TEST(StoreTest, CloseWritesWhatWasQueuedAndRefusesTheRest) {
  TempDir dir;
  constexpr int kCommits = 100;
  AsyncResults async;
  {
    auto store = OpenOrDie(dir.Sub("db"));
    for (int i = 0; i < kCommits; ++i) {
      store->CommitAsync({SetJurisdiction(absl::StrCat("user-", i), "GB")}, kNow, {},
                         async.Callback(i));
    }
    ASSERT_TRUE(store->Close().ok());
    EXPECT_EQ(async.Count(), static_cast<size_t>(kCommits));
    // Refused at once, on the calling thread.
    store->CommitAsync({SetJurisdiction("late", "GB")}, kNow, {}, async.Callback(kCommits));
    absl::MutexLock lock(&async.mu);
    ASSERT_EQ(async.results.size(), static_cast<size_t>(kCommits + 1));
    EXPECT_EQ(async.results.back().second.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(async.threads.back(), std::this_thread::get_id());
    for (int i = 0; i < kCommits; ++i) {
      ASSERT_TRUE(async.results[i].second.ok()) << i << ": " << async.results[i].second.status();
    }
  }
  auto store = OpenOrDie(dir.Sub("db"));
  EXPECT_EQ(store->CurrentRevision(), kCommits);
  EXPECT_EQ(store->GetSubject(absl::StrCat("user-", kCommits - 1))->attributes().jurisdiction(),
            "GB");
  EXPECT_EQ(store->GetSubject("late").status().code(), absl::StatusCode::kNotFound);
}

// Commits queued together are prepared as one group; one that fails there
// is taken back whole, history index included, while the others in its
// group are written.
TEST(StoreTest, FailedCommitInAGroupLeavesNoTraceAndTheOthersAreWritten) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  constexpr int kCommits = 300;
  AsyncResults async;
  auto updates_of = [](int i) {
    std::vector<SubjectUpdate> updates;
    if (i % 3 == 1) {
      // Writes a record and its history, then fails.
      updates.push_back(SetJurisdiction(absl::StrCat("doomed-", i), "GB"));
      updates.push_back(Failing(absl::StrCat("user-", i % 5)));
    } else {
      updates.push_back(SetJurisdiction(absl::StrCat("user-", i % 5), i % 2 ? "GB" : "FR"));
    }
    return updates;
  };
  ASSERT_TRUE(async.QueueAndDrain(*store, kCommits, updates_of).ok());
  std::map<std::string, std::vector<int64_t>> written;  // user -> revisions acknowledged
  {
    absl::MutexLock lock(&async.mu);
    ASSERT_EQ(async.results.size(), static_cast<size_t>(kCommits));
    for (const auto& [i, result] : async.results) {
      if (i % 3 == 1) {
        EXPECT_EQ(result.status().code(), absl::StatusCode::kAborted) << i;
        continue;
      }
      ASSERT_TRUE(result.ok()) << i << ": " << result.status();
      ASSERT_EQ(result->revisions.size(), 1u);
      written[absl::StrCat("user-", i % 5)].push_back(result->revisions[0]);
    }
  }
  EXPECT_EQ(store->CurrentRevision(), kCommits - kCommits / 3 + 1);
  for (int i = 1; i < kCommits; i += 3) {
    const std::string user = absl::StrCat("doomed-", i);
    EXPECT_EQ(store->GetSubject(user).status().code(), absl::StatusCode::kNotFound) << user;
    auto events = store->ReadUserEvents(user, 0, 10);
    ASSERT_TRUE(events.ok()) << events.status();
    EXPECT_TRUE(events->empty()) << user << " has " << events->size() << " events";
  }
  for (const auto& [user, revisions] : written) {
    auto events = store->ReadUserEvents(user, 0, kCommits);
    ASSERT_TRUE(events.ok()) << events.status();
    std::vector<int64_t> read;
    for (const v1::ChangeEvent& event : *events) {
      EXPECT_EQ(event.user_id(), user);
      read.push_back(event.revision());
    }
    EXPECT_EQ(read, revisions) << user;
  }
  auto report = store->VerifyChain(0, 0);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok) << report->detail;
}

TEST(StoreTest, AsyncCommitOfNothingIsRefusedAtOnce) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  AsyncResults async;
  store->CommitAsync({}, kNow, {}, async.Callback(0));
  absl::MutexLock lock(&async.mu);
  ASSERT_EQ(async.results.size(), 1u);
  EXPECT_EQ(async.results[0].second.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(StoreTest, EventsAreReadInRevisionOrder) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  for (const char* code : {"GB", "FR", "DE"}) {
    ASSERT_TRUE(Commit(*store, {SetJurisdiction("alice", code)}).ok());
  }
  auto events = store->ReadEvents(2, 10);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[0].revision(), 2);
  EXPECT_EQ((*events)[0].attributes().before().jurisdiction(), "GB");
  EXPECT_EQ((*events)[0].attributes().after().jurisdiction(), "FR");
  EXPECT_EQ((*events)[1].revision(), 3);
  EXPECT_EQ((*events)[1].user_id(), "alice");
  EXPECT_EQ((*events)[1].event_time().seconds(), absl::ToUnixSeconds(kNow));
}

TEST(StoreTest, EmptyCommitIsInvalid) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  EXPECT_EQ(Commit(*store, {}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(StoreTest, SecondOpenOfSameDirectoryFailsOnTheLock) {
  TempDir dir;
  auto first = OpenOrDie(dir.Sub("db"));
  StoreOptions options;
  options.data_dir = dir.Sub("db");
  auto second = ConsentStore::Open(options);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.status().message(), HasSubstr(dir.Sub("db")));
  EXPECT_THAT(second.status().message(), HasSubstr("another consentd"));
}

TEST(StoreTest, CorruptDatabaseFailsWithDataLoss) {
  TempDir dir;
  {
    auto store = OpenOrDie(dir.Sub("db"));
    ASSERT_TRUE(Commit(*store, {SetJurisdiction("alice", "GB")}).ok());
  }
  // Overwrite every MANIFEST with garbage.
  for (const auto& entry : std::filesystem::directory_iterator(dir.Sub("db"))) {
    if (entry.path().filename().string().rfind("MANIFEST-", 0) == 0) {
      testing::WriteFile(entry.path().string(), std::string(4096, '\x5a'));
    }
  }
  StoreOptions options;
  options.data_dir = dir.Sub("db");
  auto store = ConsentStore::Open(options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss) << store.status();
  EXPECT_THAT(store.status().message(), HasSubstr(dir.Sub("db")));
}

TEST(StoreTest, RefusesForeignNonEmptyDirectory) {
  TempDir dir;
  std::filesystem::create_directories(dir.Sub("photos"));
  testing::WriteFile(dir.Sub("photos/cat.jpg"), "meow");
  StoreOptions options;
  options.data_dir = dir.Sub("photos");
  auto store = ConsentStore::Open(options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr("holds no consent-registry database"));
}

TEST(StoreTest, RefusesDataDirThatIsAFile) {
  TempDir dir;
  testing::WriteFile(dir.Sub("file"), "x");
  StoreOptions options;
  options.data_dir = dir.Sub("file");
  auto store = ConsentStore::Open(options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr("not a directory"));
}

TEST(StoreTest, CreatesMissingParentDirectories) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("a/b/c"));
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(std::filesystem::exists(dir.Sub("a/b/c/CURRENT")));
}

TEST(StoreTest, CheckpointHoldsExactlyTheWritesUpToItsRevision) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  ASSERT_TRUE(Commit(*store, {SetJurisdiction("alice", "GB")}).ok());
  ASSERT_TRUE(Commit(*store, {SetJurisdiction("bob", "FR")}).ok());
  auto revision = store->Checkpoint(dir.Sub("copy"));
  ASSERT_TRUE(revision.ok()) << revision.status();
  EXPECT_EQ(*revision, 2);
  ASSERT_TRUE(Commit(*store, {SetJurisdiction("alice", "DE")}).ok());
  EXPECT_EQ(store->Checkpoint(dir.Sub("copy")).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(store->Checkpoint(dir.Sub("no/such/parent")).status().code(),
            absl::StatusCode::kFailedPrecondition);

  auto copy = OpenOrDie(dir.Sub("copy"));
  EXPECT_EQ(copy->CurrentRevision(), 2);
  EXPECT_EQ(copy->GetSubject("alice")->attributes().jurisdiction(), "GB");
  EXPECT_EQ(copy->GetSubject("bob")->attributes().jurisdiction(), "FR");
  auto chain = copy->VerifyChain(0, 0);
  ASSERT_TRUE(chain.ok()) << chain.status();
  EXPECT_TRUE(chain->ok);
  EXPECT_EQ(chain->verified, 2);
  // The copy is independent: it continues its own history from revision 2.
  ASSERT_TRUE(Commit(*copy, {SetJurisdiction("carol", "IE")}).ok());
  EXPECT_EQ(copy->CurrentRevision(), 3);
  EXPECT_EQ(store->GetSubject("carol").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(store->Close().ok());
  EXPECT_EQ(store->Checkpoint(dir.Sub("late")).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(StoreTest, StatsReportStorageHealthAndSyncedWrites) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.Sub("db");
  options.rocksdb.collect_statistics = true;
  std::atomic<int> synced{0};
  options.on_synced_write = [&synced](absl::Duration d) {
    EXPECT_GT(d, absl::ZeroDuration());
    synced.fetch_add(1);
  };
  auto store = ConsentStore::Open(options);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE(Commit(**store, {SetJurisdiction("alice", "GB")}).ok());
  ASSERT_TRUE(Commit(**store, {SetJurisdiction("bob", "GB")}).ok());
  EXPECT_EQ(synced.load(), 2);
  auto stats = (*store)->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_GE(stats->rocksdb.block_cache_hits, 0);
  EXPECT_GE(stats->rocksdb.block_cache_misses, 0);
  EXPECT_EQ(stats->rocksdb.write_stall_micros, 0);
  EXPECT_EQ(stats->rocksdb.write_stopped, 0);
  EXPECT_GT(stats->rocksdb.memtable_bytes, 0);
  EXPECT_EQ(stats->estimated_subjects, 2);

  auto plain = OpenOrDie(dir.Sub("plain"));
  auto without = plain->Stats();
  ASSERT_TRUE(without.ok());
  EXPECT_EQ(without->rocksdb.block_cache_hits, -1);   // statistics off
  EXPECT_EQ(without->rocksdb.write_stall_micros, 0);  // from stall notifications, always kept
}

// An update that records an objection to `purpose`, with its source.
SubjectUpdate Object(const std::string& user, const std::string& purpose) {
  SubjectUpdate update;
  update.user_id = user;
  update.apply = [purpose](UpdateContext& context, v1::Subject& s, v1::ChangeEvent& e) {
    v1::Preference* p = s.add_preferences();
    p->set_purpose(purpose);
    p->set_state(v1::PREFERENCE_STATE_OBJECTED);
    p->set_revision(context.revision());
    p->mutable_source()->set_channel("settings");
    p->mutable_expire_time()->set_seconds(1'900'000'000);
    e.set_kind(v1::CHANGE_KIND_PREFERENCE);
    return absl::OkStatus();
  };
  return update;
}

// Opens with the subject index. With `pause`, the load stops once it has
// taken its snapshot (snapshot_taken) until `resume` is notified.
struct IndexedStore {
  explicit IndexedStore(StoreOptions options, bool pause = false) {
    options.subject_index = true;
    if (pause) {
      options.on_index_snapshot = [this] {
        snapshot_taken.Notify();
        resume.WaitForNotification();
      };
    }
    options.on_index_loaded = [this](const absl::Status& s, int64_t subjects, absl::Duration) {
      load_status = s;
      loaded_subjects = subjects;
      ++load_reports;
      loaded.Notify();
    };
    auto opened = ConsentStore::Open(options);
    EXPECT_TRUE(opened.ok()) << opened.status();
    if (opened.ok()) store = *std::move(opened);
  }
  ~IndexedStore() {
    if (!resume.HasBeenNotified()) resume.Notify();
    if (store) store->Close().IgnoreError();
    EXPECT_EQ(load_reports.load(), 1);
  }
  // The view GetSubjects gives of one user (null: none), on `arena`.
  const SubjectView* Read(absl::string_view user) {
    std::vector<const SubjectView*> records;
    EXPECT_TRUE(store->GetSubjects({&user, 1}, &arena, &records).ok());
    return records.at(0);
  }
  int64_t Ready() { return store->Stats()->index_ready; }

  std::unique_ptr<ConsentStore> store;
  SubjectViewArena arena;
  absl::Notification snapshot_taken, resume;
  absl::Notification loaded;
  absl::Status load_status;
  int64_t loaded_subjects = -1;
  std::atomic<int> load_reports{0};
};

// A batch from the index: every item gets its own user's view, in order,
// with users repeated many times (ParseMany parses a repeat once), users
// sharing its memory of the batch (1,000 users for 256 places), and users
// without a record.
TEST(StoreTest, SubjectIndexBatchWithRepeatedUsersGivesEachItsOwnView) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.Sub("db");
  IndexedStore indexed(options);
  indexed.loaded.WaitForNotification();
  ConsentStore& store = *indexed.store;
  constexpr int kUsers = 1000;
  std::vector<SubjectUpdate> updates;
  for (int u = 0; u < kUsers; ++u) {
    updates.push_back(SetJurisdiction(absl::StrCat("user-", u), absl::StrCat("J", u)));
  }
  ASSERT_TRUE(Commit(store, std::move(updates)).ok());
  std::vector<std::string> names;
  std::vector<int> users;  // -1: a user without a record
  for (int i = 0; i < 5000; ++i) {
    // Item i: user 0 every third item, else one of 1,000 (some repeated,
    // 1 in 10 without a record).
    const int u = i % 3 == 0 ? 0 : (i * 7919) % (kUsers + kUsers / 10);
    users.push_back(u < kUsers ? u : -1);
    names.push_back(u < kUsers ? absl::StrCat("user-", u) : absl::StrCat("nobody-", u));
  }
  const std::vector<absl::string_view> ids(names.begin(), names.end());
  SubjectViewArena arena;
  std::vector<const SubjectView*> records;
  ASSERT_TRUE(store.GetSubjects(ids, &arena, &records).ok());
  ASSERT_EQ(records.size(), ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (users[i] < 0) {
      EXPECT_EQ(records[i], nullptr) << ids[i];
    } else {
      ASSERT_NE(records[i], nullptr) << ids[i];
      EXPECT_EQ(records[i]->jurisdiction, absl::StrCat("J", users[i])) << ids[i];
    }
  }
}

TEST(StoreTest, SubjectIndexServesEveryAcknowledgedWriteAndIsRebuiltAtOpen) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.Sub("db");
  {
    IndexedStore indexed(options);
    indexed.loaded.WaitForNotification();
    ASSERT_TRUE(indexed.load_status.ok()) << indexed.load_status;
    EXPECT_EQ(indexed.loaded_subjects, 0);
    EXPECT_EQ(indexed.Ready(), 1);
    ConsentStore& store = *indexed.store;
    ASSERT_TRUE(Commit(store, {SetJurisdiction("alice", "GB")}).ok());
    ASSERT_TRUE(
        Commit(store, {SetJurisdiction("alice", "DE"), Object("alice", "ai_training")}).ok());
    // GetSubjects: the decision view, from the index.
    SubjectViewArena arena;
    std::vector<const SubjectView*> records;
    const std::vector<absl::string_view> ids = {"bob", "alice"};
    ASSERT_TRUE(store.GetSubjects(ids, &arena, &records).ok());
    ASSERT_EQ(records.size(), 2u);
    EXPECT_EQ(records[0], nullptr);
    ASSERT_NE(records[1], nullptr);
    EXPECT_EQ(records[1]->jurisdiction, "DE");
    EXPECT_EQ(records[1]->revision, 3);
    ASSERT_EQ(records[1]->preferences.size(), 1u);
    const PreferenceView& view = records[1]->preferences[0];
    EXPECT_EQ(view.purpose, "ai_training");
    EXPECT_EQ(view.state, v1::PREFERENCE_STATE_OBJECTED);
    EXPECT_EQ(view.revision, 3);
    EXPECT_EQ(view.expire_time, absl::FromUnixSeconds(1'900'000'000));
    EXPECT_EQ(view.effective_time, std::nullopt);
    // GetSubject: the whole record, from RocksDB.
    auto full = store.GetSubject("alice");
    ASSERT_TRUE(full.ok());
    EXPECT_EQ(full->preferences(0).source().channel(), "settings");
    EXPECT_TRUE(full->has_update_time());
    EXPECT_EQ(store.GetSubject("bob").status().code(), absl::StatusCode::kNotFound);
    auto stats = store.Stats();
    ASSERT_TRUE(stats.ok());
    EXPECT_EQ(stats->index_subjects, 1);
    EXPECT_GT(stats->index_bytes, 0);
  }
  // Written without the index; opened with it: loaded from RocksDB.
  {
    auto store = OpenOrDie(options.data_dir);
    ASSERT_TRUE(Commit(*store, {SetJurisdiction("carol", "IE")}).ok());
    EXPECT_EQ(store->Stats()->index_ready, -1);
  }
  IndexedStore indexed(options);
  indexed.loaded.WaitForNotification();
  ASSERT_TRUE(indexed.load_status.ok()) << indexed.load_status;
  EXPECT_EQ(indexed.loaded_subjects, 2);
  EXPECT_EQ(indexed.Ready(), 1);
  EXPECT_EQ(indexed.Read("alice")->jurisdiction, "DE");
  EXPECT_EQ(indexed.Read("alice")->preferences[0].state, v1::PREFERENCE_STATE_OBJECTED);
  EXPECT_EQ(indexed.Read("carol")->jurisdiction, "IE");
  EXPECT_EQ(indexed.Read("bob"), nullptr);
}

// The index loads in the background from a snapshot. Writes made while it
// loads are read from RocksDB until it is ready, and the load must not put
// the snapshot's older record over them.
TEST(StoreTest, WritesDuringTheIndexLoadAreKept) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.Sub("db");
  {
    auto store = OpenOrDie(options.data_dir);
    ASSERT_TRUE(
        Commit(*store, {SetJurisdiction("alice", "GB"), SetJurisdiction("bob", "GB")}).ok());
  }
  IndexedStore indexed(options, /*pause=*/true);
  indexed.snapshot_taken.WaitForNotification();
  EXPECT_EQ(indexed.Ready(), 0);
  ASSERT_TRUE(
      Commit(*indexed.store, {SetJurisdiction("alice", "DE"), Object("alice", "ai_training"),
                              SetJurisdiction("carol", "IE")})
          .ok());
  // Not loaded yet: read from RocksDB.
  EXPECT_EQ(indexed.Read("alice")->jurisdiction, "DE");
  EXPECT_EQ(indexed.Read("carol")->jurisdiction, "IE");
  indexed.resume.Notify();
  indexed.loaded.WaitForNotification();
  ASSERT_TRUE(indexed.load_status.ok()) << indexed.load_status;
  EXPECT_EQ(indexed.loaded_subjects, 2);  // the snapshot's alice and bob
  EXPECT_EQ(indexed.Ready(), 1);
  EXPECT_EQ(indexed.store->Stats()->index_subjects, 3);
  const auto alice = indexed.Read("alice");
  EXPECT_EQ(alice->jurisdiction, "DE");
  ASSERT_EQ(alice->preferences.size(), 1u);
  EXPECT_EQ(alice->revision, 4);
  EXPECT_EQ(indexed.Read("bob")->jurisdiction, "GB");
  EXPECT_EQ(indexed.Read("carol")->jurisdiction, "IE");
}

// Closing while the index loads stops the load; it reports once.
TEST(StoreTest, CloseStopsTheIndexLoad) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.Sub("db");
  {
    auto store = OpenOrDie(options.data_dir);
    std::vector<SubjectUpdate> updates;
    for (int i = 0; i < 2000; ++i) updates.push_back(SetJurisdiction(absl::StrCat("u", i), "GB"));
    ASSERT_TRUE(Commit(*store, std::move(updates)).ok());
  }
  IndexedStore indexed(options, /*pause=*/true);
  indexed.snapshot_taken.WaitForNotification();
  std::thread closer([&] { EXPECT_TRUE(indexed.store->Close().ok()); });
  // Close asks the loader to stop before it waits for it, so whatever the
  // order here, the load ends (cancelled, or complete if it won the race).
  indexed.resume.Notify();
  closer.join();
  ASSERT_TRUE(indexed.loaded.HasBeenNotified());
  EXPECT_TRUE(indexed.load_status.ok() || absl::IsCancelled(indexed.load_status))
      << indexed.load_status;
  EXPECT_EQ(indexed.store->GetSubject("u1").status().code(), absl::StatusCode::kFailedPrecondition);
}

// The database under a closed store, opened with RocksDB itself.
class RawDb {
 public:
  explicit RawDb(const std::string& dir) {
    std::vector<std::string> names;
    EXPECT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir, &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    for (const auto& name : names) families.emplace_back(name, rocksdb::ColumnFamilyOptions());
    rocksdb::DB* raw = nullptr;
    EXPECT_TRUE(rocksdb::DB::Open(rocksdb::DBOptions(), dir, families, &handles_, &raw).ok());
    db_.reset(raw);
    for (size_t i = 0; i < names.size(); ++i) by_name_[names[i]] = handles_[i];
  }
  ~RawDb() {
    for (auto* handle : handles_) EXPECT_TRUE(db_->DestroyColumnFamilyHandle(handle).ok());
  }
  rocksdb::DB* db() { return db_.get(); }
  rocksdb::ColumnFamilyHandle* family(const std::string& name) { return by_name_.at(name); }
  // The keys of a column family that start with `prefix`.
  int Count(const std::string& family_name, const std::string& prefix) {
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator(rocksdb::ReadOptions(), family(family_name)));
    int n = 0;
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) ++n;
    return n;
  }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::map<std::string, rocksdb::ColumnFamilyHandle*> by_name_;
};

// A subject record that does not parse: the index is not used (reads stay
// on RocksDB, which reports that record as lost, and serve the others).
TEST(StoreTest, AnUnreadableRecordLeavesReadsOnRocksDb) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.Sub("db");
  {
    auto store = OpenOrDie(options.data_dir);
    ASSERT_TRUE(Commit(*store, {SetJurisdiction("alice", "GB")}).ok());
  }
  {
    RawDb raw(options.data_dir);
    ASSERT_TRUE(
        raw.db()->Put(rocksdb::WriteOptions(), raw.family("subjects"), "mallory", "\xff\xff").ok());
  }
  IndexedStore indexed(options);
  indexed.loaded.WaitForNotification();
  EXPECT_EQ(indexed.load_status.code(), absl::StatusCode::kDataLoss) << indexed.load_status;
  EXPECT_EQ(indexed.Ready(), 0);
  EXPECT_EQ(indexed.Read("alice")->jurisdiction, "GB");
  const absl::string_view mallory = "mallory";
  std::vector<const SubjectView*> records;
  EXPECT_EQ(indexed.store->GetSubjects({&mallory, 1}, &indexed.arena, &records).code(),
            absl::StatusCode::kDataLoss);
}

// The revisions of a user's events, `limit` at a time after `after`.
std::vector<int64_t> HistoryOf(ConsentStore& store, const std::string& user, int64_t after = 0,
                               size_t limit = 1000) {
  std::vector<int64_t> revisions;
  auto events = store.ReadUserEvents(user, after, limit);
  EXPECT_TRUE(events.ok()) << events.status();
  if (!events.ok()) return revisions;
  for (const v1::ChangeEvent& event : *events) {
    EXPECT_EQ(event.user_id(), user);
    revisions.push_back(event.revision());
  }
  return revisions;
}

// The history index's newest entries are in memory and written to RocksDB
// in bulk; a user's history reads the same wherever its entries are.
TEST(StoreTest, HistoryReadsTheSameBeforeAndAfterItsBulkWrites) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.Sub("db");
  options.history_index_batch = 10;
  // "a" must not pick up "ab"'s entries: the 0 byte ends the user id.
  const std::vector<std::string> users = {"a", "ab", "b"};
  std::map<std::string, std::vector<int64_t>> expected;
  {
    auto opened = ConsentStore::Open(options);
    ASSERT_TRUE(opened.ok()) << opened.status();
    ConsentStore& store = **opened;
    for (int i = 0; i < 57; ++i) {
      const std::string& user = users[i % 3 == 2 ? 2 : i % 2];
      auto result = store.Commit({SetJurisdiction(user, i % 2 ? "GB" : "FR")}, kNow);
      ASSERT_TRUE(result.ok()) << result.status();
      expected[user].push_back(result->revisions[0]);
      for (const auto& u : users) ASSERT_EQ(HistoryOf(store, u), expected[u]) << u << " at " << i;
    }
    // Pages: two at a time, after a given revision.
    const std::vector<int64_t>& a = expected["a"];
    EXPECT_EQ(HistoryOf(store, "a", 0, 2), std::vector<int64_t>(a.begin(), a.begin() + 2));
    EXPECT_EQ(HistoryOf(store, "a", a[4], 2), std::vector<int64_t>(a.begin() + 5, a.begin() + 7));
    EXPECT_TRUE(HistoryOf(store, "a", a.back()).empty());
    ASSERT_TRUE(store.Close().ok());
  }
  {
    // Close wrote everything: one key per event, and no file left behind.
    RawDb raw(options.data_dir);
    for (const auto& u : users) {
      EXPECT_EQ(raw.Count("user_events", UserEventPrefix(u)), static_cast<int>(expected[u].size()))
          << u;
    }
    std::string indexed;
    ASSERT_TRUE(raw.db()
                    ->Get(rocksdb::ReadOptions(), raw.family("meta"), "history_indexed", &indexed)
                    .ok());
    EXPECT_EQ(indexed, EncodeRevision(57));
  }
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("db") + "/history-index.sst.tmp"));
  auto store = OpenOrDie(options.data_dir);
  for (const auto& u : users) EXPECT_EQ(HistoryOf(*store, u), expected[u]) << u;
}

// Single writes add a run each to the in-memory tail; the history thread
// merges them so reads search few, and reads during and after the merges
// see every entry once.
TEST(StoreTest, ManySmallCommitsLeaveFewHistoryRunsAndReadTheSame) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.Sub("db");
  options.history_index_batch = 1'000'000;  // no bulk write: all in memory
  const std::vector<std::string> users = {"a", "ab", "b"};
  std::map<std::string, std::vector<int64_t>> expected;
  auto store = OpenOrDie(options.data_dir);
  constexpr int kCommits = 300;
  for (int i = 0; i < kCommits; ++i) {
    const std::string& user = users[static_cast<size_t>(i) % users.size()];
    auto result = store->Commit({SetJurisdiction(user, i % 2 ? "GB" : "FR")}, kNow);
    ASSERT_TRUE(result.ok()) << result.status();
    expected[user].push_back(result->revisions[0]);
    if (i % 10 == 0) {
      for (const auto& u : users) ASSERT_EQ(HistoryOf(*store, u), expected[u]) << u << " at " << i;
    }
  }
  // The merges run in the background: wait until the tail is short again.
  absl::StatusOr<StoreStats> stats;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (true) {
    stats = store->Stats();
    ASSERT_TRUE(stats.ok()) << stats.status();
    if (stats->history_runs <= 64 || absl::Now() > deadline) break;
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_LE(stats->history_runs, 64);
  EXPECT_EQ(stats->history_pending, kCommits);
  for (const auto& u : users) EXPECT_EQ(HistoryOf(*store, u), expected[u]) << u;
  const std::vector<int64_t>& a = expected["a"];
  EXPECT_EQ(HistoryOf(*store, "a", a[40], 3), std::vector<int64_t>(a.begin() + 41, a.begin() + 44));
}

// A copy taken while entries are only in memory (a backup, or the state
// after a crash) holds the events: the entries are rebuilt from them.
TEST(StoreTest, HistoryEntriesOnlyInMemoryAreRebuiltFromTheEvents) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.Sub("db");
  std::vector<int64_t> alice;
  auto store = OpenOrDie(options.data_dir);
  for (int i = 0; i < 5; ++i) {
    auto result = store->Commit({SetJurisdiction(i % 2 ? "alice" : "bob", "GB")}, kNow);
    ASSERT_TRUE(result.ok()) << result.status();
    if (i % 2) alice.push_back(result->revisions[0]);
  }
  ASSERT_TRUE(store->Checkpoint(dir.Sub("copy")).ok());
  // As if a bulk write had died half way.
  {
    std::ofstream leftover(dir.Sub("copy") + "/history-index.sst.tmp");
    leftover << "not a table";
  }
  {
    RawDb raw(dir.Sub("copy"));
    EXPECT_EQ(raw.Count("user_events", ""), 0);  // nothing written in bulk yet
  }
  auto copy = OpenOrDie(dir.Sub("copy"));
  EXPECT_EQ(HistoryOf(*copy, "alice"), alice);
  EXPECT_EQ(HistoryOf(*copy, "bob").size(), 3u);
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("copy") + "/history-index.sst.tmp"));
  // And the copy goes on from there.
  auto next = copy->Commit({SetJurisdiction("alice", "FR")}, kNow);
  ASSERT_TRUE(next.ok());
  alice.push_back(next->revisions[0]);
  EXPECT_EQ(HistoryOf(*copy, "alice"), alice);
}

// A bulk write that fails keeps its entries in memory, still read, and is
// tried again once another batch has come.
TEST(StoreTest, FailedHistoryBulkWriteKeepsTheEntriesAndIsRetried) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.Sub("db");
  options.history_index_batch = 5;
  absl::Mutex mu;
  std::vector<std::pair<absl::StatusCode, int64_t>> writes;  // guarded by mu
  options.on_history_written = [&](const absl::Status& status, int64_t entries) {
    absl::MutexLock lock(&mu);
    writes.emplace_back(status.code(), entries);
  };
  auto await_writes = [&](size_t n) {
    absl::MutexLock lock(&mu);
    auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return writes.size() >= n; };
    mu.Await(absl::Condition(&done));
  };
  auto opened = ConsentStore::Open(options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  ConsentStore& store = **opened;
  // A directory where the bulk write builds its file: the write fails.
  std::filesystem::create_directories(dir.Sub("db") + "/history-index.sst.tmp/blocked");
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Commit(store, {SetJurisdiction("alice", "GB")}).ok());
  await_writes(1);
  {
    absl::MutexLock lock(&mu);
    EXPECT_NE(writes[0].first, absl::StatusCode::kOk);
    EXPECT_EQ(writes[0].second, 5);
  }
  auto stats = store.Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->history_pending, 5);
  EXPECT_EQ(stats->history_write_failures, 1);
  EXPECT_EQ(HistoryOf(store, "alice"), std::vector<int64_t>({1, 2, 3, 4, 5}));

  std::filesystem::remove_all(dir.Sub("db") + "/history-index.sst.tmp");
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Commit(store, {SetJurisdiction("bob", "GB")}).ok());
  await_writes(2);
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(writes[1].first, absl::StatusCode::kOk);
    EXPECT_EQ(writes[1].second, 10);
  }
  stats = store.Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->history_pending, 0);
  EXPECT_EQ(stats->history_write_failures, 1);
  EXPECT_EQ(HistoryOf(store, "alice"), std::vector<int64_t>({1, 2, 3, 4, 5}));
  EXPECT_EQ(HistoryOf(store, "bob"), std::vector<int64_t>({6, 7, 8, 9, 10}));
}

// A database from before the bulk writes has no history_indexed record:
// every event there has its entry, and the record is written at Open.
TEST(StoreTest, DatabaseWithoutTheHistoryRecordCountsEveryEventIndexed) {
  TempDir dir;
  const std::string db = dir.Sub("db");
  {
    auto store = OpenOrDie(db);
    ASSERT_TRUE(Commit(*store, {SetJurisdiction("alice", "GB")}).ok());
    ASSERT_TRUE(Commit(*store, {SetJurisdiction("alice", "FR")}).ok());
  }
  {
    RawDb raw(db);
    ASSERT_TRUE(
        raw.db()->Delete(rocksdb::WriteOptions(), raw.family("meta"), "history_indexed").ok());
  }
  {
    auto store = OpenOrDie(db);
    EXPECT_EQ(HistoryOf(*store, "alice"), std::vector<int64_t>({1, 2}));
    ASSERT_TRUE(Commit(*store, {SetJurisdiction("alice", "DE")}).ok());
    EXPECT_EQ(HistoryOf(*store, "alice"), std::vector<int64_t>({1, 2, 3}));
  }
  RawDb raw(db);
  std::string indexed;
  ASSERT_TRUE(
      raw.db()->Get(rocksdb::ReadOptions(), raw.family("meta"), "history_indexed", &indexed).ok());
  EXPECT_EQ(indexed, EncodeRevision(3));
}

TEST(HistoryRunTest, MergeFromTakesTheNewestRunsBackToABiggerOne) {
  EXPECT_EQ(MergeFrom({}), 0u);
  EXPECT_EQ(MergeFrom({5}), 1u);
  EXPECT_EQ(MergeFrom({5, 9}), 0u);             // at least two
  EXPECT_EQ(MergeFrom({100, 9, 5}), 1u);        // 9 + 5 < 100
  EXPECT_EQ(MergeFrom({100, 3, 1, 1, 1}), 1u);  // 1 + 1 + 1 >= 3, 6 < 100
  EXPECT_EQ(MergeFrom({8, 4, 2, 1, 1}), 0u);    // each no bigger than the newer ones together
  EXPECT_EQ(MergeFrom({64, 32, 16, 8, 4, 2}), 4u);
}

TEST(HistoryRunTest, MergesManyRunsInOrder) {
  std::vector<std::shared_ptr<const HistoryRun>> runs;
  std::vector<std::string> all;
  for (int r = 0; r < 7; ++r) {
    std::vector<std::string> keys;
    for (int k = r; k < 60; k += 7) keys.push_back(UserEventKey(absl::StrCat("u", k % 10), k));
    std::sort(keys.begin(), keys.end());
    all.insert(all.end(), keys.begin(), keys.end());
    runs.push_back(std::make_shared<const HistoryRun>(keys, 0));
  }
  runs.push_back(std::make_shared<const HistoryRun>(std::vector<std::string>{}, 0));
  std::sort(all.begin(), all.end());
  const std::vector<absl::string_view> merged = MergeRuns(runs);
  EXPECT_EQ(std::vector<std::string>(merged.begin(), merged.end()), all);
  const HistoryRun one(merged, 59);
  ASSERT_EQ(one.size(), all.size());
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(one.key(i), all[i]);
  EXPECT_EQ(one.last_revision(), 59);
}

TEST(HistoryRunTest, CollectsOneUsersRevisionsAndMergesInOrder) {
  auto run = [](std::vector<std::string> keys, int64_t last) {
    std::sort(keys.begin(), keys.end());
    return std::make_shared<const HistoryRun>(keys, last);
  };
  auto first = run({UserEventKey("a", 1), UserEventKey("ab", 2), UserEventKey("a", 3)}, 3);
  auto second = run({UserEventKey("a", 300), UserEventKey("b", 4)}, 300);
  std::vector<int64_t> revisions;
  first->CollectRevisions(UserEventPrefix("a"), &revisions);
  second->CollectRevisions(UserEventPrefix("a"), &revisions);
  EXPECT_THAT(revisions, ElementsAre(1, 3, 300));
  revisions.clear();
  first->CollectRevisions(UserEventPrefix("zz"), &revisions);
  EXPECT_TRUE(revisions.empty());
  std::vector<std::string> merged;
  for (absl::string_view key : MergeRuns({second, first})) merged.emplace_back(key);
  EXPECT_THAT(merged,
              ElementsAre(UserEventKey("a", 1), UserEventKey("a", 3), UserEventKey("a", 300),
                          UserEventKey("ab", 2), UserEventKey("b", 4)));
}

TEST(StoreTest, ClosedStoreRejectsCalls) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  ASSERT_TRUE(store->Close().ok());
  EXPECT_EQ(store->GetSubject("alice").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Commit(*store, {SetJurisdiction("alice", "GB")}).code(),
            absl::StatusCode::kFailedPrecondition);
}

// Concurrent commits share WAL syncs (group commit), but each keeps its own
// outcome: failures write nothing, successes get unique consecutive
// revisions, replays of one request id write once, and the chain holds.
TEST(StoreTest, ConcurrentCommitsKeepTheirOwnOutcomes) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  constexpr int kThreads = 8, kPerThread = 200;
  std::atomic<int> applied{0}, failed{0}, replays{0};
  std::vector<std::thread> threads;
  std::mutex mu;
  std::vector<int64_t> revisions;
  std::map<int, std::set<int64_t>> replay_revisions;  // request -> revisions seen
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::vector<SubjectUpdate> updates;
        updates.push_back(SetJurisdiction(absl::StrCat("user-", t, "-", i % 7), "GB"));
        RequestKey key;
        if (i % 10 == 0) {
          // Every thread sends the same 20 requests: each must be written once.
          key.request_id = absl::StrCat("shared-", i);
          key.fingerprint = "same";
        }
        if (i % 13 == 0) {
          updates.push_back(Failing("doomed"));
        }
        auto result = store->Commit(std::move(updates), kNow, key);
        ASSERT_TRUE(result.ok() || absl::IsAborted(result.status())) << result.status();
        std::lock_guard<std::mutex> lock(mu);
        if (!result.ok()) {
          ++failed;
        } else if (result->outcome == CommitResult::Outcome::kReplayed) {
          ++replays;
          replay_revisions[i].insert(result->revisions[0]);
        } else {
          ++applied;
          revisions.push_back(result->revisions[0]);
          if (!key.request_id.empty()) replay_revisions[i].insert(result->revisions[0]);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  std::sort(revisions.begin(), revisions.end());
  ASSERT_EQ(static_cast<int>(revisions.size()), applied.load());
  for (size_t i = 0; i < revisions.size(); ++i)
    EXPECT_EQ(revisions[i], static_cast<int64_t>(i + 1));
  EXPECT_EQ(store->CurrentRevision(), applied.load());
  // 8 threads x 16 doomed commits; 20 shared requests written once each.
  EXPECT_EQ(failed.load(), kThreads * 16);
  for (const auto& [request, seen] : replay_revisions) {
    EXPECT_EQ(seen.size(), 1u) << "request shared-" << request << " written more than once";
  }
  auto report = store->VerifyChain(0, 0);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok) << report->detail;
  EXPECT_EQ(report->verified, applied.load());
  EXPECT_EQ(store->GetSubject("doomed").status().code(), absl::StatusCode::kNotFound);
}

// Commits are pipelined: a group is prepared while the one before it syncs.
// Each commit here increments a counter in a subject that the groups
// before it also changed, so a group that read the database instead of the
// group still being written would lose increments.
TEST(StoreTest, PipelinedGroupsReadTheGroupBeingWritten) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  constexpr int kThreads = 8, kPerThread = 150, kUsers = 3;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const std::string user = absl::StrCat("counter-", (t + i) % kUsers);
        SubjectUpdate update;
        update.user_id = user;
        update.apply = [](UpdateContext&, v1::Subject& s, v1::ChangeEvent& e) {
          s.set_exclusion_count(s.exclusion_count() + 1);
          e.set_kind(v1::CHANGE_KIND_CONTENT_EXCLUSION);
          return absl::OkStatus();
        };
        auto result = store->Commit({std::move(update)}, kNow);
        ASSERT_TRUE(result.ok()) << result.status();
        // Read-your-writes: the acknowledged count is there already.
        const int64_t mine = result->subjects[0].exclusion_count();
        auto now = store->GetSubject(user);
        ASSERT_TRUE(now.ok());
        EXPECT_GE(now->exclusion_count(), mine);
      }
    });
  }
  for (auto& t : threads) t.join();
  int64_t total = 0;
  for (int u = 0; u < kUsers; ++u) {
    auto subject = store->GetSubject(absl::StrCat("counter-", u));
    ASSERT_TRUE(subject.ok());
    total += subject->exclusion_count();
  }
  EXPECT_EQ(total, kThreads * kPerThread);
  EXPECT_EQ(store->CurrentRevision(), kThreads * kPerThread);
  auto report = store->VerifyChain(0, 0);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok) << report->detail;
}

TEST(AuditChainTest, StoredBytesAreTheEventWithItsHashes) {
  v1::ChangeEvent event;
  event.set_revision(7);
  event.set_user_id("alice");
  event.mutable_preference()->set_purpose("ai_training");
  event.mutable_preference()->mutable_after()->set_state(v1::PREFERENCE_STATE_OBJECTED);
  const std::string previous(kHashBytes, '\x11');
  ChainedEvent chained;
  chained.bytes = "left over from an earlier event";
  ChainEvent(previous, event, &chained);
  v1::ChangeEvent parsed;
  ASSERT_TRUE(parsed.ParseFromString(chained.bytes));
  EXPECT_EQ(parsed.previous_hash(), previous);
  EXPECT_EQ(parsed.hash(), chained.hash);
  EXPECT_EQ(EventHash(previous, parsed), chained.hash);
  // The stored bytes are exactly what protobuf itself writes for the event.
  EXPECT_EQ(parsed.SerializeAsString(), chained.bytes);
  EXPECT_EQ(chained.hash.size(), kHashBytes);
  // Any change to the event changes the hash.
  parsed.mutable_preference()->mutable_after()->set_state(v1::PREFERENCE_STATE_CONSENTED);
  EXPECT_NE(EventHash(previous, parsed), chained.hash);
}

TEST(AuditChainTest, Sha256KnownAnswer) {
  // FIPS 180-2 test vector.
  std::string digest = Sha256("abc");
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : digest) {
    hex.push_back(kHex[c >> 4]);
    hex.push_back(kHex[c & 15]);
  }
  EXPECT_EQ(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(KeysTest, RevisionEncodingSortsNumerically) {
  EXPECT_LT(EncodeRevision(255), EncodeRevision(256));
  EXPECT_LT(EncodeRevision(1), EncodeRevision(1LL << 40));
  int64_t decoded = 0;
  ASSERT_TRUE(DecodeRevision(EncodeRevision(123456789012), &decoded));
  EXPECT_EQ(decoded, 123456789012);
  EXPECT_FALSE(DecodeRevision("short", &decoded));
  EXPECT_LT(UserEventKey("ab", 9), UserEventKey("ab", 10));
  // "a" and its events sort before "a!" (the separator is the 0 byte).
  EXPECT_LT(UserEventKey("a", 1LL << 50), UserEventKey("a!", 1));
}

// 2,500 expired ids go in three chunks; a commit goes through between
// chunks (from the hook, which would deadlock if the purge held the write
// lock throughout); an expired id used again keeps its new record; ids
// within the window stay.
TEST(StoreTest, PurgeForgetsExpiredIdsInChunksLettingCommitsThrough) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.Sub("db");
  options.request_id_retention = absl::Hours(24);
  ConsentStore* store_for_hook = nullptr;
  std::vector<int64_t> chunks;
  options.on_purge_chunk = [&](int64_t purged) {
    chunks.push_back(purged);
    std::vector<SubjectUpdate> updates;
    updates.push_back(SetJurisdiction(absl::StrCat("between-", chunks.size()), "GB"));
    EXPECT_TRUE(store_for_hook->Commit(std::move(updates), kNow + absl::Hours(30)).ok());
  };
  auto opened = ConsentStore::Open(options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  std::unique_ptr<ConsentStore> store = *std::move(opened);
  store_for_hook = store.get();
  auto commit_with_id = [&](const std::string& id, absl::Time at) {
    std::vector<SubjectUpdate> updates;
    updates.push_back(SetJurisdiction("alice", "GB"));
    updates.back().request = RequestKey{id, "fingerprint"};
    return store->Commit(std::move(updates), at);
  };
  for (int i = 0; i < 2500; ++i) ASSERT_TRUE(commit_with_id(absl::StrCat("old-", i), kNow).ok());
  ASSERT_TRUE(commit_with_id("recent", kNow + absl::Hours(20)).ok());
  // "old-7" expired, then used again at a later time: a new write.
  auto reused = commit_with_id("old-7", kNow + absl::Hours(25));
  ASSERT_TRUE(reused.ok());
  EXPECT_EQ(reused->outcome, CommitResult::Outcome::kApplied);

  auto purged = store->PurgeRequestIds(kNow + absl::Hours(1));
  ASSERT_TRUE(purged.ok()) << purged.status();
  EXPECT_EQ(*purged, 2499);                            // all but old-7, whose record is the new one
  EXPECT_THAT(chunks, ElementsAre(1000, 2000, 2499));  // "old-7" sorts into the third
  // Replays: old-7 and recent still answer; old-0 is a new write.
  auto replay = commit_with_id("old-7", kNow + absl::Hours(26));
  ASSERT_TRUE(replay.ok());
  EXPECT_EQ(replay->outcome, CommitResult::Outcome::kReplayed);
  EXPECT_EQ(replay->revisions, reused->revisions);
  replay = commit_with_id("recent", kNow + absl::Hours(26));
  ASSERT_TRUE(replay.ok());
  EXPECT_EQ(replay->outcome, CommitResult::Outcome::kReplayed);
  // A second purge finds the old-7 time key gone too, and nothing else.
  EXPECT_EQ(*store->PurgeRequestIds(kNow + absl::Hours(1)), 0);
}

TEST(KeysTest, RequestRecordsRoundTripAndOldOnesStillDecode) {
  RequestRecord record{1'780'000'000'000'000'000, std::string(32, 'f'), {7, 9}, "reply bytes"};
  RequestRecord decoded;
  ASSERT_TRUE(DecodeRequestRecord(EncodeRequestRecord(record), &decoded));
  EXPECT_EQ(decoded.time_nanos, record.time_nanos);
  EXPECT_EQ(decoded.fingerprint, record.fingerprint);
  EXPECT_THAT(decoded.revisions, ElementsAre(7, 9));
  EXPECT_EQ(decoded.reply, "reply bytes");
  // As written before replies were kept: time, size, fingerprint, revisions.
  const std::string old = EncodeRevision(5) + EncodeRevision(3) + "abc" + EncodeRevision(11);
  ASSERT_TRUE(DecodeRequestRecord(old, &decoded));
  EXPECT_EQ(decoded.time_nanos, 5);
  EXPECT_EQ(decoded.fingerprint, "abc");
  EXPECT_THAT(decoded.revisions, ElementsAre(11));
  EXPECT_EQ(decoded.reply, "");
  // Truncated or lying about its sizes: refused, never read past the end.
  const std::string good = EncodeRequestRecord(record);
  for (size_t n = 0; n < 16 + 32 + 8; ++n) {
    EXPECT_FALSE(DecodeRequestRecord(good.substr(0, n), &decoded)) << n;
  }
  std::string lying = good;
  lying.replace(16 + 32, 8, EncodeRevision(1'000'000));
  EXPECT_FALSE(DecodeRequestRecord(lying, &decoded));
}

// A replay is answered with what the first attempt's `reply` gave, kept
// with the request id: in the same group, from the database, and after a
// reopen; the replay's own `reply` is never called.
TEST(StoreTest, ReplaysCarryTheFirstAttemptsReply) {
  TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  int calls = 0;
  auto update = [&calls](const std::string& code) {
    SubjectUpdate u = SetJurisdiction("alice", code);
    u.request = RequestKey{"form-1", "fingerprint"};
    u.reply = [&calls](const v1::Subject& subject, const v1::ChangeEvent& event) {
      ++calls;
      return absl::StrCat(subject.attributes().jurisdiction(), "@", event.revision());
    };
    return u;
  };
  std::vector<SubjectUpdate> updates;
  updates.push_back(update("GB"));
  updates.push_back(update("FR"));  // a replay of the first, in the same commit
  auto first = store->Commit(std::move(updates), kNow);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_THAT(first->replies, ElementsAre("GB@1", "GB@1"));
  EXPECT_THAT(first->replayed, ElementsAre(false, true));
  std::vector<SubjectUpdate> again;
  again.push_back(update("DE"));
  auto replay = store->Commit(std::move(again), kNow);
  ASSERT_TRUE(replay.ok());
  EXPECT_THAT(replay->replies, ElementsAre("GB@1"));
  ASSERT_TRUE(store->Close().ok());
  store = OpenOrDie(dir.Sub("db"));
  std::vector<SubjectUpdate> after_reopen;
  after_reopen.push_back(update("DE"));
  replay = store->Commit(std::move(after_reopen), kNow);
  ASSERT_TRUE(replay.ok());
  EXPECT_THAT(replay->replies, ElementsAre("GB@1"));
  EXPECT_EQ(replay->outcome, CommitResult::Outcome::kReplayed);  // nothing written
  EXPECT_EQ(store->CurrentRevision(), 1);
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace consent::storage
