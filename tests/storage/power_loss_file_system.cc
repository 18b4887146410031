#include "tests/storage/power_loss_file_system.h"

#include <unistd.h>

#include <filesystem>
#include <utility>

namespace consent::testing {
namespace {

std::string DirectoryOf(const std::string& path) {
  return std::filesystem::path(path).parent_path().string();
}

class TrackedFile final : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  TrackedFile(std::unique_ptr<rocksdb::FSWritableFile> file, PowerLossFileSystem* fs,
              std::string name)
      : FSWritableFileOwnerWrapper(std::move(file)), fs_(fs), name_(std::move(name)) {}

  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                           rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus s = FSWritableFileOwnerWrapper::Append(data, options, dbg);
    if (s.ok()) fs_->Appended(name_, data.size());
    return s;
  }
  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                           const rocksdb::DataVerificationInfo& info,
                           rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus s = FSWritableFileOwnerWrapper::Append(data, options, info, dbg);
    if (s.ok()) fs_->Appended(name_, data.size());
    return s;
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice&, uint64_t, const rocksdb::IOOptions&,
                                     rocksdb::IODebugContext*) override {
    return rocksdb::IOStatus::NotSupported("PowerLossFileSystem: positioned appends");
  }
  rocksdb::IOStatus Sync(const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus s = FSWritableFileOwnerWrapper::Flush(options, dbg);
    return s.ok() ? fs_->SyncFile(name_) : s;
  }
  rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options,
                          rocksdb::IODebugContext* dbg) override {
    return Sync(options, dbg);
  }
  // A range sync is a hint, not a promise: nothing becomes durable.
  rocksdb::IOStatus RangeSync(uint64_t, uint64_t, const rocksdb::IOOptions&,
                              rocksdb::IODebugContext*) override {
    return rocksdb::IOStatus::OK();
  }

 private:
  PowerLossFileSystem* fs_;
  std::string name_;
};

class TrackedDirectory final : public rocksdb::FSDirectoryWrapper {
 public:
  TrackedDirectory(std::unique_ptr<rocksdb::FSDirectory> dir, PowerLossFileSystem* fs,
                   std::string name)
      : FSDirectoryWrapper(std::move(dir)), fs_(fs), name_(std::move(name)) {}
  rocksdb::IOStatus Fsync(const rocksdb::IOOptions&, rocksdb::IODebugContext*) override {
    return fs_->SyncDirectory(name_);
  }
  rocksdb::IOStatus FsyncWithDirOptions(const rocksdb::IOOptions&, rocksdb::IODebugContext*,
                                        const rocksdb::DirFsyncOptions&) override {
    return fs_->SyncDirectory(name_);
  }

 private:
  PowerLossFileSystem* fs_;
  std::string name_;
};

}  // namespace

PowerLossFileSystem::PowerLossFileSystem() : FileSystemWrapper(rocksdb::FileSystem::Default()) {}

void PowerLossFileSystem::CrashAfterSyncs(int64_t n) {
  absl::MutexLock lock(&mu_);
  syncs_left_ = n;
}

void PowerLossFileSystem::Crash() {
  absl::MutexLock lock(&mu_);
  crashed_ = true;
}

bool PowerLossFileSystem::crashed() {
  absl::MutexLock lock(&mu_);
  return crashed_;
}

void PowerLossFileSystem::Teardown() {
  absl::MutexLock lock(&mu_);
  crashed_ = true;
  torn_down_ = true;
}

bool PowerLossFileSystem::PassSync() {
  if (crashed_) return false;
  if (syncs_left_ > 0 && --syncs_left_ == 0) {
    crashed_ = true;
    return false;
  }
  return true;
}

rocksdb::IOStatus PowerLossFileSystem::AwaitTeardown() {
  auto torn_down = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return torn_down_; };
  mu_.Await(absl::Condition(&torn_down));
  return rocksdb::IOStatus::IOError("power lost");
}

rocksdb::IOStatus PowerLossFileSystem::Refuse() {
  absl::MutexLock lock(&mu_);
  if (torn_down_) return rocksdb::IOStatus::IOError("power lost");
  return rocksdb::IOStatus::OK();
}

void PowerLossFileSystem::Appended(const std::string& name, uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  files_[name].size += bytes;
}

rocksdb::IOStatus PowerLossFileSystem::SyncFile(const std::string& name) {
  absl::MutexLock lock(&mu_);
  if (!PassSync()) return AwaitTeardown();
  FileState& file = files_[name];
  file.synced = file.size;
  return rocksdb::IOStatus::OK();
}

rocksdb::IOStatus PowerLossFileSystem::SyncDirectory(const std::string& directory) {
  absl::MutexLock lock(&mu_);
  if (!PassSync()) return AwaitTeardown();
  std::vector<DirOp> still;
  for (DirOp& op : pending_) {
    if (op.directory != directory) {
      still.push_back(std::move(op));
    } else if (!op.replaced.empty()) {
      std::error_code ec;
      std::filesystem::remove(op.replaced, ec);  // the rename is durable now
    }
  }
  pending_ = std::move(still);
  return rocksdb::IOStatus::OK();
}

rocksdb::IOStatus PowerLossFileSystem::NewWritableFile(
    const std::string& name, const rocksdb::FileOptions& options,
    std::unique_ptr<rocksdb::FSWritableFile>* result, rocksdb::IODebugContext* dbg) {
  if (rocksdb::IOStatus s = Refuse(); !s.ok()) return s;
  const bool existed = std::filesystem::exists(name);
  rocksdb::IOStatus s = target()->NewWritableFile(name, options, result, dbg);
  if (!s.ok()) return s;
  {
    absl::MutexLock lock(&mu_);
    files_[name] = FileState{};  // truncated: nothing of it is durable
    if (!existed) pending_.push_back({DirOp::kCreate, DirectoryOf(name), name, "", ""});
  }
  *result = std::make_unique<TrackedFile>(std::move(*result), this, name);
  return s;
}

rocksdb::IOStatus PowerLossFileSystem::ReopenWritableFile(
    const std::string& name, const rocksdb::FileOptions& options,
    std::unique_ptr<rocksdb::FSWritableFile>* result, rocksdb::IODebugContext* dbg) {
  if (rocksdb::IOStatus s = Refuse(); !s.ok()) return s;
  rocksdb::IOStatus s = target()->ReopenWritableFile(name, options, result, dbg);
  if (!s.ok()) return s;
  {
    absl::MutexLock lock(&mu_);
    if (!files_.count(name)) {
      std::error_code ec;
      const uint64_t size = std::filesystem::file_size(name, ec);
      files_[name] = FileState{ec ? 0 : size, ec ? 0 : size};
    }
  }
  *result = std::make_unique<TrackedFile>(std::move(*result), this, name);
  return s;
}

rocksdb::IOStatus PowerLossFileSystem::NewDirectory(const std::string& name,
                                                    const rocksdb::IOOptions& options,
                                                    std::unique_ptr<rocksdb::FSDirectory>* result,
                                                    rocksdb::IODebugContext* dbg) {
  rocksdb::IOStatus s = target()->NewDirectory(name, options, result, dbg);
  if (s.ok()) *result = std::make_unique<TrackedDirectory>(std::move(*result), this, name);
  return s;
}

rocksdb::IOStatus PowerLossFileSystem::RenameFile(const std::string& src, const std::string& target,
                                                  const rocksdb::IOOptions& options,
                                                  rocksdb::IODebugContext* dbg) {
  if (rocksdb::IOStatus s = Refuse(); !s.ok()) return s;
  std::string replaced;
  if (std::filesystem::exists(target)) {
    absl::MutexLock lock(&mu_);
    replaced = target + ".replaced-" + std::to_string(++saved_);
    std::error_code ec;
    std::filesystem::copy_file(target, replaced, ec);
    if (ec) return rocksdb::IOStatus::IOError("PowerLossFileSystem: " + ec.message());
  }
  rocksdb::IOStatus s = FileSystemWrapper::RenameFile(src, target, options, dbg);
  if (!s.ok()) return s;
  absl::MutexLock lock(&mu_);
  if (auto it = files_.find(src); it != files_.end()) {
    files_[target] = it->second;
    files_.erase(it);
  }
  pending_.push_back({DirOp::kRename, DirectoryOf(target), target, src, replaced});
  return s;
}

rocksdb::IOStatus PowerLossFileSystem::LinkFile(const std::string& src, const std::string& target,
                                                const rocksdb::IOOptions& options,
                                                rocksdb::IODebugContext* dbg) {
  if (rocksdb::IOStatus s = Refuse(); !s.ok()) return s;
  rocksdb::IOStatus s = FileSystemWrapper::LinkFile(src, target, options, dbg);
  if (!s.ok()) return s;
  absl::MutexLock lock(&mu_);
  pending_.push_back({DirOp::kLink, DirectoryOf(target), target, src, ""});
  return s;
}

rocksdb::IOStatus PowerLossFileSystem::DeleteFile(const std::string& name,
                                                  const rocksdb::IOOptions& options,
                                                  rocksdb::IODebugContext* dbg) {
  if (rocksdb::IOStatus s = Refuse(); !s.ok()) return s;
  rocksdb::IOStatus s = FileSystemWrapper::DeleteFile(name, options, dbg);
  absl::MutexLock lock(&mu_);
  files_.erase(name);
  return s;
}

int64_t PowerLossFileSystem::DropUnsynced(int64_t* undone) {
  absl::MutexLock lock(&mu_);
  int64_t dropped = 0;
  for (const auto& [name, file] : files_) {
    std::error_code ec;
    const uint64_t size = std::filesystem::file_size(name, ec);
    if (ec || size <= file.synced) continue;
    std::filesystem::resize_file(name, file.synced, ec);
    if (!ec) dropped += static_cast<int64_t>(size - file.synced);
  }
  *undone = 0;
  for (auto it = pending_.rbegin(); it != pending_.rend(); ++it) {
    std::error_code ec;
    switch (it->kind) {
      case DirOp::kCreate:
      case DirOp::kLink:
        std::filesystem::remove(it->name, ec);
        break;
      case DirOp::kRename:
        std::filesystem::rename(it->name, it->source, ec);
        if (!it->replaced.empty()) std::filesystem::rename(it->replaced, it->name, ec);
        break;
    }
    ++*undone;
  }
  pending_.clear();
  files_.clear();
  return dropped;
}

}  // namespace consent::testing
