// Wakes change-feed readers when a commit lands, so an idle WatchChanges
// stream costs no reads. Thread safe.
#ifndef CONSENT_SERVER_REVISION_NOTIFIER_H_
#define CONSENT_SERVER_REVISION_NOTIFIER_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace consent {

// The highest revision committed, and waiters for a later one. Thread
// safe; Close is for good.
class RevisionNotifier {
 public:
  // A commit up to `revision` is visible to reads.
  void Notify(int64_t revision) {
    absl::MutexLock lock(&mu_);
    if (revision > revision_) revision_ = revision;
  }
  // Waits until a revision after `seen` is notified, `deadline` passes or
  // the notifier is closed. Returns false once closed.
  bool WaitBeyond(int64_t seen, absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    auto ready = [this, seen]()
                     ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return closed_ || revision_ > seen; };
    mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
    return !closed_;
  }
  // The highest revision notified so far (0 before any).
  int64_t revision() const {
    absl::MutexLock lock(&mu_);
    return revision_;
  }
  // Wakes every waiter for good (shutdown).
  void Close() {
    absl::MutexLock lock(&mu_);
    closed_ = true;
  }

 private:
  mutable absl::Mutex mu_;
  int64_t revision_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace consent

#endif  // CONSENT_SERVER_REVISION_NOTIFIER_H_
