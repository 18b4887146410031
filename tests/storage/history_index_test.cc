// The user history index over the real RocksDB: reads that find the same
// events before and after bulk writes, the in-memory tail's runs and their
// merges, the rebuild after a crash, a failed bulk write.
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
#include "tests/storage/store_test_util.h"
#include "tests/test_util.h"

namespace consent::storage {
namespace {

using ::consent::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

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

}  // namespace
}  // namespace consent::storage
