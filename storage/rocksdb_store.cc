// RocksDB implementation of ConsentStore. The key and value layout is
// documented in docs/storage.md; keep the two in step.
#include <pthread.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <limits>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "google/protobuf/arena.h"
#include "google/protobuf/util/time_util.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/file_system.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/listener.h"
#include "rocksdb/options.h"
#include "rocksdb/slice.h"
#include "rocksdb/slice_transform.h"
#include "rocksdb/sst_file_writer.h"
#include "rocksdb/statistics.h"
#include "rocksdb/table.h"
#include "rocksdb/utilities/checkpoint.h"
#include "rocksdb/write_batch.h"
#include "storage/audit_chain.h"
#include "storage/consent_store.h"
#include "storage/history_runs.h"
#include "storage/keys.h"
#include "storage/rocksdb_log.h"
#include "storage/subject_index.h"

namespace consent::storage {
namespace {

using google::protobuf::util::TimeUtil;

// 2: events carry the audit hash chain.
constexpr char kFormatVersion[] = "2";
constexpr char kSubjectsCf[] = "subjects";
constexpr char kEventsCf[] = "events";
constexpr char kUserEventsCf[] = "user_events";
constexpr char kMetaCf[] = "meta";
constexpr char kExclusionsCf[] = "exclusions";
constexpr char kPoliciesCf[] = "policies";
constexpr char kRequestsCf[] = "requests";
constexpr char kRequestTimesCf[] = "request_times";
constexpr char kMetaFormatVersion[] = "format_version";
constexpr char kMetaRevision[] = "revision";
// The latest time stamped on an event or policy, in Unix nanoseconds.
constexpr char kMetaLastTime[] = "last_time";
// Every event up to this revision has its user_events key in RocksDB; the
// later ones are in memory (history_tail_) and rebuilt from events at Open.
constexpr char kMetaHistoryIndexed[] = "history_indexed";
// The file a bulk write of the history index is built in, in the data
// directory; ingested (moved) into the database. A leftover is removed at
// Open.
constexpr char kHistoryFile[] = "history-index.sst.tmp";

// The single place where rocksdb::Status becomes absl::Status.
absl::Status FromRocks(const rocksdb::Status& s, absl::string_view context) {
  if (s.ok()) return absl::OkStatus();
  std::string msg = absl::StrCat(context, ": ", s.ToString());
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(msg);
  if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
    return absl::FailedPreconditionError(
        absl::StrCat(msg, " (is another consentd using this data directory?)"));
  }
  if (s.IsBusy() || s.IsTimedOut() || s.IsTryAgain()) {
    return absl::UnavailableError(msg);
  }
  return absl::InternalError(msg);
}

google::protobuf::Timestamp ToProto(absl::Time t) {
  return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(t));
}

absl::Status CheckDataDir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (dir.empty()) return absl::InvalidArgumentError("data directory is empty");
  if (fs::exists(dir, ec)) {
    if (!fs::is_directory(dir, ec)) {
      return absl::FailedPreconditionError(
          absl::StrCat("data directory ", dir, " exists and is not a directory"));
    }
    if (!fs::exists(fs::path(dir) / "CURRENT", ec) && !fs::is_empty(dir, ec)) {
      return absl::FailedPreconditionError(
          absl::StrCat("data directory ", dir,
                       " is not empty and holds no consent-registry database; "
                       "refusing to write into it"));
    }
    return absl::OkStatus();
  }
  if (absl::Status s = CreatePrivateDirectory(dir); !s.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create data directory ", dir, ": ", s.message()));
  }
  return absl::OkStatus();
}

// Accounts for the time writes are delayed or stopped, from RocksDB's
// stall notifications: no cost on the write path.
class StallListener final : public rocksdb::EventListener {
 public:
  void OnStallConditionsChanged(const rocksdb::WriteStallInfo& info) override {
    absl::MutexLock lock(&mu_);
    const bool was_stalled = !stalled_.empty();
    if (info.condition.cur == rocksdb::WriteStallCondition::kNormal) {
      stalled_.erase(info.cf_name);
    } else {
      stalled_.insert(info.cf_name);
    }
    const absl::Time now = absl::Now();
    if (!was_stalled && !stalled_.empty()) since_ = now;
    if (was_stalled && stalled_.empty()) total_ += now - since_;
  }

  // Stalled time so far, the ongoing stall included.
  absl::Duration Total() const {
    absl::MutexLock lock(&mu_);
    return stalled_.empty() ? total_ : total_ + (absl::Now() - since_);
  }

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_set<std::string> stalled_ ABSL_GUARDED_BY(mu_);  // column families
  absl::Time since_ ABSL_GUARDED_BY(mu_);
  absl::Duration total_ ABSL_GUARDED_BY(mu_);
};

std::vector<rocksdb::ColumnFamilyDescriptor> ColumnFamilies(const StoreOptions& store_options);

// Opens the database with every column family; read-only when asked (what
// a store that cannot reopen for writing still serves reads from).
absl::Status OpenDatabase(const StoreOptions& options, const rocksdb::DBOptions& db_options,
                          bool read_only, std::unique_ptr<rocksdb::DB>* db,
                          std::vector<rocksdb::ColumnFamilyHandle*>* handles) {
  rocksdb::DB* raw_db = nullptr;
  handles->clear();
  const rocksdb::Status s =
      read_only ? rocksdb::DB::OpenForReadOnly(db_options, options.data_dir,
                                               ColumnFamilies(options), handles, &raw_db)
                : rocksdb::DB::Open(db_options, options.data_dir, ColumnFamilies(options), handles,
                                    &raw_db);
  db->reset(raw_db);
  return FromRocks(s, absl::StrCat(read_only ? "opening (read-only) " : "opening ",
                                   "data directory ", options.data_dir));
}

// Destroys the column family handles and closes the database; errors are
// ignored (the database is being given up).
void CloseDatabase(std::unique_ptr<rocksdb::DB>* db,
                   std::vector<rocksdb::ColumnFamilyHandle*>* handles) {
  if (*db == nullptr) return;
  for (rocksdb::ColumnFamilyHandle* h : *handles) {
    (*db)->DestroyColumnFamilyHandle(h).PermitUncheckedError();
  }
  handles->clear();
  (*db)->Close().PermitUncheckedError();
  db->reset();
}

// What the database says of the last commit: its revision, the latest time
// stamped, and the last event's hash (32 zero bytes before the first).
struct DiskState {
  int64_t revision = 0;
  absl::Time last_time;
  std::string last_hash;
};

absl::StatusOr<DiskState> ReadDiskState(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* meta,
                                        rocksdb::ColumnFamilyHandle* events) {
  DiskState state;
  // An 8-byte big-endian number from meta; absent is 0.
  auto read_number = [&](const char* key, int64_t* out) -> absl::Status {
    *out = 0;
    std::string value;
    rocksdb::Status s = db->Get(rocksdb::ReadOptions(), meta, key, &value);
    if (s.IsNotFound()) return absl::OkStatus();
    if (!s.ok()) return FromRocks(s, absl::StrCat("reading meta ", key));
    if (!DecodeRevision(value, out)) {
      return absl::DataLossError(absl::StrCat("meta ", key, " has a bad encoding"));
    }
    return absl::OkStatus();
  };
  int64_t last_time_nanos = 0;
  if (absl::Status s = read_number(kMetaRevision, &state.revision); !s.ok()) return s;
  if (absl::Status s = read_number(kMetaLastTime, &last_time_nanos); !s.ok()) return s;
  state.last_time = absl::FromUnixNanos(last_time_nanos);
  // The chain continues from the last event's hash.
  state.last_hash.assign(kHashBytes, '\0');
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), events));
  it->SeekToLast();
  if (it->Valid()) {
    v1::ChangeEvent last;
    if (!last.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return absl::DataLossError("the last event does not parse");
    }
    if (!last.hash().empty()) state.last_hash = last.hash();
  }
  if (absl::Status s = FromRocks(it->status(), "reading the last event"); !s.ok()) return s;
  return state;
}

class RocksDbStore final : public ConsentStore {
 public:
  RocksDbStore(std::unique_ptr<rocksdb::DB> db, std::vector<rocksdb::ColumnFamilyHandle*> handles,
               int64_t revision, absl::Time last_time)
      : db_(std::move(db)),
        handles_(std::move(handles)),
        revision_(revision),
        last_time_(last_time) {}

  ~RocksDbStore() override { Close().IgnoreError(); }

  absl::StatusOr<CommitResult> Commit(std::vector<SubjectUpdate> updates, absl::Time now,
                                      const RequestKey& request) override;
  void CommitAsync(std::vector<SubjectUpdate> updates, absl::Time now, RequestKey request,
                   std::function<void(absl::StatusOr<CommitResult>)> done) override;
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
  absl::StatusOr<int64_t> Checkpoint(const std::string& directory) override;
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
  class Context;
  struct Group;
  // A Commit call waiting to be written by a group commit.
  struct PendingCommit {
    std::vector<SubjectUpdate> updates;
    absl::Time now;
    RequestKey request;
    std::function<void(absl::StatusOr<CommitResult>)> done;
    absl::StatusOr<CommitResult> result = absl::InternalError("commit not run");
    bool wrote = false;  // its changes are in the group's write batch
  };
  using Commits = std::vector<std::unique_ptr<PendingCommit>>;
  // A prepared group on its way to the writer thread, with its commits
  // (null when there is nothing to write: each commit has its result).
  struct GroupToWrite {
    std::shared_ptr<Group> group;
    Commits commits;
  };

  // Applies one commit to `group` and `batch`; on failure (or when it
  // writes nothing) takes its changes back and sets its result.
  void ApplyCommit(PendingCommit& commit, Group& group, rocksdb::WriteBatch& batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_) ABSL_SHARED_LOCKS_REQUIRED(open_mu_);
  // Applies `commits` in order into a new group, on top of the group being
  // written if there is one, then waits for that write to finish and makes
  // the new group the one being written. Null when there is nothing to
  // write (every result is then set).
  std::shared_ptr<Group> PrepareGroup(const std::vector<PendingCommit*>& commits);
  // Writes a prepared group with one synced write and publishes it.
  void WriteGroup(Group& group, const std::vector<PendingCommit*>& commits);
  // The three stages of the commit pipeline, one thread each: the
  // committer prepares groups, the writer writes them one at a time, the
  // completer hands each commit its result (so `done` callbacks, which
  // answer calls, never hold up the next write).
  void RunCommitter();
  void RunWriter();
  void RunCompleter();
  // Frees the groups written since the last call. Called by the committer,
  // which allocated them, before each group it prepares: glibc's malloc is
  // much slower for a thread whose memory other threads free (measured:
  // docs/performance.md). So the last group written stays allocated until
  // the next commit, or until the store is destroyed.
  void FreeWrittenGroups();
  // The history index's bulk writes (docs/storage.md, "The history
  // index"). AddHistory appends a written group's entries to the tail;
  // the history thread writes the tail to RocksDB once it holds
  // options_.history_index_batch entries (RunHistoryWriter), and Close
  // writes what is left. WriteHistory writes `runs` (the oldest of the
  // tail) as one sorted file, records the revision they reach, then drops
  // them from the tail.
  void AddHistory(std::shared_ptr<const HistoryRun> run);
  // A copy of the tail's list of runs (the runs themselves are shared).
  std::vector<std::shared_ptr<const HistoryRun>> HistoryTail() {
    absl::MutexLock lock(&history_mu_);
    return history_tail_;
  }
  // Puts the entries of the events after revision `indexed` (those not in
  // RocksDB's history index) in the tail (Open).
  absl::Status LoadHistoryTail(int64_t indexed) ABSL_SHARED_LOCKS_REQUIRED(open_mu_);
  void RunHistoryWriter();
  // Merges the newest of `runs` (the tail as it was) into one run, which
  // replaces them in the tail (history_runs.h, MergeFrom). On the history
  // thread: readers search every run of the tail, and single writes add a
  // run each.
  void MergeHistoryTail(const std::vector<std::shared_ptr<const HistoryRun>>& runs);
  static constexpr size_t kMaxTailRuns = 64;
  absl::Status WriteHistory(const std::vector<std::shared_ptr<const HistoryRun>>& runs)
      ABSL_SHARED_LOCKS_REQUIRED(open_mu_);
  // Starts the three threads (Open).
  void StartPipeline();
  // Finishes everything queued, then stops the threads (Close).
  void StopPipeline();
  // Waits until no group is being written.
  void AwaitNoWrite() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  void AwaitNoWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(flight_mu_) {
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(flight_mu_) { return writing_ == nullptr; };
    flight_mu_.Await(absl::Condition(&idle));
  }
  // The request record of `id`, from the group or the database (none when
  // absent or expired).
  absl::StatusOr<std::optional<RequestRecord>> FindRequest(const Group& group,
                                                           const std::string& id, absl::Time now)
      ABSL_SHARED_LOCKS_REQUIRED(open_mu_);

  // Records that a synced write failed: from now on writes are refused
  // until Reopen succeeds. Returns whether this is the first failure since
  // writes were last accepted (then on_write_state is to be called).
  bool MarkWriteFailed(const absl::Status& failure) ABSL_EXCLUSIVE_LOCKS_REQUIRED(flight_mu_);
  // OK when writes are accepted. After a failed write: tries Reopen (at
  // most once per options_.reopen_interval) and returns why writes are
  // refused while that fails.
  absl::Status RecoverWrites() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
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

  // The Env over options_.file_system (null for the default): it must
  // outlive db_, so it comes first.
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
  StoreOptions options_;
  // Null unless options_.collect_statistics.
  std::shared_ptr<rocksdb::Statistics> statistics_;
  std::shared_ptr<StallListener> stalls_;
  // Null unless options_.subject_index.
  std::unique_ptr<SubjectIndex> index_;
  // Fills index_ from a snapshot of the subjects, then marks it ready.
  // Close stops and joins it before closing the database.
  void LoadIndex() ABSL_LOCKS_EXCLUDED(open_mu_);
  absl::Mutex loader_mu_ ABSL_ACQUIRED_AFTER(write_mu_);
  std::thread loader_ ABSL_GUARDED_BY(loader_mu_);
  std::atomic<bool> stop_loading_{false};

  friend absl::StatusOr<std::unique_ptr<ConsentStore>> ConsentStore::Open(const StoreOptions&);

  // Group commit: commits queue up; the committer thread prepares
  // everything queued as one group, which the writer thread writes with one
  // synced write. Concurrent writers thus share one WAL sync. Pipelined:
  // while one group syncs, the committer prepares the next; writes still
  // happen one at a time, in order, and nothing is acknowledged or visible
  // before its sync.
  absl::Mutex queue_mu_ ABSL_ACQUIRED_BEFORE(write_mu_);
  std::deque<std::unique_ptr<PendingCommit>> queue_ ABSL_GUARDED_BY(queue_mu_);
  bool stopping_ ABSL_GUARDED_BY(queue_mu_) = false;
  absl::Mutex stages_mu_;
  std::deque<GroupToWrite> to_write_ ABSL_GUARDED_BY(stages_mu_);
  std::deque<Commits> to_complete_ ABSL_GUARDED_BY(stages_mu_);
  // Groups written, for the committer to free (FreeWrittenGroups).
  std::vector<std::shared_ptr<Group>> written_ ABSL_GUARDED_BY(stages_mu_);
  bool committer_done_ ABSL_GUARDED_BY(stages_mu_) = false;
  bool writer_done_ ABSL_GUARDED_BY(stages_mu_) = false;
  absl::Mutex pipeline_mu_ ABSL_ACQUIRED_BEFORE(loader_mu_);
  std::thread committer_ ABSL_GUARDED_BY(pipeline_mu_);
  std::thread writer_ ABSL_GUARDED_BY(pipeline_mu_);
  std::thread completer_ ABSL_GUARDED_BY(pipeline_mu_);
  std::thread history_writer_ ABSL_GUARDED_BY(pipeline_mu_);

  // The history index entries of written groups that are not in RocksDB
  // yet, oldest first, and how many keys they hold. Readers copy the list
  // before they read RocksDB; WriteHistory drops runs only after they are
  // in RocksDB, so a reader finds each entry in one or the other.
  absl::Mutex history_mu_ ABSL_ACQUIRED_AFTER(flight_mu_);
  std::vector<std::shared_ptr<const HistoryRun>> history_tail_ ABSL_GUARDED_BY(history_mu_);
  size_t history_tail_keys_ ABSL_GUARDED_BY(history_mu_) = 0;
  // After a failed bulk write, the next waits for this many keys.
  size_t history_retry_keys_ ABSL_GUARDED_BY(history_mu_) = 0;
  int64_t history_failures_ ABSL_GUARDED_BY(history_mu_) = 0;
  bool history_stopping_ ABSL_GUARDED_BY(history_mu_) = false;
};

// What a group commit has written so far, read before the database, and
// how to take back one commit of it (the journal) if that commit fails.
struct RocksDbStore::Group {
  Group() : arena(ArenaOptions()) {}

  // The group's messages (records read and written, events) are allocated
  // here and freed together with the group: a group of thousands of
  // preferences otherwise spends a third of its preparation in malloc
  // (docs/performance.md, "Allocations of a group commit").
  google::protobuf::Arena arena;
  int64_t revision = 0;                                      // last revision given
  absl::Time last_time;                                      // latest time stamped
  std::string last_hash;                                     // hash of the last event
  absl::flat_hash_map<std::string, v1::Subject*> subjects;   // user -> record written (on arena)
  absl::flat_hash_map<std::string, bool> exclusions;         // key -> excluded
  absl::flat_hash_map<std::string, RequestRecord> requests;  // request id -> record
  // The group that was being written when this one was prepared (null if
  // none): read after this group's own maps, before the database. Not
  // changed once it is being written.
  std::shared_ptr<const Group> base;
  rocksdb::WriteBatch batch;
  std::vector<std::pair<std::string, std::string>> views;  // for the subject index
  // Keys of user_events, in commit order; sorted into `history` at the end.
  std::vector<std::string> user_events;
  // The group's history index entries, added to the store's history tail
  // once the group is written.
  std::shared_ptr<const HistoryRun> history;
  ChainedEvent chained;  // the last event chained (its buffers reused)
  // The write's outcome, once it has one (guarded by flight_mu_).
  absl::Status status;

  // What this group, or the one under it, wrote for a key; null if neither.
  template <typename Map>
  static const typename Map::mapped_type* Find(const Group& group, Map Group::*map,
                                               const std::string& key) {
    for (const Group* g = &group; g != nullptr; g = g->base.get()) {
      auto it = (g->*map).find(key);
      if (it != (g->*map).end()) return &it->second;
    }
    return nullptr;
  }

  // Old values of what the current commit changed, newest last.
  struct Journal {
    int64_t revision;
    absl::Time last_time;
    std::string last_hash;
    size_t user_events;
    std::vector<std::pair<std::string, std::optional<v1::Subject*>>> subjects;
    std::vector<std::pair<std::string, std::optional<bool>>> exclusions;
    std::vector<std::pair<std::string, std::optional<RequestRecord>>> requests;
  };
  Journal journal;

  void BeginCommit() {
    journal = Journal{revision, last_time, last_hash, user_events.size(), {}, {}, {}};
  }
  template <typename Map, typename Log, typename Value>
  static void Set(Map& map, Log& log, const std::string& key, Value value) {
    auto it = map.find(key);
    log.emplace_back(key, it == map.end() ? std::nullopt : std::make_optional(it->second));
    map[key] = std::move(value);
  }
  // `subject` is on `arena`, and not changed afterwards.
  void SetSubject(const std::string& user, v1::Subject* subject) {
    Set(subjects, journal.subjects, user, subject);
  }
  void SetExclusion(const std::string& key, bool excluded) {
    Set(exclusions, journal.exclusions, key, excluded);
  }
  void SetRequest(const std::string& id, RequestRecord record) {
    Set(requests, journal.requests, id, std::move(record));
  }
  // Blocks of 64 KiB growing to 1 MiB: a group holds from one record to
  // a few megabytes.
  static google::protobuf::ArenaOptions ArenaOptions() {
    google::protobuf::ArenaOptions options;
    options.start_block_size = 64 << 10;
    options.max_block_size = 1 << 20;
    return options;
  }

  // Takes back everything the current commit changed.
  void Rollback() {
    auto undo = [](auto& map, auto& log) {
      for (auto it = log.rbegin(); it != log.rend(); ++it) {
        if (it->second) {
          map[it->first] = *it->second;
        } else {
          map.erase(it->first);
        }
      }
      log.clear();
    };
    undo(subjects, journal.subjects);
    undo(exclusions, journal.exclusions);
    undo(requests, journal.requests);
    revision = journal.revision;
    last_time = journal.last_time;
    last_hash = journal.last_hash;
    user_events.resize(journal.user_events);
  }
};

// UpdateContext of one update inside a group commit.
class RocksDbStore::Context final : public UpdateContext {
 public:
  Context(RocksDbStore* store, Group* group, const std::string& user_id, bool exists,
          int64_t revision, absl::Time time)
      : store_(store),
        group_(group),
        user_id_(user_id),
        exists_(exists),
        revision_(revision),
        time_(time) {}

  bool exists() const override { return exists_; }
  int64_t revision() const override { return revision_; }
  absl::Time time() const override { return time_; }

  absl::StatusOr<bool> IsExcluded(absl::string_view content_id,
                                  absl::string_view purpose) override {
    // Updates run inside a group commit, which holds open_mu_ shared; the
    // analysis cannot follow that through std::function.
    store_->open_mu_.AssertReaderHeld();
    const std::string key = ExclusionKey(user_id_, content_id, purpose);
    if (const bool* excluded = Group::Find(*group_, &Group::exclusions, key)) return *excluded;
    std::string value;
    rocksdb::Status s = store_->db_->Get(rocksdb::ReadOptions(), store_->exclusions(), key, &value);
    if (s.IsNotFound()) return false;
    if (!s.ok()) return FromRocks(s, "reading exclusion");
    return true;
  }

  void SetExcluded(absl::string_view content_id, absl::string_view purpose,
                   bool excluded) override {
    group_->SetExclusion(ExclusionKey(user_id_, content_id, purpose), excluded);
  }

 private:
  RocksDbStore* store_;
  Group* group_;
  const std::string& user_id_;
  bool exists_;
  int64_t revision_;
  absl::Time time_;
};

absl::Status RocksDbStore::ReadSubject(absl::string_view user_id, bool* exists,
                                       v1::Subject* subject) {
  rocksdb::PinnableSlice value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), subjects(),
                               rocksdb::Slice(user_id.data(), user_id.size()), &value);
  if (s.IsNotFound()) {
    *exists = false;
    subject->Clear();
    subject->set_user_id(std::string(user_id));
    return absl::OkStatus();
  }
  if (!s.ok()) return FromRocks(s, "reading subject");
  if (!subject->ParseFromArray(value.data(), static_cast<int>(value.size()))) {
    return absl::DataLossError("subject record does not parse");
  }
  *exists = true;
  return absl::OkStatus();
}

absl::StatusOr<std::optional<RequestRecord>> RocksDbStore::FindRequest(const Group& group,
                                                                       const std::string& id,
                                                                       absl::Time now) {
  RequestRecord record;
  if (const RequestRecord* written = Group::Find(group, &Group::requests, id)) {
    record = *written;
  } else {
    std::string value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), requests(), id, &value);
    if (s.IsNotFound()) return std::optional<RequestRecord>();
    if (!s.ok()) return FromRocks(s, "reading a request id");
    if (!DecodeRequestRecord(value, &record)) {
      return absl::DataLossError("request id record has a bad encoding");
    }
  }
  if (absl::FromUnixNanos(record.time_nanos) + options_.request_id_retention < now) {
    return std::optional<RequestRecord>();  // expired: the id may be used afresh
  }
  return std::optional<RequestRecord>(std::move(record));
}

absl::StatusOr<CommitResult> RocksDbStore::Commit(std::vector<SubjectUpdate> updates,
                                                  absl::Time now, const RequestKey& request) {
  absl::StatusOr<CommitResult> result;
  absl::Notification finished;
  CommitAsync(std::move(updates), now, request, [&](absl::StatusOr<CommitResult> r) {
    result = std::move(r);
    finished.Notify();
  });
  finished.WaitForNotification();
  return result;
}

void RocksDbStore::CommitAsync(std::vector<SubjectUpdate> updates, absl::Time now,
                               RequestKey request,
                               std::function<void(absl::StatusOr<CommitResult>)> done) {
  if (updates.empty()) {
    done(absl::InvalidArgumentError("commit of no updates"));
    return;
  }
  auto commit = std::make_unique<PendingCommit>();
  commit->updates = std::move(updates);
  commit->now = now;
  commit->request = std::move(request);
  commit->done = std::move(done);
  bool full = false;
  {
    absl::MutexLock lock(&queue_mu_);
    full = queue_.size() >= options_.max_queued_commits;
    if (!stopping_ && !full) {
      queue_.push_back(std::move(commit));
      return;
    }
  }
  if (full) {
    commit->done(absl::ResourceExhaustedError(
        absl::StrCat("the commit queue is full (", options_.max_queued_commits,
                     " writes waiting for the disk); nothing was written, retry later")));
    return;
  }
  commit->done(absl::FailedPreconditionError("store is closed"));
}

void RocksDbStore::RunCommitter() {
  // Bounded so one sync never waits on an unbounded batch.
  constexpr size_t kMaxGroup = 256;
  while (true) {
    Commits taken;
    {
      absl::MutexLock lock(&queue_mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
        return stopping_ || !queue_.empty();
      };
      queue_mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) break;  // stopping, and nothing left
      while (!queue_.empty() && taken.size() < kMaxGroup) {
        taken.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    FreeWrittenGroups();
    std::vector<PendingCommit*> commits;
    for (const auto& c : taken) commits.push_back(c.get());
    // Waits for the write in flight, then makes this group the next one.
    // A group with nothing to write (null) goes through the writer too, so
    // callers are answered in commit order.
    std::shared_ptr<Group> prepared = PrepareGroup(commits);
    absl::MutexLock lock(&stages_mu_);
    to_write_.push_back(GroupToWrite{std::move(prepared), std::move(taken)});
  }
  absl::MutexLock lock(&stages_mu_);
  committer_done_ = true;
}

void RocksDbStore::FreeWrittenGroups() {
  std::vector<std::shared_ptr<Group>> written;
  absl::MutexLock lock(&stages_mu_);
  written.swap(written_);
  // `lock` is released first, then `written` freed.
}

void RocksDbStore::RunWriter() {
  while (true) {
    GroupToWrite next;
    {
      absl::MutexLock lock(&stages_mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(stages_mu_) {
        return committer_done_ || !to_write_.empty();
      };
      stages_mu_.Await(absl::Condition(&ready));
      if (to_write_.empty()) break;
      next = std::move(to_write_.front());
      to_write_.pop_front();
    }
    if (next.group != nullptr) {
      std::vector<PendingCommit*> commits;
      for (const auto& c : next.commits) commits.push_back(c.get());
      WriteGroup(*next.group, commits);
    }
    absl::MutexLock lock(&stages_mu_);
    if (next.group != nullptr) written_.push_back(std::move(next.group));
    to_complete_.push_back(std::move(next.commits));
  }
  absl::MutexLock lock(&stages_mu_);
  writer_done_ = true;
}

void RocksDbStore::RunCompleter() {
  while (true) {
    std::deque<Commits> batches;
    {
      absl::MutexLock lock(&stages_mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(stages_mu_) {
        return writer_done_ || !to_complete_.empty();
      };
      stages_mu_.Await(absl::Condition(&ready));
      if (to_complete_.empty()) break;
      batches.swap(to_complete_);
    }
    for (Commits& commits : batches) {
      for (auto& commit : commits) commit->done(std::move(commit->result));
    }
  }
}

void RocksDbStore::StartPipeline() {
  absl::MutexLock lock(&pipeline_mu_);
  committer_ = std::thread([this] { RunCommitter(); });
  writer_ = std::thread([this] { RunWriter(); });
  completer_ = std::thread([this] { RunCompleter(); });
  history_writer_ = std::thread([this] { RunHistoryWriter(); });
  // Named for ps, top and perf.
  pthread_setname_np(committer_.native_handle(), "consent-prepare");
  pthread_setname_np(writer_.native_handle(), "consent-write");
  pthread_setname_np(completer_.native_handle(), "consent-answer");
  pthread_setname_np(history_writer_.native_handle(), "consent-history");
}

void RocksDbStore::StopPipeline() {
  absl::MutexLock lock(&pipeline_mu_);
  {
    absl::MutexLock queue_lock(&queue_mu_);
    stopping_ = true;
  }
  // Each stage finishes what the one before it passed on, then stops.
  if (committer_.joinable()) committer_.join();
  if (writer_.joinable()) writer_.join();
  if (completer_.joinable()) completer_.join();
  {
    absl::MutexLock history_lock(&history_mu_);
    history_stopping_ = true;
  }
  if (history_writer_.joinable()) history_writer_.join();
}

void RocksDbStore::AddHistory(std::shared_ptr<const HistoryRun> run) {
  absl::MutexLock lock(&history_mu_);
  history_tail_keys_ += run->size();
  history_tail_.push_back(std::move(run));
}

void RocksDbStore::RunHistoryWriter() {
  while (true) {
    std::vector<std::shared_ptr<const HistoryRun>> runs;
    bool merge_only = false;  // too many runs, not enough entries to write
    {
      absl::MutexLock lock(&history_mu_);
      auto write_ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(history_mu_) {
        return history_tail_keys_ > 0 && history_tail_keys_ >= options_.history_index_batch &&
               history_tail_keys_ >= history_retry_keys_;
      };
      auto ready = [this, &write_ready]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(history_mu_) {
        return history_stopping_ || write_ready() || history_tail_.size() > kMaxTailRuns;
      };
      history_mu_.Await(absl::Condition(&ready));
      if (history_stopping_) return;  // Close writes the rest
      runs = history_tail_;
      merge_only = !write_ready();
    }
    if (merge_only) {
      MergeHistoryTail(runs);
      continue;
    }
    absl::Status s;
    {
      absl::ReaderMutexLock open_lock(&open_mu_);
      s = db_ == nullptr ? absl::FailedPreconditionError("store is closed") : WriteHistory(runs);
    }
    {
      absl::MutexLock lock(&history_mu_);
      // Failed (a full disk, say): the entries stay in memory, readable,
      // and the write is tried again when another batch has come.
      history_retry_keys_ =
          s.ok() ? 0 : history_tail_keys_ + std::max<size_t>(options_.history_index_batch, 1);
      if (!s.ok()) ++history_failures_;
    }
    if (options_.on_history_written) {
      int64_t entries = 0;
      for (const auto& run : runs) entries += static_cast<int64_t>(run->size());
      options_.on_history_written(s, entries);
    }
  }
}

void RocksDbStore::MergeHistoryTail(const std::vector<std::shared_ptr<const HistoryRun>>& runs) {
  std::vector<size_t> sizes;
  sizes.reserve(runs.size());
  for (const auto& run : runs) sizes.push_back(run->size());
  const size_t from = MergeFrom(sizes);
  if (from >= runs.size()) return;
  const std::vector<std::shared_ptr<const HistoryRun>> newest(
      runs.begin() + static_cast<std::ptrdiff_t>(from), runs.end());
  int64_t last_revision = 0;
  for (const auto& run : newest) last_revision = std::max(last_revision, run->last_revision());
  auto merged = std::make_shared<const HistoryRun>(MergeRuns(newest), last_revision);
  absl::MutexLock lock(&history_mu_);
  // Only this thread drops or replaces runs, and AddHistory appends: the
  // merged runs are still at [from, runs.size()).
  const auto first = history_tail_.begin() + static_cast<std::ptrdiff_t>(from);
  history_tail_.erase(first, history_tail_.begin() + static_cast<std::ptrdiff_t>(runs.size()));
  history_tail_.insert(history_tail_.begin() + static_cast<std::ptrdiff_t>(from),
                       std::move(merged));
}

absl::Status RocksDbStore::WriteHistory(
    const std::vector<std::shared_ptr<const HistoryRun>>& runs) {
  if (runs.empty()) return absl::OkStatus();
  const std::vector<absl::string_view> keys = MergeRuns(runs);
  int64_t last_revision = 0;
  for (const auto& run : runs) last_revision = std::max(last_revision, run->last_revision());
  // One sorted file, moved into the database: no memtable inserts.
  const std::string path = (std::filesystem::path(options_.data_dir) / kHistoryFile).string();
  rocksdb::SstFileWriter file(rocksdb::EnvOptions(), db_->GetOptions(user_events()), user_events());
  rocksdb::Status s = file.Open(path);
  for (size_t i = 0; s.ok() && i < keys.size(); ++i) {
    s = file.Put(rocksdb::Slice(keys[i].data(), keys[i].size()), rocksdb::Slice());
  }
  if (s.ok()) s = file.Finish();
  if (s.ok()) {
    rocksdb::IngestExternalFileOptions ingest;
    ingest.move_files = true;
    s = db_->IngestExternalFile(user_events(), {path}, ingest);
  }
  if (!s.ok()) {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
    return FromRocks(s, "writing the history index");
  }
  // Only once the entries are in: a crash before this line writes them
  // again at the next Open, which is harmless (same keys).
  rocksdb::WriteOptions sync;
  sync.sync = true;
  s = db_->Put(sync, meta(), kMetaHistoryIndexed, EncodeRevision(last_revision));
  if (!s.ok()) return FromRocks(s, "recording the history index");
  absl::MutexLock lock(&history_mu_);
  // `runs` are the oldest of the tail: only this thread, or Close after it
  // stopped, drops runs, and AddHistory appends.
  history_tail_.erase(history_tail_.begin(), history_tail_.begin() + runs.size());
  history_tail_keys_ -= keys.size();
  return absl::OkStatus();
}

void RocksDbStore::AwaitNoWrite() {
  absl::MutexLock lock(&flight_mu_);
  AwaitNoWriteLocked();
}

// Why a write is refused while a failed write has not been recovered from.
absl::Status WritesRefused(const absl::Status& cause) {
  return absl::UnavailableError(absl::StrCat(
      "writes are refused: a synced write failed (", cause.message(),
      ") and the store has not reopened its database yet; checks still answer from what was "
      "committed; retry later"));
}

std::shared_ptr<RocksDbStore::Group> RocksDbStore::PrepareGroup(
    const std::vector<PendingCommit*>& commits) {
  absl::MutexLock write_lock(&write_mu_);
  if (absl::Status refused = RecoverWrites(); !refused.ok()) {
    for (PendingCommit* c : commits) c->result = refused;
    return nullptr;
  }
  absl::ReaderMutexLock open_lock(&open_mu_);
  if (db_ == nullptr) {
    for (PendingCommit* c : commits) c->result = absl::FailedPreconditionError("store is closed");
    return nullptr;
  }
  auto group = std::make_shared<Group>();
  {
    absl::MutexLock lock(&flight_mu_);
    if (!write_failure_.ok()) {
      // The group in flight failed after RecoverWrites looked: its revisions
      // and chain may be on disk, so nothing may continue from what is
      // published; refuse, as RecoverWrites will until the reopen.
      const absl::Status refused = WritesRefused(write_failure_);
      for (PendingCommit* c : commits) c->result = refused;
      return nullptr;
    }
    // Continue from the group being written, or from what is written.
    group->base = writing_;
    group->revision = writing_ ? writing_->revision : revision_.load(std::memory_order_relaxed);
    group->last_time = writing_ ? writing_->last_time : last_time_;
    group->last_hash = writing_ ? writing_->last_hash : last_hash_;
  }
  bool any = false;
  for (PendingCommit* commit : commits) {
    ApplyCommit(*commit, *group, group->batch);
    any = any || commit->wrote;
  }
  rocksdb::WriteBatch& batch = group->batch;
  // Keys in order, so that each memtable insert starts from the previous
  // one (the insert hint, ColumnFamilies).
  std::vector<const std::pair<const std::string, v1::Subject*>*> written;
  written.reserve(group->subjects.size());
  for (const auto& entry : group->subjects) written.push_back(&entry);
  std::sort(written.begin(), written.end(),
            [](const auto* a, const auto* b) { return a->first < b->first; });
  std::string record;  // reused: one allocation for the group's records
  for (const auto* entry : written) {
    const auto& [user_id, subject] = *entry;
    subject->SerializeToString(&record);
    batch.Put(subjects(), user_id, record);
    if (index_ != nullptr) group->views.emplace_back(user_id, DecisionView(*subject));
  }
  if (!group->user_events.empty()) {
    std::sort(group->user_events.begin(), group->user_events.end());
    group->history = std::make_shared<HistoryRun>(group->user_events, group->revision);
  }
  for (const auto& [key, excluded] : group->exclusions) {
    if (excluded) {
      batch.Put(exclusions(), key, rocksdb::Slice());
    } else {
      batch.Delete(exclusions(), key);
    }
  }
  batch.Put(meta(), kMetaRevision, EncodeRevision(group->revision));
  batch.Put(meta(), kMetaLastTime, EncodeRevision(absl::ToUnixNanos(group->last_time)));

  // Writes go one at a time, in order: wait for the previous one. Even a
  // group with nothing to write waits: its replays may answer from it.
  absl::MutexLock lock(&flight_mu_);
  AwaitNoWriteLocked();
  if (group->base != nullptr && !group->base->status.ok()) {
    // Prepared on top of a write that failed: every result continues state
    // that does not exist (revisions, chain, replays), so none stands.
    // Nothing of this group was written.
    const absl::Status failed = absl::UnavailableError(
        absl::StrCat("not written: an earlier write in the pipeline failed (",
                     group->base->status.message(), "); retry once the store has recovered"));
    for (PendingCommit* c : commits) c->result = failed;
    return nullptr;
  }
  if (!any) return nullptr;
  group->base.reset();  // its writes are in the database now
  writing_ = group;
  return group;
}

void RocksDbStore::WriteGroup(Group& group, const std::vector<PendingCommit*>& commits) {
  // Close waits for this write (AwaitNoWrite) before it closes db_.
  absl::ReaderMutexLock open_lock(&open_mu_);
  rocksdb::WriteOptions options;
  options.sync = true;  // never acknowledge a write that is not on disk
  const absl::Time write_start = absl::Now();
  absl::Status s = FromRocks(db_->Write(options, &group.batch), "committing write");
  if (options_.on_synced_write) options_.on_synced_write(absl::Now() - write_start);
  bool newly_failed = false;
  {
    absl::MutexLock lock(&flight_mu_);
    writing_ = nullptr;
    group.status = s;
    if (s.ok()) {
      // The index sees the write before anyone is acknowledged or the
      // revision moves, so every read that starts afterwards sees it too.
      for (const auto& [user_id, view] : group.views) index_->Put(user_id, view);
      if (group.history != nullptr) AddHistory(group.history);
      revision_.store(group.revision, std::memory_order_release);
      last_time_ = group.last_time;
      last_hash_ = group.last_hash;
      return;
    }
    // A failed append or sync may still have reached the disk, and come
    // back when the WAL is replayed: no caller of the group can be told
    // either way, whether its changes were in the batch or it was answered
    // from it (a replay of a request earlier in the group).
    const absl::Status unknown = absl::UnavailableError(absl::StrCat(
        "the outcome of this write is unknown: its synced write failed (", s.message(),
        ") and may or may not have reached the disk; once the store has recovered, a retry with "
        "the same request_id gives the definitive answer"));
    for (PendingCommit* c : commits) {
      if (c->result.ok()) c->result = unknown;
    }
    newly_failed = MarkWriteFailed(s);
  }
  if (newly_failed && options_.on_write_state) options_.on_write_state(false, s);
}

bool RocksDbStore::MarkWriteFailed(const absl::Status& failure) {
  ++write_failures_;
  if (!write_failure_.ok()) return false;
  write_failure_ = failure;
  return true;
}

absl::Status RocksDbStore::RecoverWrites() {
  absl::Status cause;
  {
    absl::MutexLock lock(&flight_mu_);
    if (write_failure_.ok()) return absl::OkStatus();
    // A failed group leaves no write in flight (WriteGroup), and the groups
    // prepared on it wrote nothing; wait all the same.
    AwaitNoWriteLocked();
    cause = write_failure_;
    const absl::Time now = absl::Now();
    if (now - last_reopen_attempt_ < options_.reopen_interval) return WritesRefused(cause);
    last_reopen_attempt_ = now;
  }
  if (absl::Status reopened = Reopen(); !reopened.ok()) {
    return absl::UnavailableError(
        absl::StrCat("writes are refused: a synced write failed (", cause.message(),
                     ") and reopening the database failed (", reopened.message(),
                     "); checks still answer from what was committed; retry later"));
  }
  {
    absl::MutexLock lock(&flight_mu_);
    write_failure_ = absl::OkStatus();
    ++reopens_;
  }
  if (options_.on_write_state) options_.on_write_state(true, absl::OkStatus());
  return absl::OkStatus();
}

absl::Status RocksDbStore::Reopen() {
  // The index loader reads db_ without open_mu_: stop it first, and load
  // again afterwards if it had not finished.
  {
    absl::MutexLock lock(&loader_mu_);
    if (loader_.joinable()) {
      stop_loading_.store(true, std::memory_order_relaxed);
      loader_.join();
      stop_loading_.store(false, std::memory_order_relaxed);
    }
  }
  // Loaded again below, from whatever database is open then (a later
  // Reopen does it if none is).
  bool reload_index = index_ != nullptr && !index_->ready();
  absl::Status status;
  {
    // Readers wait while the database is swapped.
    absl::MutexLock open_lock(&open_mu_);
    CloseDatabase(&db_, &handles_);
    std::unique_ptr<rocksdb::DB> db;
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    status = OpenDatabase(options_, db_options_, /*read_only=*/false, &db, &handles);
    if (!status.ok()) {
      // Keep serving reads from what is on disk while writes wait.
      if (OpenDatabase(options_, db_options_, /*read_only=*/true, &db, &handles).ok()) {
        db_ = std::move(db);
        handles_ = std::move(handles);
      } else {
        reload_index = false;  // nothing to load from
      }
    } else {
      db_ = std::move(db);
      handles_ = std::move(handles);
      status = AdoptUnpublished(revision_.load(std::memory_order_acquire));
    }
  }
  if (reload_index) {
    absl::MutexLock lock(&loader_mu_);
    loader_ = std::thread([this] { LoadIndex(); });
  }
  return status;
}

absl::Status RocksDbStore::AdoptUnpublished(int64_t published) {
  auto disk = ReadDiskState(db_.get(), meta(), events());
  if (!disk.ok()) return disk.status();
  if (disk->revision > published) {
    // The failed write reached the disk after all. Its callers were told
    // the outcome is unknown; what it wrote is now the registry's state,
    // and the reads that bypass RocksDB must see it too.
    std::vector<std::string> keys;
    absl::flat_hash_set<std::string> users;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), events()));
    for (it->Seek(EventKey(published + 1)); it->Valid(); it->Next()) {
      v1::ChangeEvent event;
      if (!event.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
        return absl::DataLossError("an event written by the failed write does not parse");
      }
      keys.push_back(UserEventKey(event.user_id(), event.revision()));
      users.insert(event.user_id());
    }
    if (absl::Status s = FromRocks(it->status(), "reading the failed write's events"); !s.ok()) {
      return s;
    }
    if (!keys.empty()) {
      std::sort(keys.begin(), keys.end());
      AddHistory(std::make_shared<HistoryRun>(keys, disk->revision));
    }
    if (index_ != nullptr) {
      for (const std::string& user : users) {
        bool exists = false;
        v1::Subject subject;
        if (absl::Status s = ReadSubject(user, &exists, &subject); !s.ok()) return s;
        if (exists) index_->Put(user, DecisionView(subject));
      }
    }
  }
  absl::MutexLock lock(&flight_mu_);
  revision_.store(std::max(published, disk->revision), std::memory_order_release);
  last_time_ = std::max(last_time_, disk->last_time);
  if (disk->revision > published) last_hash_ = disk->last_hash;
  return absl::OkStatus();
}

void RocksDbStore::ApplyCommit(PendingCommit& commit, Group& group, rocksdb::WriteBatch& batch) {
  group.BeginCommit();
  batch.SetSavePoint();
  // Ends this commit without writing anything of it.
  auto abandon = [&](absl::StatusOr<CommitResult> result) {
    group.Rollback();
    batch.RollbackToSavePoint().PermitUncheckedError();
    commit.result = std::move(result);
  };
  const absl::Time stamp = std::max(commit.now, group.last_time);
  CommitResult result;
  // The commit's own request id: a replay answers from the first attempt.
  const RequestKey& request = commit.request;
  if (!request.request_id.empty()) {
    auto seen = FindRequest(group, request.request_id, stamp);
    if (!seen.ok()) return abandon(seen.status());
    if (seen->has_value()) {
      if ((*seen)->fingerprint != request.fingerprint) {
        result.outcome = CommitResult::Outcome::kRequestIdConflict;
        result.conflict_index = -1;
        result.conflict_revision = (*seen)->revisions.empty() ? 0 : (*seen)->revisions.back();
        return abandon(result);
      }
      result.outcome = CommitResult::Outcome::kReplayed;
      result.revisions = (*seen)->revisions;
      result.replayed.assign(result.revisions.size(), true);
      result.subjects.resize(result.revisions.size());
      result.replies.resize(result.revisions.size());
      return abandon(result);
    }
  }

  const google::protobuf::Timestamp now_proto = ToProto(stamp);
  const int64_t stamp_nanos = absl::ToUnixNanos(stamp);
  std::vector<SubjectUpdate>& updates = commit.updates;
  result.revisions.reserve(updates.size());
  result.replayed.reserve(updates.size());
  result.subjects.reserve(updates.size());
  result.replies.reserve(updates.size());
  bool applied = false;
  for (size_t i = 0; i < updates.size(); ++i) {
    SubjectUpdate& update = updates[i];
    const RequestKey& key = update.request;
    if (!key.request_id.empty()) {
      auto seen = FindRequest(group, key.request_id, stamp);
      if (!seen.ok()) return abandon(seen.status());
      if (seen->has_value()) {
        if ((*seen)->fingerprint != key.fingerprint) {
          CommitResult conflict;
          conflict.outcome = CommitResult::Outcome::kRequestIdConflict;
          conflict.conflict_index = static_cast<int>(i);
          conflict.conflict_revision = (*seen)->revisions[0];
          return abandon(conflict);
        }
        result.revisions.push_back((*seen)->revisions[0]);
        result.replayed.push_back(true);
        result.subjects.emplace_back();
        result.replies.push_back((*seen)->reply);
        continue;
      }
    }

    bool exists = true;
    // A new record each time: the one it replaces stays as it was, for the
    // journal and for the group prepared on top of this one.
    v1::Subject& subject = *google::protobuf::Arena::CreateMessage<v1::Subject>(&group.arena);
    if (v1::Subject* const* written = Group::Find(group, &Group::subjects, update.user_id)) {
      subject.CopyFrom(**written);
    } else {
      absl::Status s = ReadSubject(update.user_id, &exists, &subject);
      if (!s.ok()) return abandon(s);
    }
    v1::ChangeEvent& event = *google::protobuf::Arena::CreateMessage<v1::ChangeEvent>(&group.arena);
    Context context(this, &group, update.user_id, exists, group.revision + 1, stamp);
    absl::Status s = update.apply(context, subject, event);
    if (!s.ok()) return abandon(s);

    const int64_t revision = ++group.revision;
    subject.set_user_id(update.user_id);
    subject.set_revision(revision);
    *subject.mutable_update_time() = now_proto;
    if (!subject.has_create_time()) *subject.mutable_create_time() = now_proto;
    event.set_revision(revision);
    event.set_user_id(update.user_id);
    *event.mutable_event_time() = now_proto;
    if (options_.hash_chain) {
      ChainEvent(group.last_hash, event, &group.chained);
      batch.Put(events(), EventKey(revision), group.chained.bytes);
      group.last_hash.swap(group.chained.hash);
    } else {
      batch.Put(events(), EventKey(revision), event.SerializeAsString());
    }
    group.user_events.push_back(UserEventKey(update.user_id, revision));
    result.replies.push_back(update.reply ? update.reply(subject, event) : std::string());
    if (!key.request_id.empty()) {
      RequestRecord record{stamp_nanos, key.fingerprint, {revision}, result.replies.back()};
      batch.Put(requests(), key.request_id, EncodeRequestRecord(record));
      batch.Put(request_times(), RequestTimeKey(stamp_nanos, key.request_id), rocksdb::Slice());
      group.SetRequest(key.request_id, std::move(record));
    }
    result.revisions.push_back(revision);
    result.replayed.push_back(false);
    if (update.return_subject) {
      result.subjects.push_back(subject);
    } else {
      result.subjects.emplace_back();
    }
    group.SetSubject(update.user_id, &subject);
    applied = true;
  }
  if (!applied) {
    // Every update repeated an earlier request: nothing to write.
    result.outcome = CommitResult::Outcome::kReplayed;
    return abandon(result);
  }
  if (!request.request_id.empty()) {
    RequestRecord record{stamp_nanos, request.fingerprint, result.revisions, {}};
    batch.Put(requests(), request.request_id, EncodeRequestRecord(record));
    batch.Put(request_times(), RequestTimeKey(stamp_nanos, request.request_id), rocksdb::Slice());
    group.SetRequest(request.request_id, std::move(record));
  }
  batch.PopSavePoint().PermitUncheckedError();
  group.last_time = stamp;
  commit.wrote = true;
  commit.result = std::move(result);
}

absl::StatusOr<int64_t> RocksDbStore::OldestRevision() {
  absl::ReaderMutexLock lock(&open_mu_);
  if (db_ == nullptr) return absl::FailedPreconditionError("store is closed");
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), events()));
  it->SeekToFirst();
  if (!it->Valid()) {
    absl::Status s = FromRocks(it->status(), "reading events");
    if (!s.ok()) return s;
    return 0;
  }
  int64_t revision = 0;
  if (!DecodeRevision(absl::string_view(it->key().data(), it->key().size()), &revision)) {
    return absl::DataLossError("event key has a bad encoding");
  }
  return revision;
}

absl::StatusOr<ChainReport> RocksDbStore::VerifyChain(int64_t start, int64_t end) {
  absl::ReaderMutexLock lock(&open_mu_);
  if (db_ == nullptr) return absl::FailedPreconditionError("store is closed");
  if (end <= 0) end = revision_.load(std::memory_order_acquire);
  ChainReport report;
  auto broken = [&report](int64_t revision, std::string detail) {
    report.ok = false;
    report.first_broken_revision = revision;
    report.detail = std::move(detail);
    return report;
  };
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), events()));
  it->Seek(EventKey(std::max<int64_t>(start, 1)));
  int64_t expected = -1;  // the next revision the chain must have
  std::string previous_hash;
  for (; it->Valid(); it->Next()) {
    v1::ChangeEvent event;
    int64_t key_revision = 0;
    DecodeRevision(absl::string_view(it->key().data(), it->key().size()), &key_revision);
    if (key_revision > end) break;
    if (!event.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return broken(key_revision, "the stored event does not parse");
    }
    if (event.revision() != key_revision) {
      return broken(key_revision, absl::StrCat("the event under revision ", key_revision,
                                               " says revision ", event.revision()));
    }
    if (expected < 0) {
      // The first event checked: the chain starts from its stored link,
      // which must be zeros for revision 1.
      if (key_revision == 1 && event.previous_hash() != std::string(kHashBytes, '\0')) {
        return broken(1, "the first event does not start the chain from zero");
      }
      previous_hash = event.previous_hash();
    } else if (key_revision != expected) {
      return broken(expected, absl::StrCat("revision ", expected, " is missing"));
    } else if (event.previous_hash() != previous_hash) {
      return broken(key_revision, "previous_hash does not match the previous event's hash");
    }
    if (EventHash(previous_hash, event) != event.hash()) {
      return broken(key_revision, "the event's hash does not match its contents");
    }
    previous_hash = event.hash();
    expected = key_revision + 1;
    ++report.verified;
  }
  absl::Status s = FromRocks(it->status(), "reading events");
  if (!s.ok()) return s;
  if (expected >= 0 && expected <= end) {
    return broken(expected, absl::StrCat("revision ", expected, " is missing"));
  }
  return report;
}

absl::StatusOr<int64_t> RocksDbStore::PurgeRequestIds(absl::Time before) {
  // In chunks, each under the write lock only while its ids are checked
  // and deleted: a purge of a day of ids holds up no commit for more than
  // one chunk (docs/reliability.md, "The request-id purge").
  constexpr size_t kChunk = 1000;
  const std::string limit = EncodeRevision(absl::ToUnixNanos(before));
  std::string from;  // the first request_times key of the next chunk
  int64_t purged = 0;
  while (true) {
    // The chunk's keys, read without the write lock.
    std::vector<std::string> keys;
    {
      absl::ReaderMutexLock open_lock(&open_mu_);
      if (db_ == nullptr) return absl::FailedPreconditionError("store is closed");
      std::unique_ptr<rocksdb::Iterator> it(
          db_->NewIterator(rocksdb::ReadOptions(), request_times()));
      for (from.empty() ? it->SeekToFirst() : it->Seek(from);
           it->Valid() && it->key().compare(limit) < 0 && keys.size() < kChunk; it->Next()) {
        keys.push_back(it->key().ToString());
      }
      if (absl::Status s = FromRocks(it->status(), "reading request ids"); !s.ok()) return s;
    }
    if (keys.empty()) return purged;
    from = keys.back() + '\0';
    // Checked and deleted under the write lock, with no write in flight:
    // an expired id may be in use again by a commit, whose record must stay.
    {
      absl::MutexLock write_lock(&write_mu_);
      if (absl::Status refused = RecoverWrites(); !refused.ok()) return refused;
      AwaitNoWrite();
      absl::ReaderMutexLock open_lock(&open_mu_);
      if (db_ == nullptr) return absl::FailedPreconditionError("store is closed");
      std::vector<rocksdb::Slice> ids;
      ids.reserve(keys.size());
      for (const std::string& key : keys) ids.emplace_back(key.data() + 8, key.size() - 8);
      std::vector<rocksdb::PinnableSlice> values(ids.size());
      std::vector<rocksdb::Status> statuses(ids.size());
      db_->MultiGet(rocksdb::ReadOptions(), requests(), ids.size(), ids.data(), values.data(),
                    statuses.data());
      rocksdb::WriteBatch batch;
      for (size_t i = 0; i < keys.size(); ++i) {
        batch.Delete(request_times(), keys[i]);
        // Only if the record is this one: an expired id may have been reused.
        RequestRecord record;
        if (statuses[i].ok() &&
            DecodeRequestRecord(absl::string_view(values[i].data(), values[i].size()), &record) &&
            EncodeRevision(record.time_nanos) == absl::string_view(keys[i]).substr(0, 8)) {
          batch.Delete(requests(), ids[i]);
          ++purged;
        }
      }
      // Not synced: a purge lost in a crash is done again by the next one.
      absl::Status s =
          FromRocks(db_->Write(rocksdb::WriteOptions(), &batch), "purging request ids");
      if (!s.ok()) return s;
    }
    if (options_.on_purge_chunk) options_.on_purge_chunk(purged);
  }
}

absl::StatusOr<std::vector<std::string>> RocksDbStore::GetExclusions(absl::string_view user_id,
                                                                     absl::string_view content_id) {
  absl::ReaderMutexLock lock(&open_mu_);
  if (db_ == nullptr) return absl::FailedPreconditionError("store is closed");
  const std::string prefix = ExclusionPrefix(user_id, content_id);
  std::vector<std::string> purposes;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), exclusions()));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    purposes.emplace_back(it->key().data() + prefix.size(), it->key().size() - prefix.size());
  }
  absl::Status s = FromRocks(it->status(), "reading exclusions");
  if (!s.ok()) return s;
  return purposes;
}

absl::StatusOr<std::vector<v1::ChangeEvent>> RocksDbStore::ReadUserEvents(absl::string_view user_id,
                                                                          int64_t after_revision,
                                                                          size_t limit) {
  absl::ReaderMutexLock lock(&open_mu_);
  if (db_ == nullptr) return absl::FailedPreconditionError("store is closed");
  // The index gives the revisions; one MultiGet fetches the events. The
  // newest entries are in memory: copied first, so an entry that moves to
  // RocksDB meanwhile is found in one or the other (or both).
  const std::vector<std::shared_ptr<const HistoryRun>> tail = HistoryTail();
  after_revision = std::max<int64_t>(after_revision, 0);
  const std::string prefix = UserEventPrefix(user_id);
  std::vector<int64_t> revisions;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), user_events()));
  for (it->Seek(UserEventKey(user_id, after_revision + 1));
       it->Valid() && it->key().starts_with(prefix) && revisions.size() < limit; it->Next()) {
    int64_t revision = 0;
    if (!DecodeRevision(
            absl::string_view(it->key().data() + prefix.size(), it->key().size() - prefix.size()),
            &revision)) {
      return absl::DataLossError("user event index key has a bad encoding");
    }
    revisions.push_back(revision);
  }
  absl::Status s = FromRocks(it->status(), "reading the user's event index");
  if (!s.ok()) return s;
  for (const auto& run : tail) run->CollectRevisions(prefix, &revisions);
  std::sort(revisions.begin(), revisions.end());
  revisions.erase(std::unique(revisions.begin(), revisions.end()), revisions.end());
  revisions.erase(revisions.begin(),
                  std::upper_bound(revisions.begin(), revisions.end(), after_revision));
  if (revisions.size() > limit) revisions.resize(limit);
  std::vector<std::string> keys;
  keys.reserve(revisions.size());
  for (int64_t revision : revisions) keys.push_back(EventKey(revision));
  std::vector<rocksdb::Slice> slices(keys.begin(), keys.end());
  std::vector<rocksdb::PinnableSlice> values(keys.size());
  std::vector<rocksdb::Status> statuses(keys.size());
  db_->MultiGet(rocksdb::ReadOptions(), events(), slices.size(), slices.data(), values.data(),
                statuses.data());
  std::vector<v1::ChangeEvent> out(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    s = FromRocks(statuses[i], "reading an indexed event");
    if (!s.ok()) return s;
    if (!out[i].ParseFromArray(values[i].data(), static_cast<int>(values[i].size()))) {
      return absl::DataLossError("event does not parse");
    }
  }
  return out;
}

absl::StatusOr<absl::Time> RocksDbStore::RecordPolicy(absl::Time now, const std::string& text) {
  absl::MutexLock write_lock(&write_mu_);
  if (absl::Status refused = RecoverWrites(); !refused.ok()) return refused;
  AwaitNoWrite();
  absl::ReaderMutexLock open_lock(&open_mu_);
  if (db_ == nullptr) return absl::FailedPreconditionError("store is closed");
  absl::ReleasableMutexLock flight_lock(&flight_mu_);
  // The time to stamp: `now`, or the latest stamped so far if later. Two
  // policies activated in the same nanosecond: the later one wins the key,
  // so step past the last one.
  absl::Time stamp = std::max(now, last_time_);
  if (stamp == last_time_) stamp += absl::Nanoseconds(1);
  const int64_t stamp_nanos = absl::ToUnixNanos(stamp);
  rocksdb::WriteBatch batch;
  batch.Put(policies(), PolicyKey(stamp_nanos), text);
  batch.Put(meta(), kMetaLastTime, EncodeRevision(stamp_nanos));
  rocksdb::WriteOptions options;
  options.sync = true;
  absl::Status s = FromRocks(db_->Write(options, &batch), "recording the policy");
  if (!s.ok()) {
    // Like a failed commit: the WAL can no longer be trusted.
    const bool newly_failed = MarkWriteFailed(s);
    flight_lock.Release();
    if (newly_failed && options_.on_write_state) options_.on_write_state(false, s);
    return absl::UnavailableError(
        absl::StrCat("the outcome of recording the policy is unknown: its synced write failed (",
                     s.message(), ")"));
  }
  last_time_ = stamp;
  return stamp;
}

absl::StatusOr<std::vector<std::string>> RocksDbStore::PurposesInUse(
    const std::vector<std::string>& purposes) {
  absl::ReaderMutexLock lock(&open_mu_);
  if (db_ == nullptr) return absl::FailedPreconditionError("store is closed");
  absl::flat_hash_set<std::string> wanted(purposes.begin(), purposes.end());
  absl::flat_hash_set<std::string> used;
  rocksdb::ReadOptions read;
  read.fill_cache = false;  // one pass over everything: keep the cache for checks
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read, subjects()));
  v1::Subject subject;
  for (it->SeekToFirst(); it->Valid() && used.size() < wanted.size(); it->Next()) {
    if (!subject.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return absl::DataLossError("a subject record does not parse");
    }
    for (const v1::Preference& p : subject.preferences()) {
      if (wanted.contains(p.purpose())) used.insert(p.purpose());
    }
  }
  if (absl::Status s = FromRocks(it->status(), "reading subjects"); !s.ok()) return s;
  // Exclusion keys end with the purpose, after the second 0 byte.
  it.reset(db_->NewIterator(read, exclusions()));
  for (it->SeekToFirst(); it->Valid() && used.size() < wanted.size(); it->Next()) {
    const absl::string_view key(it->key().data(), it->key().size());
    const size_t first = key.find('\0');
    const size_t second = first == absl::string_view::npos ? first : key.find('\0', first + 1);
    if (second == absl::string_view::npos) {
      return absl::DataLossError("an exclusion key has a bad encoding");
    }
    const absl::string_view purpose = key.substr(second + 1);
    if (wanted.contains(purpose)) used.insert(std::string(purpose));
  }
  if (absl::Status s = FromRocks(it->status(), "reading exclusions"); !s.ok()) return s;
  std::vector<std::string> out;
  for (const std::string& p : purposes) {
    if (used.contains(p)) out.push_back(p);
  }
  return out;
}

absl::StatusOr<std::vector<ConsentStore::PolicyRecord>> RocksDbStore::ListPolicies() {
  absl::ReaderMutexLock lock(&open_mu_);
  if (db_ == nullptr) return absl::FailedPreconditionError("store is closed");
  std::vector<PolicyRecord> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), policies()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    int64_t nanos = 0;
    if (!DecodeRevision(absl::string_view(it->key().data(), it->key().size()), &nanos)) {
      return absl::DataLossError("policy key has a bad encoding");
    }
    out.push_back({absl::FromUnixNanos(nanos), it->value().ToString()});
  }
  absl::Status s = FromRocks(it->status(), "reading policies");
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<v1::Subject> RocksDbStore::GetSubject(absl::string_view user_id) {
  absl::ReaderMutexLock lock(&open_mu_);
  if (db_ == nullptr) return absl::FailedPreconditionError("store is closed");
  bool exists = false;
  v1::Subject subject;
  absl::Status s = ReadSubject(user_id, &exists, &subject);
  if (!s.ok()) return s;
  if (!exists) return absl::NotFoundError("no record for this user");
  return subject;
}

absl::Status RocksDbStore::GetSubjects(absl::Span<const absl::string_view> user_ids,
                                       SubjectViewArena* arena,
                                       std::vector<const SubjectView*>* out) {
  absl::ReaderMutexLock lock(&open_mu_);
  if (db_ == nullptr) return absl::FailedPreconditionError("store is closed");
  const size_t n = user_ids.size();
  if (index_ != nullptr && index_->ready()) return index_->DecodeMany(user_ids, arena, out);
  std::vector<rocksdb::Slice> keys;
  keys.reserve(n);
  for (absl::string_view id : user_ids) keys.emplace_back(id.data(), id.size());
  std::vector<rocksdb::PinnableSlice> values(n);
  std::vector<rocksdb::Status> statuses(n);
  db_->MultiGet(rocksdb::ReadOptions(), subjects(), n, keys.data(), values.data(), statuses.data());
  out->assign(n, nullptr);
  for (size_t i = 0; i < n; ++i) {
    if (statuses[i].IsNotFound()) continue;
    absl::Status s = FromRocks(statuses[i], "reading subjects");
    if (!s.ok()) return s;
    const SubjectView* subject = arena->Decode({values[i].data(), values[i].size()});
    if (subject == nullptr) return absl::DataLossError("subject record does not parse");
    (*out)[i] = subject;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::ChangeEvent>> RocksDbStore::ReadEvents(int64_t start_revision,
                                                                      size_t limit) {
  absl::ReaderMutexLock lock(&open_mu_);
  if (db_ == nullptr) return absl::FailedPreconditionError("store is closed");
  std::vector<v1::ChangeEvent> events_out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), events()));
  for (it->Seek(EventKey(std::max<int64_t>(start_revision, 0)));
       it->Valid() && events_out.size() < limit; it->Next()) {
    v1::ChangeEvent& event = events_out.emplace_back();
    if (!event.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return absl::DataLossError(
          absl::StrCat("event at key ", it->key().ToString(/*hex=*/true), " does not parse"));
    }
  }
  absl::Status s = FromRocks(it->status(), "reading events");
  if (!s.ok()) return s;
  return events_out;
}

absl::StatusOr<StoreStats> RocksDbStore::Stats() {
  absl::ReaderMutexLock open_lock(&open_mu_);
  StoreStats stats;
  {
    absl::MutexLock flight_lock(&flight_mu_);
    stats.writes_refused = write_failure_.ok() ? 0 : 1;
    stats.write_failures = write_failures_;
    stats.reopens = reopens_;
  }
  if (db_ == nullptr) {
    // Not even a read-only reopen succeeded: the write state is all there
    // is to report (and the alert on it must still see it).
    if (stats.writes_refused == 1) return stats;
    return absl::FailedPreconditionError("store is closed");
  }
  if (statistics_ != nullptr) {
    stats.block_cache_hits =
        static_cast<int64_t>(statistics_->getTickerCount(rocksdb::BLOCK_CACHE_HIT));
    stats.block_cache_misses =
        static_cast<int64_t>(statistics_->getTickerCount(rocksdb::BLOCK_CACHE_MISS));
  }
  // Sums an integer property over all column families.
  auto sum = [this](const std::string& property) ABSL_SHARED_LOCKS_REQUIRED(open_mu_) {
    int64_t total = 0;
    for (rocksdb::ColumnFamilyHandle* handle : handles_) {
      uint64_t value = 0;
      if (db_->GetIntProperty(handle, property, &value)) total += static_cast<int64_t>(value);
    }
    return total;
  };
  stats.write_stall_micros = absl::ToInt64Microseconds(stalls_->Total());
  stats.live_sst_bytes = sum(rocksdb::DB::Properties::kLiveSstFilesSize);
  stats.memtable_bytes = sum(rocksdb::DB::Properties::kCurSizeAllMemTables);
  stats.pending_compaction_bytes = sum(rocksdb::DB::Properties::kEstimatePendingCompactionBytes);
  uint64_t value = 0;
  if (db_->GetIntProperty(rocksdb::DB::Properties::kIsWriteStopped, &value)) {
    stats.write_stopped = static_cast<int64_t>(value);
  }
  if (db_->GetIntProperty(subjects(), rocksdb::DB::Properties::kEstimateNumKeys, &value)) {
    stats.estimated_subjects = static_cast<int64_t>(value);
  }
  if (index_ != nullptr) {
    stats.index_ready = index_->ready() ? 1 : 0;
    index_->Measure(&stats.index_subjects, &stats.index_bytes);
  }
  {
    absl::MutexLock history_lock(&history_mu_);
    stats.history_pending = static_cast<int64_t>(history_tail_keys_);
    stats.history_runs = static_cast<int64_t>(history_tail_.size());
    stats.history_write_failures = history_failures_;
  }
  return stats;
}

absl::StatusOr<int64_t> RocksDbStore::Checkpoint(const std::string& directory) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path path(directory);
  if (fs::exists(path, ec)) {
    return absl::AlreadyExistsError(absl::StrCat(directory, " already exists"));
  }
  const fs::path parent = path.parent_path();
  if (!parent.empty() && !fs::is_directory(parent, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("parent directory ", parent.string(), " does not exist"));
  }
  {
    // Most of the memtables go to SST files first, outside the write lock,
    // so commits wait only for the links and a short WAL copy below.
    absl::ReaderMutexLock open_lock(&open_mu_);
    if (db_ == nullptr) return absl::FailedPreconditionError("store is closed");
    rocksdb::Status s = db_->Flush(rocksdb::FlushOptions(), handles_);
    if (!s.ok()) return FromRocks(s, "flushing before the checkpoint");
  }
  absl::MutexLock write_lock(&write_mu_);  // no commit runs until the copy is taken
  AwaitNoWrite();
  absl::ReaderMutexLock open_lock(&open_mu_);
  if (db_ == nullptr) return absl::FailedPreconditionError("store is closed");
  rocksdb::Checkpoint* raw = nullptr;
  rocksdb::Status s = rocksdb::Checkpoint::Create(db_.get(), &raw);
  if (!s.ok()) return FromRocks(s, "creating a checkpoint");
  std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  // No flush here: what the memtables hold is in the synced WAL, which the
  // checkpoint copies, and the copy replays it when opened.
  s = checkpoint->CreateCheckpoint(directory, std::numeric_limits<uint64_t>::max());
  if (!s.ok()) return FromRocks(s, absl::StrCat("writing the checkpoint to ", directory));
  // Owner only, like the data directory (RocksDB creates it with the umask).
  std::filesystem::permissions(directory, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::replace, ec);
  return revision_.load(std::memory_order_acquire);
}

void RocksDbStore::LoadIndex() {
  // Holds open_mu_ shared for the whole load: Close and Reopen, its only
  // exclusive holders, stop and join this thread before they ask for it,
  // so no reader ever waits behind the load.
  absl::ReaderMutexLock open_lock(&open_mu_);
  const absl::Time start = absl::Now();
  rocksdb::ReadOptions read;
  read.fill_cache = false;  // one pass over everything: keep the cache for checks
  read.readahead_size = 2 << 20;
  // An iterator reads one snapshot. Writes after it put their own views,
  // which PutIfAbsent leaves alone; writes before it are in it.
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read, subjects()));
  if (options_.on_index_snapshot) options_.on_index_snapshot();
  int64_t loaded = 0;
  absl::Status status;
  v1::Subject subject;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if (stop_loading_.load(std::memory_order_relaxed)) {
      status = absl::CancelledError(
          "the subject index load was stopped: the store is closing or reopening its database");
      break;
    }
    if (!subject.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      status = absl::DataLossError("a subject record does not parse");
      break;
    }
    index_->PutIfAbsent(absl::string_view(it->key().data(), it->key().size()),
                        DecisionView(subject));
    ++loaded;
  }
  if (status.ok()) status = FromRocks(it->status(), "loading the subject index");
  it.reset();
  // On failure reads stay on RocksDB: slower, never wrong.
  if (status.ok()) index_->MarkReady();
  if (options_.on_index_loaded) options_.on_index_loaded(status, loaded, absl::Now() - start);
}

absl::Status RocksDbStore::Close() {
  // Commits queued before Close are written; later ones are refused.
  StopPipeline();
  {
    absl::MutexLock lock(&loader_mu_);
    stop_loading_.store(true, std::memory_order_relaxed);
    if (loader_.joinable()) loader_.join();
  }
  absl::MutexLock write_lock(&write_mu_);
  AwaitNoWrite();
  absl::MutexLock lock(&open_mu_);
  if (db_ == nullptr) return absl::OkStatus();
  // The history index's entries still in memory, written now so that the
  // next start has no events to read for them. Should this fail, that
  // start rebuilds them from the events: nothing is lost.
  const absl::Status history_written = WriteHistory(HistoryTail());
  // Flushing the memtables leaves no WAL to replay: the next start is
  // quick (seconds saved after a bulk load). After a crash the synced WAL
  // is replayed instead, so nothing acknowledged is lost either way.
  rocksdb::Status s = db_->Flush(rocksdb::FlushOptions(), handles_);
  if (s.ok()) s = db_->FlushWAL(/*sync=*/true);
  for (rocksdb::ColumnFamilyHandle* handle : handles_) {
    rocksdb::Status ds = db_->DestroyColumnFamilyHandle(handle);
    if (s.ok()) s = ds;
  }
  handles_.clear();
  rocksdb::Status cs = db_->Close();
  if (s.ok()) s = cs;
  db_.reset();
  if (s.ok() && !history_written.ok()) return history_written;
  return FromRocks(s, "closing store");
}

absl::Status RocksDbStore::LoadHistoryTail(int64_t indexed) {
  std::error_code ignored;  // a bulk write cut short by a crash
  std::filesystem::remove(std::filesystem::path(options_.data_dir) / kHistoryFile, ignored);
  std::vector<std::string> keys;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), events()));
  int64_t last_revision = indexed;
  for (it->Seek(EventKey(indexed + 1)); it->Valid(); it->Next()) {
    v1::ChangeEvent event;
    if (!event.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return absl::DataLossError(
          absl::StrCat("the event of revision ", indexed + 1 + keys.size(), " does not parse"));
    }
    keys.push_back(UserEventKey(event.user_id(), event.revision()));
    last_revision = event.revision();
  }
  absl::Status s = FromRocks(it->status(), "reading events for the history index");
  if (!s.ok() || keys.empty()) return s;
  std::sort(keys.begin(), keys.end());
  AddHistory(std::make_shared<HistoryRun>(keys, last_revision));
  return absl::OkStatus();
}

std::vector<rocksdb::ColumnFamilyDescriptor> ColumnFamilies(const StoreOptions& store_options) {
  // Point reads (subjects, exclusions, request ids): what RocksDB's
  // OptimizeForPointLookup sets, spelled out (it replaces the whole table
  // factory), with one shared block cache: a bloom filter per SST, a hash
  // index inside each data block, whole-key bloom filters in memtables.
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(store_options.block_cache_bytes);
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  table.data_block_index_type = rocksdb::BlockBasedTableOptions::kDataBlockBinaryAndHash;
  table.data_block_hash_table_util_ratio = 0.75;
  table.block_restart_interval = store_options.block_restart_interval;
  rocksdb::ColumnFamilyOptions point_reads;
  point_reads.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  point_reads.memtable_prefix_bloom_size_ratio = 0.02;
  point_reads.memtable_whole_key_filtering = true;
  rocksdb::ColumnFamilyOptions scans;  // events are read in revision order

  // A group commit puts each column family's keys in key order (events in
  // revision order), and with an insert hint each memtable insert starts
  // from where the previous one ended instead of from the top of the skip
  // list. One hint per memtable: every key has the same empty "prefix".
  std::shared_ptr<const rocksdb::SliceTransform> one_hint(rocksdb::NewFixedPrefixTransform(0));
  point_reads.memtable_insert_with_hint_prefix_extractor = one_hint;
  scans.memtable_insert_with_hint_prefix_extractor = one_hint;
  // The history index is written in bulk, a file of about
  // history_index_batch keys at a time straight into level 0: merging
  // each four into level 1 (the default) would rewrite level 1 four times
  // as often as memtable flushes of 64 MiB do. Sixteen files wait instead,
  // and the stall triggers, which hold up every write, stay well above.
  rocksdb::ColumnFamilyOptions history = scans;
  history.level0_file_num_compaction_trigger = 16;
  history.level0_slowdown_writes_trigger = 40;
  history.level0_stop_writes_trigger = 64;
  return {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
      {kSubjectsCf, point_reads},
      {kEventsCf, scans},
      {kUserEventsCf, history},
      {kMetaCf, rocksdb::ColumnFamilyOptions()},
      {kExclusionsCf, point_reads},
      {kPoliciesCf, rocksdb::ColumnFamilyOptions()},
      {kRequestsCf, point_reads},
      {kRequestTimesCf, rocksdb::ColumnFamilyOptions()},
  };
}

}  // namespace

absl::Status CreatePrivateDirectory(const std::string& directory) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(directory, ec)) {
    if (fs::is_directory(directory, ec)) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(directory, " exists and is not a directory"));
  }
  const fs::path parent = fs::path(directory).parent_path();
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (!ec && !fs::create_directory(directory, ec) && !ec) return absl::OkStatus();  // raced
  if (!ec) {
    fs::permissions(directory, fs::perms::owner_all, fs::perm_options::replace, ec);
  }
  if (ec) return absl::FailedPreconditionError(ec.message());
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ConsentStore>> ConsentStore::Open(const StoreOptions& options) {
  if (absl::Status s = CheckDataDir(options.data_dir); !s.ok()) return s;

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.paranoid_checks = true;
  db_options.max_background_jobs = 2;
  db_options.keep_log_file_num = 5;
  // Not RocksDB's own LOG writer: it aborts when the disk fills up.
  db_options.info_log = NewRocksDbLog(options.data_dir);
  auto stalls = std::make_shared<StallListener>();
  db_options.listeners.push_back(stalls);
  if (options.collect_statistics) {
    db_options.statistics = rocksdb::CreateDBStatistics();
    // Tickers only: histograms and timers cost more than they tell here.
    db_options.statistics->set_stats_level(rocksdb::StatsLevel::kExceptHistogramOrTimers);
  }

  std::unique_ptr<rocksdb::Env> env;
  if (options.file_system != nullptr) {
    env = rocksdb::NewCompositeEnv(options.file_system);
    db_options.env = env.get();
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  std::unique_ptr<rocksdb::DB> db;
  const std::string context = absl::StrCat("opening data directory ", options.data_dir);
  if (absl::Status s = OpenDatabase(options, db_options, /*read_only=*/false, &db, &handles);
      !s.ok()) {
    return s;
  }
  rocksdb::ColumnFamilyHandle* meta = handles[4];

  // A new database gets its format version; an old one must match it.
  std::string value;
  rocksdb::Status rs = db->Get(rocksdb::ReadOptions(), meta, kMetaFormatVersion, &value);
  if (rs.IsNotFound()) {
    rocksdb::WriteOptions wo;
    wo.sync = true;
    rs = db->Put(wo, meta, kMetaFormatVersion, kFormatVersion);
  } else if (rs.ok() && value != kFormatVersion) {
    CloseDatabase(&db, &handles);
    return absl::FailedPreconditionError(absl::StrCat(context, ": storage format version ", value,
                                                      " is not supported (want ", kFormatVersion,
                                                      ")"));
  }
  absl::StatusOr<DiskState> disk = absl::InternalError("not read");
  if (rs.ok()) disk = ReadDiskState(db.get(), meta, handles[2]);
  if (!disk.ok()) {
    CloseDatabase(&db, &handles);
    return absl::Status(disk.status().code(), absl::StrCat(context, ": ", disk.status().message()));
  }
  int64_t history_indexed = -1;
  rs = db->Get(rocksdb::ReadOptions(), meta, kMetaHistoryIndexed, &value);
  if (rs.IsNotFound()) {
    // New, or written before the history index was written in bulk (every
    // event has its entry). Recorded now: from here on the entries of new
    // events are written later.
    history_indexed = disk->revision;
    rocksdb::WriteOptions wo;
    wo.sync = true;
    rs = db->Put(wo, meta, kMetaHistoryIndexed, EncodeRevision(disk->revision));
  } else if (rs.ok() && !DecodeRevision(value, &history_indexed)) {
    rs = rocksdb::Status::Corruption("meta history_indexed has a bad encoding");
  }
  if (!rs.ok()) {
    CloseDatabase(&db, &handles);
    return FromRocks(rs, context);
  }
  auto store = std::make_unique<RocksDbStore>(std::move(db), std::move(handles), disk->revision,
                                              disk->last_time);
  {
    absl::MutexLock lock(&store->flight_mu_);
    store->last_hash_ = std::move(disk->last_hash);
  }
  store->env_ = std::move(env);
  store->db_options_ = db_options;
  store->options_ = options;
  store->statistics_ = db_options.statistics;
  store->stalls_ = std::move(stalls);
  absl::Status loaded;
  {
    absl::ReaderMutexLock open_lock(&store->open_mu_);
    loaded = store->LoadHistoryTail(history_indexed);
  }
  if (!loaded.ok()) {
    return absl::Status(loaded.code(), absl::StrCat(context, ": ", loaded.message()));
  }
  store->StartPipeline();
  if (options.subject_index) {
    uint64_t expected = 0;
    {
      absl::ReaderMutexLock open_lock(&store->open_mu_);
      store->db_->GetIntProperty(store->subjects(), rocksdb::DB::Properties::kEstimateNumKeys,
                                 &expected);
    }
    store->index_ = std::make_unique<SubjectIndex>(expected);
    RocksDbStore* loading = store.get();
    absl::MutexLock lock(&store->loader_mu_);
    store->loader_ = std::thread([loading] { loading->LoadIndex(); });
  }
  return std::unique_ptr<ConsentStore>(std::move(store));
}

}  // namespace consent::storage
