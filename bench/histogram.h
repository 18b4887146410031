// A log-linear latency histogram (HDR style): values are bucketed by their
// power of two and, within it, into 32 linear sub-buckets, so every
// percentile is within about 3% of the true value from 1 ns to hours.
// Not thread safe: one per thread, merged at the end.
#ifndef CONSENT_BENCH_HISTOGRAM_H_
#define CONSENT_BENCH_HISTOGRAM_H_

#include <algorithm>
#include <array>
#include <cstdint>

namespace consent::bench {

class Histogram {
 public:
  static constexpr int kSubBits = 5;  // 32 sub-buckets per power of two
  static constexpr int kBuckets = (64 - kSubBits) << kSubBits;

  void Record(int64_t value) {
    if (value < 0) value = 0;
    ++counts_[Index(static_cast<uint64_t>(value))];
    ++count_;
    max_ = std::max(max_, value);
  }

  void Merge(const Histogram& other) {
    for (int i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
    count_ += other.count_;
    max_ = std::max(max_, other.max_);
  }

  int64_t count() const { return count_; }
  int64_t max() const { return max_; }

  // The value at quantile q (0..1): the upper bound of the bucket that
  // holds it (never more than the maximum seen).
  int64_t Quantile(double q) const {
    if (count_ == 0) return 0;
    const int64_t rank =
        std::max<int64_t>(1, static_cast<int64_t>(q * static_cast<double>(count_) + 0.5));
    int64_t seen = 0;
    for (int i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) return std::min<int64_t>(UpperBound(i), max_);
    }
    return max_;
  }

 private:
  static int Index(uint64_t v) {
    if (v < (1u << kSubBits)) return static_cast<int>(v);
    const int top = 63 - __builtin_clzll(v);  // position of the highest bit
    const int shift = top - kSubBits;
    const int sub = static_cast<int>((v >> shift) & ((1u << kSubBits) - 1));
    return ((shift + 1) << kSubBits) + sub;
  }
  static int64_t UpperBound(int index) {
    if (index < (1 << kSubBits)) return index;
    const int shift = (index >> kSubBits) - 1;
    const int64_t sub = index & ((1 << kSubBits) - 1);
    const int64_t base = (int64_t{1} << (shift + kSubBits)) + (sub << shift);
    return base + (int64_t{1} << shift) - 1;
  }

  std::array<int64_t, kBuckets> counts_{};
  int64_t count_ = 0;
  int64_t max_ = 0;
};

}  // namespace consent::bench

#endif  // CONSENT_BENCH_HISTOGRAM_H_
