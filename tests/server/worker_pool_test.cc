#include "server/worker_pool.h"

#include <atomic>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace consent {
namespace {

TEST(WorkerPoolTest, RunsEverythingScheduledBeforeItIsDestroyed) {
  std::atomic<int> ran{0};
  {
    WorkerPool pool(4, "test-pool");
    for (int i = 0; i < 1000; ++i) pool.Schedule([&ran] { ran.fetch_add(1); });
  }
  EXPECT_EQ(ran.load(), 1000);
}

TEST(WorkerPoolTest, RunsAsManyAtOnceAsItHasThreads) {
  constexpr int kThreads = 3;
  WorkerPool pool(kThreads, "test-pool");
  absl::Mutex mu;
  int started = 0;
  absl::Notification all_started;
  absl::Notification release;
  for (int i = 0; i < kThreads; ++i) {
    pool.Schedule([&] {
      {
        absl::MutexLock lock(&mu);
        if (++started == kThreads) all_started.Notify();
      }
      // Each holds its thread until every one has started: only a pool
      // running kThreads functions at once gets here with all of them.
      release.WaitForNotification();
    });
  }
  EXPECT_TRUE(all_started.WaitForNotificationWithTimeout(absl::Seconds(30)));
  release.Notify();
}

TEST(WorkerPoolTest, OneThreadRunsInScheduleOrder) {
  std::vector<int> order;
  {
    WorkerPool pool(1, "test-pool");
    for (int i = 0; i < 100; ++i) pool.Schedule([&order, i] { order.push_back(i); });
  }
  ASSERT_EQ(order.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[i], i);
}

TEST(WorkerPoolTest, TryScheduleRefusesWhenTheQueueIsFull) {
  absl::Notification release;
  std::atomic<int> ran{0};
  {
    WorkerPool pool(1, "test", /*max_queued=*/2);
    absl::Notification started;
    pool.Schedule([&] {
      started.Notify();
      release.WaitForNotification();
    });
    started.WaitForNotification();  // the one thread is busy
    EXPECT_TRUE(pool.TrySchedule([&] { ran.fetch_add(1); }));
    EXPECT_TRUE(pool.TrySchedule([&] { ran.fetch_add(1); }));
    EXPECT_FALSE(pool.TrySchedule([&] { ran.fetch_add(100); }));
    release.Notify();
  }
  EXPECT_EQ(ran.load(), 2);
}

}  // namespace
}  // namespace consent
