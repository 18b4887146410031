// consent-bench's choice of users: uniform, or Zipf-distributed.
#ifndef CONSENT_BENCH_USER_PICKER_H_
#define CONSENT_BENCH_USER_PICKER_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/random/random.h"

namespace consent::bench {

// Picks user numbers: uniform, or Zipf (s = 1) over [0, users) through a
// precomputed cumulative distribution. (A guide table that starts each
// search next to its answer was tried: zipf batches were no faster, so the
// search's cost is not what slows them; docs/performance.md.)
class UserPicker {
 public:
  // `users` >= 1.
  UserPicker(int64_t users, bool zipf) : users_(users) {
    if (!zipf) return;
    const size_t n = static_cast<size_t>(users);
    cdf_.resize(n);
    double sum = 0;
    for (size_t i = 0; i < n; ++i) sum += 1.0 / static_cast<double>(i + 1);
    double running = 0;
    for (size_t i = 0; i < n; ++i) {
      running += 1.0 / static_cast<double>(i + 1) / sum;
      cdf_[i] = running;
    }
    // Rounding can leave the sum a little under 1; a u above it would find
    // no user.
    cdf_[n - 1] = 1.0;
  }
  int64_t Pick(absl::BitGen& random) const {
    if (cdf_.empty()) return absl::Uniform<int64_t>(random, 0, users_);
    return PickAt(absl::Uniform(random, 0.0, 1.0));
  }
  // The user for u in [0, 1): uniform, users * u; Zipf, the first user
  // whose cumulative probability reaches u.
  int64_t PickAt(double u) const {
    if (cdf_.empty()) {
      return std::min(static_cast<int64_t>(u * static_cast<double>(users_)), users_ - 1);
    }
    return std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin();
  }

 private:
  int64_t users_;
  std::vector<double> cdf_;  // empty for uniform
};

}  // namespace consent::bench

#endif  // CONSENT_BENCH_USER_PICKER_H_
