// DrainGate and DrainGuard: admission until a drain starts, and a drain
// that waits for exactly the calls in flight. Threads meet through
// notifications; nothing sleeps.
#include "server/drain_gate.h"

#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace consent {
namespace {

TEST(DrainGateTest, AdmitsUntilTheDrainStartsAndRefusesAfterwards) {
  DrainGate gate;
  EXPECT_FALSE(gate.draining());
  ASSERT_TRUE(gate.Enter());
  gate.Exit();
  EXPECT_EQ(gate.DrainUntil(absl::InfinitePast()), 0);
  EXPECT_TRUE(gate.draining());
  EXPECT_FALSE(gate.Enter());
  // A refused call left nothing in flight.
  EXPECT_EQ(gate.DrainUntil(absl::InfinitePast()), 0);
}

TEST(DrainGateTest, ADrainWhoseDeadlinePassedReportsTheCallsStillInFlight) {
  DrainGate gate;
  ASSERT_TRUE(gate.Enter());
  ASSERT_TRUE(gate.Enter());
  EXPECT_EQ(gate.DrainUntil(absl::InfinitePast()), 2);
  gate.Exit();
  EXPECT_EQ(gate.DrainUntil(absl::InfinitePast()), 1);
  gate.Exit();
  EXPECT_EQ(gate.DrainUntil(absl::InfinitePast()), 0);
}

TEST(DrainGateTest, ADrainWaitsForTheCallInFlightToExit) {
  DrainGate gate;
  ASSERT_TRUE(gate.Enter());
  int64_t left = -1;
  absl::Notification drained;
  std::thread drainer([&] {
    left = gate.DrainUntil(absl::InfiniteFuture());
    drained.Notify();
  });
  // The drain has started once new calls are refused; the call in flight
  // still holds it.
  while (!gate.draining()) std::this_thread::yield();
  EXPECT_FALSE(gate.Enter());
  EXPECT_FALSE(drained.HasBeenNotified());
  gate.Exit();
  drainer.join();
  EXPECT_TRUE(drained.HasBeenNotified());
  EXPECT_EQ(left, 0);
}

TEST(DrainGuardTest, AnAdmittedGuardExitsWhenItGoesAndARefusedOneDoesNot) {
  DrainGate gate;
  {
    DrainGuard guard(&gate);
    EXPECT_TRUE(guard.admitted());
    EXPECT_EQ(gate.DrainUntil(absl::InfinitePast()), 1);
    DrainGuard refused(&gate);
    EXPECT_FALSE(refused.admitted());
  }
  EXPECT_EQ(gate.DrainUntil(absl::InfinitePast()), 0);
}

}  // namespace
}  // namespace consent
