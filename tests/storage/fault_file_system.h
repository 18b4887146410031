// A RocksDB file system for tests that fails the write-ahead log's writes
// on command: librocksdb-dev ships no fault-injection file system. Given to
// the store through StoreOptions::rocksdb.file_system.
#ifndef CONSENT_TESTS_STORAGE_FAULT_FILE_SYSTEM_H_
#define CONSENT_TESTS_STORAGE_FAULT_FILE_SYSTEM_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "rocksdb/file_system.h"

namespace consent::testing {

// Thread safe: the fault settings are atomics read on every operation.
class FaultFileSystem : public rocksdb::FileSystemWrapper {
 public:
  enum class WalFault {
    kNone,
    // Append to a WAL file fails: nothing of it reaches the file.
    kAppend,
    // Append succeeds (the data is in the file, in the page cache), then
    // Sync or Fsync fails: a write whose outcome the database cannot know.
    kSync,
  };

  // Over the local file system.
  FaultFileSystem();

  static const char* kClassName() { return "ConsentFaultFileSystem"; }
  const char* Name() const override { return kClassName(); }

  // From now on, WAL operations fail as `fault` says, after `after` more
  // of them (Appends for kAppend, Syncs for kSync) have succeeded.
  void FailWal(WalFault fault, int64_t after = 0);
  // From now on (or no longer), creating any file fails: the database
  // cannot be opened for writing.
  void FailFileCreation(bool fail) { fail_creation_.store(fail); }
  // Stops every fault.
  void Heal() {
    FailWal(WalFault::kNone);
    FailFileCreation(false);
  }
  // WAL operations and file creations failed so far.
  int64_t failures() const { return failures_.load(); }

  rocksdb::IOStatus NewWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReopenWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReuseWritableFile(const std::string& name, const std::string& old_name,
                                      const rocksdb::FileOptions& options,
                                      std::unique_ptr<rocksdb::FSWritableFile>* result,
                                      rocksdb::IODebugContext* dbg) override;

  // Called by the WAL files: whether this operation is to fail.
  bool FailAppend() { return Fail(WalFault::kAppend); }
  bool FailSync() { return Fail(WalFault::kSync); }

 private:
  bool Fail(WalFault kind);
  rocksdb::IOStatus Wrap(const std::string& name, rocksdb::IOStatus status,
                         std::unique_ptr<rocksdb::FSWritableFile>* result);

  std::atomic<WalFault> wal_fault_{WalFault::kNone};
  std::atomic<int64_t> wal_fault_after_{0};
  std::atomic<bool> fail_creation_{false};
  std::atomic<int64_t> failures_{0};
};

}  // namespace consent::testing

#endif  // CONSENT_TESTS_STORAGE_FAULT_FILE_SYSTEM_H_
