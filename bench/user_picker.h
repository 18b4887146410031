// consent-bench's choice of users: uniform, or Zipf-distributed.
#ifndef CONSENT_BENCH_USER_PICKER_H_
#define CONSENT_BENCH_USER_PICKER_H_

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/random/distributions.h"
#include "absl/random/uniform_real_distribution.h"

namespace consent::bench {

// Picks user numbers in [0, users): uniform, or Zipf with exponent 1
// (user k with probability proportional to 1 / (k + 1)).
//
// Zipf uses rejection-inversion (W. Hörmann and G. Derflinger, "Rejection-
// inversion to generate variates from monotone discrete distributions",
// ACM TOMACS 6(3), 1996), which needs no table: a few exp/log calls a pick
// (more only when a draw is rejected). A binary search over
// a cumulative table of 1,000,000 users missed the cache on every pick
// while the server shared the cores, and took 17.6% of the machine's samples
// under the BatchCheck load (docs/performance.md).
//
// Thread-compatible; Pick is const and may be called concurrently with
// distinct generators.
class UserPicker {
 public:
  // `users` >= 1.
  UserPicker(int64_t users, bool zipf)
      : users_(users),
        zipf_(zipf),
        // With exponent 1, the integral of the hat function h(x) = 1 / x is
        // H(x) = log(x) and its inverse is exp.
        h_first_(std::log(1.5) - 1.0),
        h_last_(std::log(static_cast<double>(users) + 0.5)),
        squeeze_(2.0 - std::exp(std::log(2.5) - 0.5)) {}

  template <typename Generator>
  int64_t Pick(Generator& random) const {
    if (!zipf_) return absl::Uniform<int64_t>(random, 0, users_);
    absl::uniform_real_distribution<double> unit(0.0, 1.0);
    for (;;) {
      // u is uniform over (H(1.5) - h(1), H(users + 0.5)], the hat's area.
      const double u = h_last_ + unit(random) * (h_first_ - h_last_);
      const double x = std::exp(u);
      const int64_t k = std::clamp<int64_t>(static_cast<int64_t>(x + 0.5), 1, users_);
      const double kd = static_cast<double>(k);
      // Accept when x is close enough to k that the hat and the
      // distribution agree (the squeeze), or when u lies under k's bar.
      if (kd - x <= squeeze_ || u >= std::log(kd + 0.5) - 1.0 / kd) return k - 1;
    }
  }

 private:
  int64_t users_;
  bool zipf_;
  double h_first_;
  double h_last_;
  double squeeze_;
};

}  // namespace consent::bench

#endif  // CONSENT_BENCH_USER_PICKER_H_
