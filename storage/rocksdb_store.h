// RocksDbStore, the RocksDB implementation of ConsentStore. Internal to
// storage/: the rest of the code sees ConsentStore (consent_store.h) and
// its Open. The key and value layout is documented in docs/storage.md;
// keep the two in step.
//
// The implementation is in four files, one subsystem each:
//   rocksdb_store.cc        opening, reopening, reads, statistics, closing;
//   commit_pipeline.cc      the group commit's stages: prepare (apply each
//                           commit's updates to a group), write (one synced
//                           WriteBatch), publish;
//   history_index.cc        the user history index: bulk writes of its
//                           in-memory tail, its rebuild at Open, reads
//                           through it;
//   rocksdb_maintenance.cc  what runs beside the pipeline: policy records,
//                           the request-id purge, checkpoints, chain checks.
// The in-memory subject index is subject_index.{h,cc}.
#ifndef CONSENT_STORAGE_ROCKSDB_STORE_H_
#define CONSENT_STORAGE_ROCKSDB_STORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/options.h"
#include "rocksdb/statistics.h"
#include "storage/commit_pipeline.h"
#include "storage/consent_store.h"
#include "storage/history_index.h"
#include "storage/keys.h"
#include "storage/subject_index.h"

namespace consent::storage {

// meta keys. The revision of the last commit (8-byte big-endian).
inline constexpr char kMetaRevision[] = "revision";
// The latest time stamped on an event or policy, in Unix nanoseconds.
inline constexpr char kMetaLastTime[] = "last_time";
// Every event up to this revision has its user_events key in RocksDB; the
// later ones are in memory (HistoryTail) and rebuilt from events at Open.
inline constexpr char kMetaHistoryIndexed[] = "history_indexed";
// Followed by an import id: the offset through which that import is
// applied (8-byte big-endian).
inline constexpr char kMetaImportPrefix[] = "import/";
// The sequence of the replicated command log through which this store has
// applied it (8-byte big-endian; ConsentStore::ApplyLoggedAsync).
inline constexpr char kMetaAppliedSequence[] = "applied_sequence";
// The file a bulk write of the history index is built in, in the data
// directory; ingested (moved) into the database. A leftover is removed at
// Open.
inline constexpr char kHistoryFile[] = "history-index.sst.tmp";

// The single place where rocksdb::Status becomes absl::Status.
absl::Status FromRocks(const rocksdb::Status& s, absl::string_view context);

// Why a write is refused while a failed write has not been recovered from.
absl::Status WritesRefused(const absl::Status& cause);

// Time RocksDB spent delaying or stopping writes (rocksdb_store.cc).
class StallListener;

// Thread safety: every ConsentStore method may be called concurrently (see
// consent_store.h). The locks, in the order they are taken: write_mu_,
// open_mu_, flight_mu_; then the history tail's own lock. open_mu_ guards
// db_ against Close and Reopen (calls hold it shared); write_mu_ is held
// while a group is prepared, so revisions are assigned in commit order,
// and by whatever must see no commit in progress.
class RocksDbStore final : public ConsentStore, private CommitPipeline::Stages {
 public:
  RocksDbStore(const StoreOptions& options, std::unique_ptr<rocksdb::DB> db,
               std::vector<rocksdb::ColumnFamilyHandle*> handles, int64_t revision,
               absl::Time last_time);
  ~RocksDbStore() override { Close().IgnoreError(); }

  absl::StatusOr<CommitResult> Commit(std::vector<SubjectUpdate> updates, absl::Time now,
                                      const RequestKey& request) override;
  void CommitAsync(std::vector<SubjectUpdate> updates, absl::Time now, RequestKey request,
                   std::function<void(absl::StatusOr<CommitResult>)> done) override;
  void ImportAsync(std::vector<SubjectUpdate> updates, absl::Time now, ImportStep step,
                   std::function<void(absl::StatusOr<CommitResult>)> done) override;
  absl::StatusOr<int64_t> ImportedThrough(absl::string_view import_id) override;
  void ApplyLoggedAsync(std::vector<SubjectUpdate> updates, absl::Time now, RequestKey request,
                        int64_t sequence,
                        std::function<void(absl::StatusOr<CommitResult>)> done) override;
  void ApplyLoggedImportAsync(std::vector<SubjectUpdate> updates, absl::Time now, ImportStep step,
                              int64_t sequence,
                              std::function<void(absl::StatusOr<CommitResult>)> done) override;
  absl::StatusOr<int64_t> AppliedSequence() override;
  absl::StatusOr<int64_t> OldestRevision() override;
  absl::StatusOr<ChainReport> VerifyChain(int64_t start, int64_t end) override;
  absl::StatusOr<int64_t> PurgeRequestIds(absl::Time before) override;
  absl::StatusOr<v1::Subject> GetSubject(absl::string_view user_id) override;
  absl::Status GetSubjects(absl::Span<const absl::string_view> user_ids, SubjectViewArena* arena,
                           std::vector<const SubjectView*>* out) override;
  int64_t CurrentRevision() const override { return revision_.load(std::memory_order_acquire); }
  absl::StatusOr<std::vector<v1::ChangeEvent>> ReadEvents(int64_t start_revision,
                                                          size_t limit) override;
  absl::StatusOr<std::vector<std::string>> GetExclusions(absl::string_view user_id,
                                                         absl::string_view content_id) override;
  absl::StatusOr<std::vector<v1::ChangeEvent>> ReadUserEvents(absl::string_view user_id,
                                                              int64_t after_revision,
                                                              size_t limit) override;
  absl::StatusOr<absl::Time> RecordPolicy(absl::Time now, const std::string& text) override;
  absl::StatusOr<std::vector<PolicyRecord>> ListPolicies() override;
  absl::StatusOr<std::vector<std::string>> PurposesInUse(
      const std::vector<std::string>& purposes) override;
  absl::StatusOr<StoreStats> Stats() override;
  absl::StatusOr<CheckpointPosition> Checkpoint(const std::string& directory) override;
  absl::Status ScanSubjects(
      const std::function<void(int64_t revision)>& at_revision,
      const std::function<absl::Status(const v1::Subject& subject,
                                       const ExclusionPairs& exclusions)>& visit) override;
  absl::Status Close() override;

  // Column family handles, in the order of ColumnFamilies().
  rocksdb::ColumnFamilyHandle* subjects() const { return handles_[1]; }
  rocksdb::ColumnFamilyHandle* events() const { return handles_[2]; }
  rocksdb::ColumnFamilyHandle* user_events() const { return handles_[3]; }
  rocksdb::ColumnFamilyHandle* meta() const { return handles_[4]; }
  rocksdb::ColumnFamilyHandle* exclusions() const { return handles_[5]; }
  rocksdb::ColumnFamilyHandle* policies() const { return handles_[6]; }
  rocksdb::ColumnFamilyHandle* requests() const { return handles_[7]; }
  rocksdb::ColumnFamilyHandle* request_times() const { return handles_[8]; }

 private:
  // commit_pipeline.cc: the group commit's stages.
  class Context;
  struct Group;
  // CommitPipeline::Stages. Prepare applies `commits` in order into a new
  // group, on top of the group being written if there is one, then waits
  // for that write to finish and makes the new group the one being
  // written; null when there is nothing to write (every result is then
  // set). Write writes a prepared group with one synced write and
  // publishes it.
  std::shared_ptr<PreparedGroup> Prepare(const std::vector<PendingCommit*>& commits) override;
  void Write(PreparedGroup& group, const std::vector<PendingCommit*>& commits) override;
  // Applies one commit to `group` and `batch`; on failure (or when it
  // writes nothing) takes its changes back and sets its result.
  void ApplyCommit(PendingCommit& commit, Group& group, rocksdb::WriteBatch& batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_) ABSL_SHARED_LOCKS_REQUIRED(open_mu_);
  // The request record of `id`, from the group or the database (none when
  // absent or expired).
  absl::StatusOr<std::optional<RequestRecord>> FindRequest(const Group& group,
                                                           const std::string& id, absl::Time now)
      ABSL_SHARED_LOCKS_REQUIRED(open_mu_);
  // ApplyLoggedAsync and ApplyLoggedImportAsync: the commit of the log's
  // command at `sequence`.
  void SubmitLogged(std::vector<SubjectUpdate> updates, absl::Time now, RequestKey request,
                    std::optional<ImportStep> import, int64_t sequence,
                    std::function<void(absl::StatusOr<CommitResult>)> done);
  // Records in `batch` that `commit`, a command of the replicated log, is
  // applied (whatever else it writes). Touches only its arguments: the
  // group being prepared, under ApplyCommit's write lock.
  void RecordLogged(PendingCommit& commit, Group& group, rocksdb::WriteBatch& batch);
  // A position kept under meta key `key` (an import's offset, the applied
  // log sequence), from the group or the database (0: none).
  absl::StatusOr<int64_t> FindProgress(const Group& group, const std::string& key)
      ABSL_SHARED_LOCKS_REQUIRED(open_mu_);
  // The same, from the database only (what is written).
  absl::StatusOr<int64_t> ReadProgress(const std::string& key) ABSL_SHARED_LOCKS_REQUIRED(open_mu_);
  // Waits until no group is being written.
  void AwaitNoWrite() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  void AwaitNoWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(flight_mu_) {
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(flight_mu_) { return writing_ == nullptr; };
    flight_mu_.Await(absl::Condition(&idle));
  }
  // Records that a synced write failed: from now on writes are refused
  // until Reopen succeeds. Returns whether this is the first failure since
  // writes were last accepted (then on_write_state is to be called).
  bool MarkWriteFailed(const absl::Status& failure) ABSL_EXCLUSIVE_LOCKS_REQUIRED(flight_mu_);
  // OK when writes are accepted. After a failed write: tries Reopen (at
  // most once per options_.reopen_interval) and returns why writes are
  // refused while that fails.
  absl::Status RecoverWrites() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);

  // history_index.cc. WriteHistory writes `runs` (the oldest of the tail)
  // as one sorted file, records the revision they reach, then drops them
  // from the tail. LoadHistoryTail puts the entries of the events after
  // revision `indexed` (those not in RocksDB's history index) in the tail
  // (Open).
  absl::Status WriteHistory(const HistoryTail::Runs& runs) ABSL_SHARED_LOCKS_REQUIRED(open_mu_);
  absl::Status LoadHistoryTail(int64_t indexed) ABSL_SHARED_LOCKS_REQUIRED(open_mu_);

  // rocksdb_store.cc.
  // Closes the database and opens it again (read-only when it cannot be
  // opened for writing, so reads go on), then takes in whatever a failed
  // write left on disk: the revision, the time and hash chain, the history
  // index and the subject index continue from what RocksDB recovered.
  absl::Status Reopen() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Adds what the events after `published` (on disk, never acknowledged)
  // changed to the history tail and the subject index.
  absl::Status AdoptUnpublished(int64_t published) ABSL_EXCLUSIVE_LOCKS_REQUIRED(open_mu_);
  // Reads one subject from the database (no pending writes). Sets `exists`.
  absl::Status ReadSubject(absl::string_view user_id, bool* exists, v1::Subject* subject)
      ABSL_SHARED_LOCKS_REQUIRED(open_mu_);
  // Fills index_ from a snapshot of the subjects, then marks it ready.
  // Close stops and joins it before closing the database.
  void LoadIndex() ABSL_LOCKS_EXCLUDED(open_mu_);

  const StoreOptions options_;
  // The Env over options_.rocksdb.file_system (null for the default): it
  // must outlive db_, so it comes first.
  std::unique_ptr<rocksdb::Env> env_;
  // Options db_ was opened with, to open it again (Reopen).
  rocksdb::DBOptions db_options_;
  // Guards db_ against Close and Reopen while calls are in flight: calls
  // hold it shared, Close and Reopen exclusively.
  mutable absl::Mutex open_mu_;
  std::unique_ptr<rocksdb::DB> db_ ABSL_GUARDED_BY(open_mu_);
  // Replaced only with db_, under open_mu_ held exclusively.
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  // Held while a group is prepared, so revisions are assigned in commit
  // order, and by whatever must see no commit in progress (RecordPolicy,
  // PurgeRequestIds, Checkpoint, Close: they also wait for AwaitNoWrite).
  absl::Mutex write_mu_ ABSL_ACQUIRED_BEFORE(open_mu_);
  // Guards the written state (what every completed write produced) and
  // the group being written.
  absl::Mutex flight_mu_ ABSL_ACQUIRED_AFTER(open_mu_);
  // Set by a failed synced write: until Reopen succeeds, every write is
  // refused with it (RecoverWrites).
  absl::Status write_failure_ ABSL_GUARDED_BY(flight_mu_);
  absl::Time last_reopen_attempt_ ABSL_GUARDED_BY(flight_mu_) = absl::InfinitePast();
  int64_t write_failures_ ABSL_GUARDED_BY(flight_mu_) = 0;
  int64_t reopens_ ABSL_GUARDED_BY(flight_mu_) = 0;
  std::atomic<int64_t> revision_;
  absl::Time last_time_ ABSL_GUARDED_BY(flight_mu_);
  // Hash of the last event (32 zero bytes before the first).
  std::string last_hash_ ABSL_GUARDED_BY(flight_mu_);
  // The group being written (its synced write in progress), if any. The
  // next group is prepared on top of it meanwhile: its revisions, time and
  // hash chain continue from it, and its records are read through it.
  std::shared_ptr<Group> writing_ ABSL_GUARDED_BY(flight_mu_);
  // Null unless options_.rocksdb.collect_statistics.
  std::shared_ptr<rocksdb::Statistics> statistics_;
  std::shared_ptr<StallListener> stalls_;
  // Null unless options_.subject_index.
  std::unique_ptr<SubjectIndex> index_;
  absl::Mutex loader_mu_ ABSL_ACQUIRED_AFTER(write_mu_);
  std::thread loader_ ABSL_GUARDED_BY(loader_mu_);
  std::atomic<bool> stop_loading_{false};
  // The user history index entries of written groups that are not in
  // RocksDB yet. Its lock comes after flight_mu_ (Write adds to it).
  HistoryTail history_;
  // Last: destroyed (stopped) first, while everything its stages use is
  // still there.
  CommitPipeline pipeline_;

  friend absl::StatusOr<std::unique_ptr<ConsentStore>> ConsentStore::Open(const StoreOptions&);
};

}  // namespace consent::storage

#endif  // CONSENT_STORAGE_ROCKSDB_STORE_H_
