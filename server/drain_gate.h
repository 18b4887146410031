// Counts calls in flight so shutdown can wait for exactly those, then close
// idle connections at once. (gRPC's own Shutdown(deadline) also waits for
// idle client connections to go away, which holds a drain for the whole
// grace period.)
#ifndef CONSENT_SERVER_DRAIN_GATE_H_
#define CONSENT_SERVER_DRAIN_GATE_H_

#include <atomic>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace consent {

// Thread safe. Enter/Exit cost two atomic operations on the hot path.
class DrainGate {
 public:
  // Admits a call unless draining has started; each true must be matched by
  // one Exit().
  bool Enter() {
    in_flight_.fetch_add(1);
    if (draining_.load()) {
      Exit();
      return false;
    }
    return true;
  }
  void Exit() {
    if (in_flight_.fetch_sub(1) == 1 && draining_.load()) {
      absl::MutexLock lock(&mu_);
      drained_.SignalAll();
    }
  }
  // Refuses new calls from now on and waits until none is in flight or
  // `deadline` passes. Returns the number still in flight.
  int64_t DrainUntil(absl::Time deadline) {
    draining_.store(true);
    absl::MutexLock lock(&mu_);
    while (in_flight_.load() > 0) {
      if (drained_.WaitWithDeadline(&mu_, deadline)) break;
    }
    return in_flight_.load();
  }
  bool draining() const { return draining_.load(); }

 private:
  std::atomic<int64_t> in_flight_{0};
  std::atomic<bool> draining_{false};
  absl::Mutex mu_;
  absl::CondVar drained_;
};

// Admits one call for its lifetime.
class DrainGuard {
 public:
  explicit DrainGuard(DrainGate* gate) : gate_(gate), admitted_(gate->Enter()) {}
  ~DrainGuard() {
    if (admitted_) gate_->Exit();
  }
  DrainGuard(const DrainGuard&) = delete;
  DrainGuard& operator=(const DrainGuard&) = delete;
  bool admitted() const { return admitted_; }

 private:
  DrainGate* gate_;
  bool admitted_;
};

}  // namespace consent

#endif  // CONSENT_SERVER_DRAIN_GATE_H_
