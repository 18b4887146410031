#include "bench/user_picker.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace consent::bench {
namespace {

// Over a fine grid of u, each user gets the share of the grid that its
// probability says: 1 / (k + 1), normalised, for Zipf with s = 1.
TEST(UserPickerTest, ZipfGivesEachUserItsProbability) {
  constexpr int kUsers = 1000;
  constexpr int kGrid = 1'000'000;
  UserPicker picker(kUsers, /*zipf=*/true);
  double harmonic = 0;
  for (int k = 1; k <= kUsers; ++k) harmonic += 1.0 / k;
  std::vector<int> counts(kUsers, 0);
  int64_t previous = 0;
  for (int g = 0; g < kGrid; ++g) {
    const int64_t user = picker.PickAt(static_cast<double>(g) / kGrid);
    ASSERT_GE(user, previous) << "not monotonic at u = " << g << " / " << kGrid;
    ASSERT_LT(user, kUsers);
    previous = user;
    ++counts[user];
  }
  for (int k = 0; k < kUsers; ++k) {
    const double expected = kGrid / harmonic / (k + 1);
    EXPECT_NEAR(counts[k], expected, 1.0) << "user " << k;
  }
  EXPECT_EQ(picker.PickAt(0.0), 0);
  EXPECT_EQ(picker.PickAt(std::nextafter(1.0, 0.0)), kUsers - 1);
}

TEST(UserPickerTest, UniformSpreadsEvenly) {
  UserPicker picker(10, /*zipf=*/false);
  EXPECT_EQ(picker.PickAt(0.0), 0);
  EXPECT_EQ(picker.PickAt(0.55), 5);
  EXPECT_EQ(picker.PickAt(std::nextafter(1.0, 0.0)), 9);
  absl::BitGen random;
  for (int i = 0; i < 1000; ++i) {
    const int64_t user = picker.Pick(random);
    ASSERT_GE(user, 0);
    ASSERT_LT(user, 10);
  }
}

}  // namespace
}  // namespace consent::bench
