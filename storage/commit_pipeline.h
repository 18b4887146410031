// The group commit (docs/storage.md, "Durability"): commits queue up; a
// preparing thread applies everything queued as one group, a writing thread
// writes each group with one synced write, and an answering thread hands
// each commit its result. Concurrent writers thus share one WAL sync, and
// while one group syncs the next is prepared. Writes still happen one at a
// time, in order, and nothing is answered before its group's write.
//
// CommitPipeline is the queue and the three threads; what preparing and
// writing a group mean is the store's (CommitPipeline::Stages, implemented
// by RocksDbStore in commit_pipeline.cc). Internal to storage/.
#ifndef CONSENT_STORAGE_COMMIT_PIPELINE_H_
#define CONSENT_STORAGE_COMMIT_PIPELINE_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "storage/consent_store.h"

namespace consent::storage {

// A Commit call on its way through the pipeline.
struct PendingCommit {
  std::vector<SubjectUpdate> updates;
  absl::Time now;
  RequestKey request;
  // Set for a step of a bulk import (ConsentStore::ImportAsync).
  std::optional<ImportStep> import;
  // Set (> 0) for a command of the replicated log
  // (ConsentStore::ApplyLoggedAsync, ApplyLoggedImportAsync).
  int64_t log_sequence = 0;
  std::function<void(absl::StatusOr<CommitResult>)> done;
  // Set by the stages; handed to `done` by the answering thread.
  absl::StatusOr<CommitResult> result = absl::InternalError("commit not run");
  bool wrote = false;  // its changes are in its group's write
};

// A prepared group, as the pipeline sees it: the stages' own type derives
// from it. Freed by the preparing thread (see CommitPipeline::Stages).
class PreparedGroup {
 public:
  virtual ~PreparedGroup() = default;
};

// Thread safety: Submit may be called from any thread, concurrently with
// everything else; Start and Stop from one thread.
class CommitPipeline {
 public:
  // What the pipeline's threads call. Prepare runs on the preparing thread,
  // Write on the writing thread; each sees groups one at a time, in commit
  // order, and Prepare of the next group may run while Write of the
  // previous one does.
  class Stages {
   public:
    virtual ~Stages() = default;
    // Applies `commits` in order and returns the group to write, or null
    // when there is nothing to write (each commit then has its result).
    virtual std::shared_ptr<PreparedGroup> Prepare(const std::vector<PendingCommit*>& commits) = 0;
    // Writes `group` (synced) and publishes it; on failure sets the
    // results of `commits` that it makes wrong.
    virtual void Write(PreparedGroup& group, const std::vector<PendingCommit*>& commits) = 0;
  };

  // At most `max_queued` commits wait to be prepared; `stages` must outlive
  // the pipeline.
  CommitPipeline(Stages* stages, size_t max_queued);
  ~CommitPipeline() { Stop(); }
  CommitPipeline(const CommitPipeline&) = delete;
  CommitPipeline& operator=(const CommitPipeline&) = delete;

  // Starts the three threads (named consent-prepare, consent-write and
  // consent-answer, for ps, top and perf).
  void Start();
  // Queues `commit`, or answers it at once on this thread:
  // kResourceExhausted when max_queued commits are waiting,
  // kFailedPrecondition ("store is closed") once stopping.
  void Submit(std::unique_ptr<PendingCommit> commit);
  // Refuses new commits, finishes (prepares, writes, answers) everything
  // queued, then stops the threads. Idempotent.
  void Stop();

 private:
  using Commits = std::vector<std::unique_ptr<PendingCommit>>;
  // A prepared group on its way to the writing thread, with its commits
  // (group null when there is nothing to write).
  struct GroupToWrite {
    std::shared_ptr<PreparedGroup> group;
    Commits commits;
  };
  void RunPreparer();
  void RunWriter();
  void RunAnswerer();
  // Frees the groups written since the last call. Called by the preparing
  // thread, which allocated them, before each group it prepares: glibc's
  // malloc is much slower for a thread whose memory other threads free
  // (measured: docs/performance.md). So the last group written stays
  // allocated until the next commit, or until the pipeline is destroyed.
  void FreeWrittenGroups();

  Stages* const stages_;
  const size_t max_queued_;
  absl::Mutex queue_mu_;
  std::deque<std::unique_ptr<PendingCommit>> queue_ ABSL_GUARDED_BY(queue_mu_);
  bool stopping_ ABSL_GUARDED_BY(queue_mu_) = false;
  absl::Mutex stages_mu_;
  std::deque<GroupToWrite> to_write_ ABSL_GUARDED_BY(stages_mu_);
  std::deque<Commits> to_answer_ ABSL_GUARDED_BY(stages_mu_);
  // Groups written, for the preparing thread to free (FreeWrittenGroups).
  std::vector<std::shared_ptr<PreparedGroup>> written_ ABSL_GUARDED_BY(stages_mu_);
  bool preparer_done_ ABSL_GUARDED_BY(stages_mu_) = false;
  bool writer_done_ ABSL_GUARDED_BY(stages_mu_) = false;
  absl::Mutex threads_mu_;
  std::thread preparer_ ABSL_GUARDED_BY(threads_mu_);
  std::thread writer_ ABSL_GUARDED_BY(threads_mu_);
  std::thread answerer_ ABSL_GUARDED_BY(threads_mu_);
};

}  // namespace consent::storage

#endif  // CONSENT_STORAGE_COMMIT_PIPELINE_H_
