// The user history index (user_events: one key per event, user id then
// revision; docs/storage.md, "The history index"). Each written group
// commit adds its keys to an in-memory tail of sorted runs
// (history_runs.h); a background thread writes the tail to RocksDB in bulk
// once it holds enough entries, and merges runs meanwhile so that readers,
// who search every run, have few to search. HistoryTail is that tail and
// its thread; the RocksDB side (the bulk write, rebuilding the tail at
// Open, reads through both) is RocksDbStore's, in history_index.cc.
// Internal to storage/.
#ifndef CONSENT_STORAGE_HISTORY_INDEX_H_
#define CONSENT_STORAGE_HISTORY_INDEX_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "storage/history_runs.h"

namespace consent::storage {

// Thread safety: every method may be called concurrently, except Start and
// Stop (one thread).
class HistoryTail {
 public:
  using Runs = std::vector<std::shared_ptr<const HistoryRun>>;
  // Writes `runs` (the oldest of the tail) to RocksDB and then drops them
  // from the tail with DropOldest; called by the history thread.
  using BulkWrite = std::function<absl::Status(const Runs& runs)>;

  // The thread writes once the tail holds `batch` entries.
  // `on_written` (may be empty) is called after each of its writes with
  // the outcome and the entries written.
  HistoryTail(size_t batch, std::function<void(const absl::Status&, int64_t entries)> on_written);
  ~HistoryTail() { Stop(); }
  HistoryTail(const HistoryTail&) = delete;
  HistoryTail& operator=(const HistoryTail&) = delete;

  // Appends a run (its revisions after every run's in the tail).
  void Add(std::shared_ptr<const HistoryRun> run);
  // A copy of the list of runs, oldest first (the runs themselves are
  // shared and immutable). A reader copies it before it reads RocksDB:
  // runs are dropped only once they are in RocksDB, so each entry is
  // found in one or the other.
  Runs Copy() const;
  // Drops the oldest `runs` runs, holding `keys` entries, once they are in
  // RocksDB. Only the history thread (through BulkWrite), or the owner
  // after Stop, calls it.
  void DropOldest(size_t runs, size_t keys);

  // Starts the history thread (named consent-history), which calls `write`.
  void Start(BulkWrite write);
  // Stops the thread; what it has not written stays in the tail (the owner
  // writes it at Close). Idempotent.
  void Stop();

  // Entries waiting for a bulk write; runs in the tail; bulk writes that
  // failed since the start.
  struct Figures {
    int64_t pending = 0;
    int64_t runs = 0;
    int64_t write_failures = 0;
  };
  Figures Measure() const;

 private:
  // More runs than this and the thread merges some, even with too few
  // entries to write.
  static constexpr size_t kMaxRuns = 64;
  void Run(BulkWrite write);
  // Merges the newest of `runs` (the tail as it was) into one run, which
  // replaces them in the tail (history_runs.h, MergeFrom).
  void Merge(const Runs& runs);

  const size_t batch_;
  const std::function<void(const absl::Status&, int64_t)> on_written_;
  mutable absl::Mutex mu_;
  Runs runs_ ABSL_GUARDED_BY(mu_);
  size_t keys_ ABSL_GUARDED_BY(mu_) = 0;
  // After a failed bulk write, the next waits for this many keys.
  size_t retry_keys_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t failures_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Mutex thread_mu_;
  std::thread thread_ ABSL_GUARDED_BY(thread_mu_);
};

}  // namespace consent::storage

#endif  // CONSENT_STORAGE_HISTORY_INDEX_H_
