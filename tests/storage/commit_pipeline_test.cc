// The group commit over the real RocksDB: asynchronous commits answered
// in order, a failing commit inside a group, Close with commits queued,
// concurrent writers, and groups prepared while the previous one syncs.
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

}  // namespace
}  // namespace consent::storage
