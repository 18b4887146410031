// Reloads the policy file when it changes, so a Kubernetes ConfigMap
// update (or a file replaced by a configuration manager) takes effect
// without SIGHUP or ReloadPolicy.
//
// A cheap poll rather than inotify: Kubernetes updates a mounted ConfigMap
// by writing a new directory and renaming the `..data` symlink over the old
// one, and the file the pod names is a symlink through `..data`; a watch on
// the file itself would see neither. stat() follows the links, so the
// watcher sees a new file (device, inode, size, modification time) however
// it was swapped in. A change is handed to the same reload as ReloadPolicy
// and SIGHUP (PolicyReloader: validated, logged, counted in
// consent_policy_reloads_total; a bad file leaves the active policy in
// force). A file that fails is not retried until it changes again.
//
// Thread safe: Poll may be called from any thread; Start runs it every
// `interval` on a thread of its own until Stop or destruction.
#ifndef CONSENT_SERVER_POLICY_WATCHER_H_
#define CONSENT_SERVER_POLICY_WATCHER_H_

#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace consent {

class PolicyWatcher {
 public:
  // `reload` is called after each change seen (ReloadPolicy's reload). The
  // file's state at construction counts as already loaded.
  PolicyWatcher(std::string path, std::function<void()> reload);
  ~PolicyWatcher() { Stop(); }
  PolicyWatcher(const PolicyWatcher&) = delete;
  PolicyWatcher& operator=(const PolicyWatcher&) = delete;

  // Looks at the file once; reloads and returns true when it changed since
  // the last look. A missing file is a change too, but reloads only once it
  // is back (the reload would fail on it anyway).
  bool Poll();

  void Start(absl::Duration interval);
  void Stop();

 private:
  struct Signature {
    bool exists = false;
    uint64_t device = 0, inode = 0;
    int64_t size = 0, mtime_ns = 0, ctime_ns = 0;
    bool operator==(const Signature& o) const {
      return exists == o.exists && device == o.device && inode == o.inode && size == o.size &&
             mtime_ns == o.mtime_ns && ctime_ns == o.ctime_ns;
    }
  };
  Signature Look() const;

  const std::string path_;
  const std::function<void()> reload_;
  absl::Mutex mu_;
  Signature last_ ABSL_GUARDED_BY(mu_);
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace consent

#endif  // CONSENT_SERVER_POLICY_WATCHER_H_
