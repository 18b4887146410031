// RevisionNotifier: waiters wake for a revision beyond what they saw, or
// for good when it closes. Threads meet through the notifier itself;
// nothing sleeps.
#include "server/revision_notifier.h"

#include <thread>

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace consent {
namespace {

TEST(RevisionNotifierTest, KeepsTheHighestRevisionNotified) {
  RevisionNotifier notifier;
  EXPECT_EQ(notifier.revision(), 0);
  notifier.Notify(5);
  notifier.Notify(3);  // a late notification of an earlier commit
  EXPECT_EQ(notifier.revision(), 5);
}

TEST(RevisionNotifierTest, ARevisionAlreadyBeyondAnswersAtOnce) {
  RevisionNotifier notifier;
  notifier.Notify(5);
  // With no time to wait: true (not closed) because 5 > 4 is there.
  EXPECT_TRUE(notifier.WaitBeyond(4, absl::InfiniteFuture()));
}

TEST(RevisionNotifierTest, ADeadlineThatPassedReturnsWithoutANotification) {
  RevisionNotifier notifier;
  EXPECT_TRUE(notifier.WaitBeyond(0, absl::InfinitePast()));
  EXPECT_EQ(notifier.revision(), 0);
}

TEST(RevisionNotifierTest, ANotificationBeyondWakesTheWaiter) {
  RevisionNotifier notifier;
  notifier.Notify(2);
  bool open = false;
  std::thread waiter([&] { open = notifier.WaitBeyond(2, absl::InfiniteFuture()); });
  notifier.Notify(3);
  waiter.join();  // returns only once 3 > 2 (no deadline)
  EXPECT_TRUE(open);
}

TEST(RevisionNotifierTest, ClosingWakesEveryWaiterForGood) {
  RevisionNotifier notifier;
  bool first = true, second = true;
  std::thread a([&] { first = notifier.WaitBeyond(0, absl::InfiniteFuture()); });
  std::thread b([&] { second = notifier.WaitBeyond(0, absl::InfiniteFuture()); });
  notifier.Close();
  a.join();
  b.join();
  EXPECT_FALSE(first);
  EXPECT_FALSE(second);
  // And every later wait returns at once.
  EXPECT_FALSE(notifier.WaitBeyond(0, absl::InfiniteFuture()));
}

}  // namespace
}  // namespace consent
