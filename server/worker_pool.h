// A fixed set of threads for calls that wait on RocksDB (GetSubject and
// ListHistory read it), so gRPC's callback threads never wait on disk.
#ifndef CONSENT_SERVER_WORKER_POOL_H_
#define CONSENT_SERVER_WORKER_POOL_H_

#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace consent {

// Runs scheduled functions on `threads` threads, in the order scheduled
// (several at once). The threads live as long as the pool: unlike the
// synchronous gRPC server's handler threads they never exit between calls,
// so a burst of calls starts no threads. Thread safe. The destructor runs
// everything already scheduled, then joins the threads.
class WorkerPool {
 public:
  // `threads` >= 1; `name` (at most 15 bytes) names them for ps and perf;
  // at most `max_queued` functions wait for a thread (TrySchedule).
  WorkerPool(int threads, const std::string& name, size_t max_queued = SIZE_MAX);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void Schedule(std::function<void()> work);
  // Schedule, unless max_queued functions are waiting already: then false,
  // and `work` is not run.
  bool TrySchedule(std::function<void()> work);

 private:
  void Run();

  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  const size_t max_queued_;
  std::vector<std::thread> threads_;
};

}  // namespace consent

#endif  // CONSENT_SERVER_WORKER_POOL_H_
