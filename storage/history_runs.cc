#include "storage/history_runs.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "storage/keys.h"

namespace consent::storage {

HistoryRun::HistoryRun(const std::vector<std::string>& keys, int64_t last_revision)
    : last_revision_(last_revision) {
  size_t bytes = 0;
  for (const std::string& key : keys) bytes += key.size();
  bytes_.reserve(bytes);
  ends_.reserve(keys.size());
  for (const std::string& key : keys) {
    bytes_.append(key);
    ends_.push_back(bytes_.size());
  }
}

HistoryRun::HistoryRun(const std::vector<absl::string_view>& keys, int64_t last_revision)
    : last_revision_(last_revision) {
  size_t bytes = 0;
  for (absl::string_view key : keys) bytes += key.size();
  bytes_.reserve(bytes);
  ends_.reserve(keys.size());
  for (absl::string_view key : keys) {
    bytes_.append(key.data(), key.size());
    ends_.push_back(bytes_.size());
  }
}

void HistoryRun::CollectRevisions(absl::string_view prefix, std::vector<int64_t>* out) const {
  size_t lo = 0, hi = size();
  while (lo < hi) {  // the first key not below `prefix`
    const size_t mid = lo + (hi - lo) / 2;
    if (key(mid) < prefix) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  for (size_t i = lo; i < size() && absl::StartsWith(key(i), prefix); ++i) {
    int64_t revision = 0;
    if (DecodeRevision(key(i).substr(prefix.size()), &revision)) out->push_back(revision);
  }
}

std::vector<absl::string_view> MergeRuns(
    const std::vector<std::shared_ptr<const HistoryRun>>& runs) {
  std::vector<absl::string_view> keys;
  size_t total = 0;
  for (const auto& run : runs) total += run->size();
  keys.reserve(total);
  // Each run is sorted: merge neighbours pairwise, log2(runs) passes.
  std::vector<size_t> ends;  // where each sorted stretch of `keys` ends
  for (const auto& run : runs) {
    for (size_t i = 0; i < run->size(); ++i) keys.push_back(run->key(i));
    if (run->size() > 0) ends.push_back(keys.size());
  }
  while (ends.size() > 1) {
    std::vector<size_t> merged;
    for (size_t i = 0; i < ends.size(); i += 2) {
      if (i + 1 == ends.size()) {
        merged.push_back(ends[i]);
        break;
      }
      const size_t begin = i == 0 ? 0 : ends[i - 1];
      std::inplace_merge(keys.begin() + static_cast<std::ptrdiff_t>(begin),
                         keys.begin() + static_cast<std::ptrdiff_t>(ends[i]),
                         keys.begin() + static_cast<std::ptrdiff_t>(ends[i + 1]));
      merged.push_back(ends[i + 1]);
    }
    ends = std::move(merged);
  }
  return keys;
}

size_t MergeFrom(const std::vector<size_t>& sizes) {
  if (sizes.size() < 2) return sizes.size();
  size_t from = sizes.size() - 1;
  size_t taken = sizes[from];
  while (from > 0 && (sizes[from - 1] <= taken || from == sizes.size() - 1)) {
    --from;
    taken += sizes[from];
  }
  return from;
}

}  // namespace consent::storage
