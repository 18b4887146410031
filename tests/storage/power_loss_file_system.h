// A RocksDB file system for tests that simulates a power loss: it tracks
// what has been made durable (file contents by Sync/Fsync, directory
// entries by a sync of their directory) and, after a simulated crash,
// drops everything else from the real files.
//
// Use: give it to the store (StoreOptions::rocksdb.file_system), call Crash() at
// the moment power goes: from then on no sync completes (each waits until
// Teardown(), then fails), so nothing more can be acknowledged. Tear the
// store down after Teardown(), then DropUnsynced() truncates each file
// written through it to what was synced and undoes the creations, renames
// and links whose directory was not synced since. Deletions are taken as
// durable at once (a deleted file that a crash would bring back is one
// RocksDB has stopped using). Files that existed before it saw them count
// as durable. CrashAfterSyncs(n) crashes at the n-th sync from now.
#ifndef CONSENT_TESTS_STORAGE_POWER_LOSS_FILE_SYSTEM_H_
#define CONSENT_TESTS_STORAGE_POWER_LOSS_FILE_SYSTEM_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "rocksdb/file_system.h"

namespace consent::testing {

class PowerLossFileSystem : public rocksdb::FileSystemWrapper {
 public:
  PowerLossFileSystem();

  static const char* kClassName() { return "ConsentPowerLossFileSystem"; }
  const char* Name() const override { return kClassName(); }

  // Power goes at the `n`-th sync call from now (file or directory), before
  // it completes.
  void CrashAfterSyncs(int64_t n);
  void Crash();
  bool crashed();
  // Lets the syncs waiting since the crash fail, and every later operation.
  void Teardown();
  // After the store is gone: what a power loss at the crash would leave.
  // Returns the bytes dropped from files, and counts undone directory
  // operations in *undone.
  int64_t DropUnsynced(int64_t* undone);

  rocksdb::IOStatus NewWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReopenWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewDirectory(const std::string& name, const rocksdb::IOOptions& options,
                                 std::unique_ptr<rocksdb::FSDirectory>* result,
                                 rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus RenameFile(const std::string& src, const std::string& target,
                               const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus LinkFile(const std::string& src, const std::string& target,
                             const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus DeleteFile(const std::string& name, const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override;

  // Called by the files and directories it hands out.
  void Appended(const std::string& name, uint64_t bytes);
  rocksdb::IOStatus SyncFile(const std::string& name);
  rocksdb::IOStatus SyncDirectory(const std::string& directory);
  rocksdb::IOStatus Refuse();

 private:
  struct FileState {
    uint64_t size = 0;
    uint64_t synced = 0;
  };
  struct DirOp {
    enum Kind { kCreate, kRename, kLink } kind;
    std::string directory;
    std::string name;    // created or linked name; rename target
    std::string source;  // rename source
    // A rename over an existing file: a copy of what it replaced, put back
    // if the rename is undone ("" when nothing was replaced).
    std::string replaced;
  };
  // Counts a sync; crashes at the chosen one. Returns false once crashed
  // (the caller then waits for Teardown and fails).
  bool PassSync() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  rocksdb::IOStatus AwaitTeardown() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::map<std::string, FileState> files_ ABSL_GUARDED_BY(mu_);
  std::vector<DirOp> pending_ ABSL_GUARDED_BY(mu_);
  int64_t syncs_left_ ABSL_GUARDED_BY(mu_) = -1;  // -1: no crash planned
  int64_t saved_ ABSL_GUARDED_BY(mu_) = 0;        // names the copies of replaced files
  bool crashed_ ABSL_GUARDED_BY(mu_) = false;
  bool torn_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace consent::testing

#endif  // CONSENT_TESTS_STORAGE_POWER_LOSS_FILE_SYSTEM_H_
