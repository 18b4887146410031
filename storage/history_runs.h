// The user history index's newest entries, kept in memory until they are
// written to RocksDB in bulk (docs/storage.md, "The history index").
// Internal to storage/.
#ifndef CONSENT_STORAGE_HISTORY_RUNS_H_
#define CONSENT_STORAGE_HISTORY_RUNS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace consent::storage {

// An immutable, sorted set of user_events keys (UserEventKey): those one
// group commit wrote. Thread safe (immutable once built).
class HistoryRun {
 public:
  // `keys` must be sorted and unique. `last_revision`: the highest revision
  // among them.
  HistoryRun(const std::vector<std::string>& keys, int64_t last_revision);
  HistoryRun(const std::vector<absl::string_view>& keys, int64_t last_revision);

  size_t size() const { return ends_.size(); }
  absl::string_view key(size_t i) const {
    const size_t begin = i == 0 ? 0 : ends_[i - 1];
    return absl::string_view(bytes_).substr(begin, ends_[i] - begin);
  }
  int64_t last_revision() const { return last_revision_; }

  // Appends to `out` the revisions of the keys that start with `prefix` (a
  // user id and its 0 byte), in order.
  void CollectRevisions(absl::string_view prefix, std::vector<int64_t>* out) const;

 private:
  std::string bytes_;         // the keys, one after another
  std::vector<size_t> ends_;  // where each key ends in bytes_
  int64_t last_revision_;
};

// The keys of `runs`, merged in order (runs never share a key).
std::vector<absl::string_view> MergeRuns(
    const std::vector<std::shared_ptr<const HistoryRun>>& runs);

// Which runs of a tail to merge into one so that readers, who search every
// run, have few to search: given the runs' sizes, oldest first, the index
// of the first of the newest runs to merge — back from the newest, while
// the next older run is no bigger than those taken together. After such a
// merge each run is bigger than all newer ones together, so a tail of n
// entries has at most about log2(n) runs plus those added since. Returns
// sizes.size() when there is nothing to merge (fewer than two runs).
size_t MergeFrom(const std::vector<size_t>& sizes);

}  // namespace consent::storage

#endif  // CONSENT_STORAGE_HISTORY_RUNS_H_
