#include "bench/user_picker.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace consent::bench {
namespace {

// How many times each of `users` users is picked in `picks` picks from a
// generator seeded with `seed` (so each test is deterministic).
std::vector<int64_t> Counts(const UserPicker& picker, int users, int picks, uint64_t seed) {
  std::mt19937_64 random(seed);
  std::vector<int64_t> counts(static_cast<size_t>(users), 0);
  for (int i = 0; i < picks; ++i) {
    const int64_t user = picker.Pick(random);
    EXPECT_GE(user, 0);
    EXPECT_LT(user, users);
    if (user < 0 || user >= users) return counts;
    ++counts[static_cast<size_t>(user)];
  }
  return counts;
}

// Zipf with exponent 1: user k is picked with probability 1 / (k + 1),
// normalised. Two million picks from a fixed seed (so the test is
// deterministic); every user's count is within 5 standard deviations of
// its expectation, and the chi-squared statistic over all users is within
// 5 standard deviations of its mean (999 degrees of freedom).
TEST(UserPickerTest, ZipfGivesEachUserItsProbability) {
  constexpr int kUsers = 1000;
  constexpr int kPicks = 2'000'000;
  const std::vector<int64_t> counts =
      Counts(UserPicker(kUsers, /*zipf=*/true), kUsers, kPicks, 20261127);
  double harmonic = 0;
  for (int k = 1; k <= kUsers; ++k) harmonic += 1.0 / k;
  double chi_squared = 0;
  for (int k = 0; k < kUsers; ++k) {
    const double expected = kPicks / harmonic / (k + 1);
    const double deviation = static_cast<double>(counts[static_cast<size_t>(k)]) - expected;
    EXPECT_LT(std::abs(deviation), 5 * std::sqrt(expected)) << "user " << k;
    chi_squared += deviation * deviation / expected;
  }
  const double degrees = kUsers - 1;
  EXPECT_LT(chi_squared, degrees + 5 * std::sqrt(2 * degrees));
}

TEST(UserPickerTest, ZipfOverOneUserAlwaysPicksIt) {
  UserPicker picker(1, /*zipf=*/true);
  std::mt19937_64 random(1);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(picker.Pick(random), 0);
}

TEST(UserPickerTest, UniformSpreadsEvenly) {
  constexpr int kUsers = 10;
  constexpr int kPicks = 100'000;
  const std::vector<int64_t> counts = Counts(UserPicker(kUsers, /*zipf=*/false), kUsers, kPicks, 7);
  const double expected = static_cast<double>(kPicks) / kUsers;
  for (int k = 0; k < kUsers; ++k) {
    EXPECT_NEAR(static_cast<double>(counts[static_cast<size_t>(k)]), expected,
                5 * std::sqrt(expected))
        << "user " << k;
  }
}

}  // namespace
}  // namespace consent::bench
