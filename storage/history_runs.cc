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
  for (const auto& run : runs) {
    for (size_t i = 0; i < run->size(); ++i) keys.push_back(run->key(i));
  }
  std::sort(keys.begin(), keys.end());
  return keys;
}

}  // namespace consent::storage
