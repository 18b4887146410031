#include "tests/storage/fault_file_system.h"

#include <utility>

#include "absl/strings/match.h"

namespace consent::testing {
namespace {

// A WAL file whose Append and Sync ask the file system whether to fail.
class FaultWalFile final : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  FaultWalFile(std::unique_ptr<rocksdb::FSWritableFile> file, FaultFileSystem* fs)
      : FSWritableFileOwnerWrapper(std::move(file)), fs_(fs) {}

  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                           rocksdb::IODebugContext* dbg) override {
    if (fs_->FailAppend()) return rocksdb::IOStatus::IOError("injected WAL append failure");
    return FSWritableFileOwnerWrapper::Append(data, options, dbg);
  }
  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                           const rocksdb::DataVerificationInfo& info,
                           rocksdb::IODebugContext* dbg) override {
    if (fs_->FailAppend()) return rocksdb::IOStatus::IOError("injected WAL append failure");
    return FSWritableFileOwnerWrapper::Append(data, options, info, dbg);
  }
  rocksdb::IOStatus Sync(const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override {
    if (fs_->FailSync()) return rocksdb::IOStatus::IOError("injected WAL sync failure");
    return FSWritableFileOwnerWrapper::Sync(options, dbg);
  }
  rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options,
                          rocksdb::IODebugContext* dbg) override {
    if (fs_->FailSync()) return rocksdb::IOStatus::IOError("injected WAL sync failure");
    return FSWritableFileOwnerWrapper::Fsync(options, dbg);
  }

 private:
  FaultFileSystem* fs_;
};

}  // namespace

FaultFileSystem::FaultFileSystem() : FileSystemWrapper(rocksdb::FileSystem::Default()) {}

void FaultFileSystem::FailWal(WalFault fault, int64_t after) {
  wal_fault_after_.store(after);
  wal_fault_.store(fault);
}

bool FaultFileSystem::Fail(WalFault kind) {
  if (wal_fault_.load() != kind) return false;
  // Let `after` operations through first.
  if (wal_fault_after_.fetch_sub(1) > 0) return false;
  failures_.fetch_add(1);
  return true;
}

rocksdb::IOStatus FaultFileSystem::Wrap(const std::string& name, rocksdb::IOStatus status,
                                        std::unique_ptr<rocksdb::FSWritableFile>* result) {
  if (status.ok() && absl::EndsWith(name, ".log")) {
    *result = std::make_unique<FaultWalFile>(std::move(*result), this);
  }
  return status;
}

rocksdb::IOStatus FaultFileSystem::NewWritableFile(const std::string& name,
                                                   const rocksdb::FileOptions& options,
                                                   std::unique_ptr<rocksdb::FSWritableFile>* result,
                                                   rocksdb::IODebugContext* dbg) {
  if (fail_creation_.load()) {
    failures_.fetch_add(1);
    return rocksdb::IOStatus::IOError("injected failure to create " + name);
  }
  return Wrap(name, target()->NewWritableFile(name, options, result, dbg), result);
}

rocksdb::IOStatus FaultFileSystem::ReopenWritableFile(
    const std::string& name, const rocksdb::FileOptions& options,
    std::unique_ptr<rocksdb::FSWritableFile>* result, rocksdb::IODebugContext* dbg) {
  return Wrap(name, target()->ReopenWritableFile(name, options, result, dbg), result);
}

rocksdb::IOStatus FaultFileSystem::ReuseWritableFile(
    const std::string& name, const std::string& old_name, const rocksdb::FileOptions& options,
    std::unique_ptr<rocksdb::FSWritableFile>* result, rocksdb::IODebugContext* dbg) {
  if (fail_creation_.load()) {
    failures_.fetch_add(1);
    return rocksdb::IOStatus::IOError("injected failure to create " + name);
  }
  return Wrap(name, target()->ReuseWritableFile(name, old_name, options, result, dbg), result);
}

}  // namespace consent::testing
