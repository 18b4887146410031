#include "server/policy_watcher.h"

#include <sys/stat.h>

#include <utility>

namespace consent {

PolicyWatcher::PolicyWatcher(std::string path, std::function<void()> reload)
    : path_(std::move(path)), reload_(std::move(reload)) {
  absl::MutexLock lock(&mu_);
  last_ = Look();
}

PolicyWatcher::Signature PolicyWatcher::Look() const {
  Signature signature;
  struct stat st;
  if (stat(path_.c_str(), &st) != 0) return signature;
  signature.exists = true;
  signature.device = st.st_dev;
  signature.inode = st.st_ino;
  signature.size = st.st_size;
  signature.mtime_ns = st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec;
  signature.ctime_ns = st.st_ctim.tv_sec * 1'000'000'000LL + st.st_ctim.tv_nsec;
  return signature;
}

bool PolicyWatcher::Poll() {
  {
    absl::MutexLock lock(&mu_);
    const Signature now = Look();
    if (now == last_) return false;
    last_ = now;
    if (!now.exists) return false;
  }
  reload_();
  return true;
}

void PolicyWatcher::Start(absl::Duration interval) {
  thread_ = std::thread([this, interval] {
    while (!stop_.WaitForNotificationWithTimeout(interval)) Poll();
  });
}

void PolicyWatcher::Stop() {
  if (!thread_.joinable()) return;
  stop_.Notify();
  thread_.join();
}

}  // namespace consent
