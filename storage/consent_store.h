// The registry's durable state behind a narrow interface. The RocksDB
// implementation (rocksdb_store.h) is internal to storage/: nothing outside
// it sees RocksDB.
//
// Layout on disk: docs/storage.md.
#ifndef CONSENT_STORAGE_CONSENT_STORE_H_
#define CONSENT_STORAGE_CONSENT_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/optional.h"
#include "absl/types/span.h"
#include "consent/v1/types.pb.h"
#include "core/subject_view.h"

namespace rocksdb {
class FileSystem;
}  // namespace rocksdb

namespace consent::storage {

// Tuning of the RocksDB engine underneath: what a store on another engine
// would not have. The rest of StoreOptions is engine-neutral.
struct RocksDbTuning {
  // Size of the shared block cache for point reads, in bytes.
  size_t block_cache_bytes = 256 << 20;
  // Keys between restart points in the data blocks of point-read column
  // families: a lookup scans at most this many keys after the block's hash
  // index. Applies to files written from now on.
  int block_restart_interval = 4;
  // Keep RocksDB's ticker statistics, for the block cache hits and misses
  // of StoreStats::rocksdb. Off by default: they cost about 3% of
  // single-check throughput (docs/operations.md, "Overhead").
  bool collect_statistics = false;
  // The file system RocksDB works through; null: the local one. Tests only,
  // to inject faults (tests/storage/fault_file_system.h). Must outlive the store.
  std::shared_ptr<rocksdb::FileSystem> file_system;
};

struct StoreOptions {
  // Directory holding the database; created (with parents) if missing.
  std::string data_dir;
  RocksDbTuning rocksdb;
  // Keep the decision view of every subject (GetSubjects) in memory and
  // serve GetSubjects from it instead of RocksDB. It is loaded in the
  // background after Open returns (reads use RocksDB until it is complete)
  // and updated by each commit after its synced write, before anyone is
  // acknowledged. RocksDB stays the source of truth. Off here, so tools
  // that only write (consent-bench preload) do not pay for it; consentd
  // turns it on (docs/performance.md).
  bool subject_index = false;
  // Called once, from the loading thread, when the subject index is loaded
  // (status OK: reads use it from now on) or has failed or been cancelled
  // by Close (reads stay on RocksDB); with the subjects loaded and how
  // long it took. Must be thread safe; may be empty.
  std::function<void(const absl::Status&, int64_t subjects, absl::Duration)> on_index_loaded;
  // Called from the loading thread once the load's snapshot is taken,
  // before anything is added; tests use it to write during a load.
  std::function<void()> on_index_snapshot;
  // How long a request_id is remembered for idempotent replays.
  absl::Duration request_id_retention = absl::Hours(24);
  // Chain each event's SHA-256 to the previous one. Only benchmarks turn
  // this off, to measure what the chain costs; consentd always chains.
  bool hash_chain = true;
  // The user history index (user_events) of the newest events is kept in
  // memory and written to RocksDB in bulk, as one sorted file, once it has
  // this many entries (and by Close). After a crash it is rebuilt from the
  // events at the next Open, which reads at most about this many events.
  // Inserting each event's entry into RocksDB's memtable at commit time
  // cost about 3 µs a preference, a third of the synced write stage
  // (docs/performance.md).
  size_t history_index_batch = 250'000;
  // Called from the history thread after each bulk write of the history
  // index by that thread, with the entries it held: OK, or why it failed
  // (the entries then stay in memory, still read, and the write is tried
  // again after another batch). Must be thread safe; may be empty.
  std::function<void(const absl::Status&, int64_t entries)> on_history_written;
  // Called by the committing thread after each synced write of a group
  // commit, with how long the write (and its WAL sync) took. Must be thread
  // safe and quick; may be empty.
  std::function<void(absl::Duration)> on_synced_write;
  // After a failed synced write (the WAL's append or sync) nothing more is
  // acknowledged until the store has closed and reopened its database: a
  // write that arrives then tries the reopen, at most once per this
  // interval, and is refused (kUnavailable) while it fails. Reads go on
  // meanwhile (docs/reliability.md).
  absl::Duration reopen_interval = absl::Seconds(1);
  // Called when the store starts refusing writes after a failed write
  // (writable false, with the failure) and when it accepts them again
  // after a reopen (true, OK). From the store's commit threads; must be
  // thread safe and quick; may be empty.
  std::function<void(bool writable, const absl::Status& cause)> on_write_state;
  // Commits waiting to be prepared, at most; past it CommitAsync answers
  // kResourceExhausted at once (the caller retries later) instead of
  // queueing without bound. Each waiting commit holds its request.
  size_t max_queued_commits = 10'000;
  // Called by PurgeRequestIds after each chunk of ids it deleted, with the
  // number purged so far, holding no lock of the store's (tests commit
  // from it). May be empty.
  std::function<void(int64_t purged)> on_purge_chunk;
};

// The RocksDB engine's own figures (the consent_rocksdb_* metrics). -1:
// not available (block cache figures need RocksDbTuning::collect_statistics).
struct RocksDbStats {
  int64_t block_cache_hits = -1;
  int64_t block_cache_misses = -1;
  // Time RocksDB spent delaying or stopping writes (any column family), in
  // microseconds, since the store opened.
  int64_t write_stall_micros = 0;
  // 1 while RocksDB stops writes (too many L0 files or pending compaction).
  int64_t write_stopped = 0;
  // Bytes of live SST files, all column families.
  int64_t live_sst_bytes = 0;
  // Bytes of all memtables, all column families.
  int64_t memtable_bytes = 0;
  // Bytes compaction estimates it must rewrite, all column families.
  int64_t pending_compaction_bytes = 0;
};

// Storage health, read on demand (a metrics scrape). -1: not available.
struct StoreStats {
  RocksDbStats rocksdb;
  // RocksDB's estimate of the number of subject records.
  int64_t estimated_subjects = 0;
  // The subject index (StoreOptions::subject_index), -1 without one: 1 once
  // loaded and serving reads; subjects in it; bytes of its entries and
  // tables (not counting the allocator's own overhead).
  int64_t index_ready = -1;
  int64_t index_subjects = -1;
  int64_t index_bytes = -1;
  // The user history index's entries still in memory, waiting for a bulk
  // write, and the bulk writes that failed since the store opened; the
  // sorted runs they are in (a history read searches each; kept to a few
  // dozen by merging them in the background).
  int64_t history_pending = 0;
  int64_t history_write_failures = 0;
  int64_t history_runs = 0;
  // 1 while writes are refused after a failed synced write (until the
  // database is reopened); failed synced writes and reopens since the
  // store opened.
  int64_t writes_refused = 0;
  int64_t write_failures = 0;
  int64_t reopens = 0;
};

// Identifies a request for idempotency: a replay (same id, same
// fingerprint) within the retention window is answered from the first
// attempt and writes nothing; the same id with another fingerprint is a
// conflict.
struct RequestKey {
  // Empty: the request is not idempotent.
  std::string request_id;
  // A digest of the request's kind and payload.
  std::string fingerprint;
};

// What an update sees while it is applied, besides the subject record.
class UpdateContext {
 public:
  virtual ~UpdateContext() = default;
  // Whether a record was stored for the subject before this commit (or an
  // earlier update of this commit created one).
  virtual bool exists() const = 0;
  // The revision this update gets if the commit succeeds.
  virtual int64_t revision() const = 0;
  // The time the update is stamped with: the commit's `now`, but never
  // earlier than any time stamped before (see ConsentStore::Commit).
  virtual absl::Time time() const = 0;
  // Whether the subject excluded `content_id` for exactly `purpose`,
  // counting earlier updates of the same commit.
  virtual absl::StatusOr<bool> IsExcluded(absl::string_view content_id,
                                          absl::string_view purpose) = 0;
  // Records (or removes) an exclusion; written with the commit.
  virtual void SetExcluded(absl::string_view content_id, absl::string_view purpose,
                           bool excluded) = 0;
  // Makes the update a no-op: whatever `apply` changed is dropped, it gets
  // no revision and no event (CommitResult::revisions has 0 for it), and
  // the commit goes on. For an import's record that the subject's state
  // refuses (a deleted subject), where the other records must still apply.
  // Call it before SetExcluded: exclusions are not taken back.
  virtual void Skip() = 0;
};

// One change to one subject, applied inside a Commit under the store's write
// lock, so read-modify-write sequences need no other synchronisation.
struct SubjectUpdate {
  std::string user_id;
  // Optional request id of this update alone (a batch item's).
  RequestKey request;
  // Changes `subject` in place and describes the change in `event` (kind,
  // change payload, caller, request_id, source). When no record existed,
  // `subject` holds only user_id. The store then sets the subject's revision
  // and timestamps and the event's revision, event_time and user_id.
  // Returning an error aborts the whole Commit, and nothing is written.
  std::function<absl::Status(UpdateContext& context, v1::Subject& subject, v1::ChangeEvent& event)>
      apply;
  // Whether CommitResult::subjects gets a copy of the subject as written;
  // false leaves that entry empty (a bulk import needs only revisions, a
  // preference write only its reply).
  bool return_subject = true;
  // What the update answers besides its revision, in CommitResult::replies.
  // Called once the update has applied, on the store's preparing thread,
  // with the subject as written and its event (revision and times set).
  // With a request id the bytes are also kept with it, so a replay is
  // answered without reading anything. May be empty (replays then get the
  // revision only).
  std::function<std::string(const v1::Subject& subject, const v1::ChangeEvent& event)> reply;
};

struct CommitResult {
  enum class Outcome {
    // Written (updates marked `replayed` were not: they repeat earlier ones).
    kApplied,
    // The commit's request id was seen with the same fingerprint: nothing
    // was written; `revisions` are those of the first attempt.
    kReplayed,
    // A request id was seen with another fingerprint: nothing was written.
    kRequestIdConflict,
  };
  Outcome outcome = Outcome::kApplied;
  // For kRequestIdConflict: the update whose id conflicts, or -1 for the
  // commit's own id; and the revision the id was first used at.
  int conflict_index = -1;
  int64_t conflict_revision = 0;
  // Revision of each update, in order. Applied updates get consecutive new
  // revisions; a replayed update has its first attempt's revision; an
  // update that skipped itself (UpdateContext::Skip) has 0.
  std::vector<int64_t> revisions;
  // Per update: true when it repeated an earlier request and was skipped.
  std::vector<bool> replayed;
  // Each applied update's subject as written (empty for replayed ones and
  // for updates without return_subject).
  std::vector<v1::Subject> subjects;
  // Per update: what its `reply` gave, for an applied update and for a
  // replayed one alike (the first attempt's); empty without one.
  std::vector<std::string> replies;
};

// A step of a bulk import (ConsentStore::ImportAsync): its records through
// `offset` are the commit's updates.
struct ImportStep {
  // 1-128 bytes.
  std::string import_id;
  // Where the step ends in the import's source; > 0.
  int64_t offset = 0;
};

// The result of walking the audit hash chain.
struct ChainReport {
  bool ok = true;
  int64_t verified = 0;
  // When not ok: the first revision that does not verify, and why.
  int64_t first_broken_revision = 0;
  std::string detail;
};

// Thread safety: every method may be called concurrently. Commits are
// serialised; reads never wait for a commit to finish syncing.
class ConsentStore {
 public:
  // Opens (creating if missing) the database in options.data_dir. Errors:
  // kFailedPrecondition when another process holds the directory's lock or
  // the directory is not a database of this format; kDataLoss when files
  // are corrupt; kInternal for other I/O failures. Messages name the path.
  static absl::StatusOr<std::unique_ptr<ConsentStore>> Open(const StoreOptions& options);

  virtual ~ConsentStore() = default;

  // Applies `updates` atomically (one RocksDB write batch, WAL synced before
  // returning), giving each a new revision. Several updates may name the
  // same user; each sees the result of the ones before it. Fails with the
  // first update's error, or kInvalidArgument when `updates` is empty.
  //
  // Times are stamped from `now` but never go backwards: if the clock steps
  // back, the commit keeps the latest time stamped so far (by a commit or
  // RecordPolicy). So event times rise with revisions, and the state at a
  // time T is a prefix of the history.
  //
  // `request` (optional) makes the whole commit idempotent; updates may
  // carry their own ids too. See CommitResult for the outcomes.
  virtual absl::StatusOr<CommitResult> Commit(std::vector<SubjectUpdate> updates, absl::Time now,
                                              const RequestKey& request = {}) = 0;

  // Commit without waiting: returns at once, and `done` gets what Commit
  // would have returned once the commit is written (or has failed) — on a
  // thread of the store's, in commit order, one call at a time; or at once,
  // on the calling thread, for an empty commit, a closed store or a full
  // queue (kResourceExhausted: StoreOptions::max_queued_commits). `done`
  // answers the caller and returns: it must not block or commit, since the
  // results of later commits wait for it. The updates' `apply` runs on
  // another thread before `done`: what it refers to must live until then.
  virtual void CommitAsync(std::vector<SubjectUpdate> updates, absl::Time now, RequestKey request,
                           std::function<void(absl::StatusOr<CommitResult>)> done) = 0;

  // Commits `updates` (possibly none) as CommitAsync does and records, in
  // the same synced write, that import `step.import_id` is applied through
  // `step.offset` (ImportedThrough). Refused with kAborted, writing
  // nothing, when the import is already recorded at or past that offset: a
  // step is applied once, in order, however often it is sent.
  virtual void ImportAsync(std::vector<SubjectUpdate> updates, absl::Time now, ImportStep step,
                           std::function<void(absl::StatusOr<CommitResult>)> done) = 0;

  // The offset through which import `import_id` is applied (ImportAsync);
  // 0 when no step of it was.
  virtual absl::StatusOr<int64_t> ImportedThrough(absl::string_view import_id) = 0;

  // A command of the replicated command log (docs/replication.md): commits
  // as CommitAsync does and records, in the same synced write, that the
  // log is applied through `sequence` (AppliedSequence). Commands apply
  // each once, in order, with no gap: a `sequence` other than
  // AppliedSequence() + 1 is refused with kUnavailable, writing nothing.
  // An outcome that is the same on every replica is recorded too, with
  // nothing else: a replay, a request id conflict, an update's refusal
  // (IsRefusal), and no updates at all (a command refused before it
  // reached the store). Any other error (a storage failure) records
  // nothing, and the command is to be applied again.
  virtual void ApplyLoggedAsync(std::vector<SubjectUpdate> updates, absl::Time now,
                                RequestKey request, int64_t sequence,
                                std::function<void(absl::StatusOr<CommitResult>)> done) = 0;
  // A step of a bulk import that is a command of the replicated log: as
  // ImportAsync (the step's progress recorded with its updates, even
  // none; kAborted, recorded as applied, for a step at or below the
  // import's progress) with the log's `sequence` recorded as
  // ApplyLoggedAsync records it.
  virtual void ApplyLoggedImportAsync(std::vector<SubjectUpdate> updates, absl::Time now,
                                      ImportStep step, int64_t sequence,
                                      std::function<void(absl::StatusOr<CommitResult>)> done) = 0;
  // The sequence through which the replicated log is applied; 0 before
  // its first command.
  virtual absl::StatusOr<int64_t> AppliedSequence() = 0;

  // The subject's current record. kNotFound: nothing was ever recorded for
  // this user.
  virtual absl::StatusOr<v1::Subject> GetSubject(absl::string_view user_id) = 0;

  // Reads several subjects at once, for decisions: from the subject index
  // when there is one (StoreOptions::subject_index), else with one
  // MultiGet. `out` gets one entry per id, null where no record exists;
  // the views live on `arena` (not null) and as long as it. A user named
  // several times may get one view for all. kDataLoss when a record does
  // not parse; any other error fails the whole call.
  virtual absl::Status GetSubjects(absl::Span<const absl::string_view> user_ids,
                                   SubjectViewArena* arena,
                                   std::vector<const SubjectView*>* out) = 0;

  // The oldest revision still in history (0 when there is none).
  virtual absl::StatusOr<int64_t> OldestRevision() = 0;

  // Walks the hash chain over revisions [start, end] (0: from the oldest;
  // 0: to the current). Each event's hash must be the SHA-256 of the
  // previous event's hash and its own canonical bytes (audit_chain.h), and
  // revisions must be contiguous.
  virtual absl::StatusOr<ChainReport> VerifyChain(int64_t start, int64_t end) = 0;

  // Forgets request ids recorded before `before`, or before the latest time
  // stamped minus StoreOptions::request_id_retention if that is earlier (an
  // id no later commit can find live), so a purge changes no outcome.
  // Returns how many. Works
  // in chunks of 1,000 ids: commits wait for one chunk at most, never for
  // the whole purge.
  virtual absl::StatusOr<int64_t> PurgeRequestIds(absl::Time before) = 0;

  // The purposes for which the user excluded `content_id`; empty when none.
  virtual absl::StatusOr<std::vector<std::string>> GetExclusions(absl::string_view user_id,
                                                                 absl::string_view content_id) = 0;

  // The revision of the last acknowledged commit (0 for an empty store).
  // Every write up to it is visible to reads that start afterwards.
  virtual int64_t CurrentRevision() const = 0;

  // Change events with revision >= start_revision, oldest first, at most
  // `limit` of them.
  virtual absl::StatusOr<std::vector<v1::ChangeEvent>> ReadEvents(int64_t start_revision,
                                                                  size_t limit) = 0;

  // The user's change events with revision > after_revision, oldest first,
  // at most `limit` of them.
  virtual absl::StatusOr<std::vector<v1::ChangeEvent>> ReadUserEvents(absl::string_view user_id,
                                                                      int64_t after_revision,
                                                                      size_t limit) = 0;

  // Records that the policy `text` became active, synced. The activation
  // time is `now`, or the latest time stamped so far if that is later; it is
  // returned.
  virtual absl::StatusOr<absl::Time> RecordPolicy(absl::Time now, const std::string& text) = 0;

  struct PolicyRecord {
    absl::Time activate_time;
    std::string text;
  };
  // Which of `purposes` a stored preference or exclusion names (a scan of
  // every subject record and exclusion: for policy changes, not for the
  // hot path). In the order given.
  virtual absl::StatusOr<std::vector<std::string>> PurposesInUse(
      const std::vector<std::string>& purposes) = 0;

  // Every policy ever recorded, oldest first.
  virtual absl::StatusOr<std::vector<PolicyRecord>> ListPolicies() = 0;

  // Storage health figures; kFailedPrecondition once closed. While writes
  // are refused and not even a read-only reopen succeeded, only the write
  // state (writes_refused, write_failures, reopens) is filled in.
  virtual absl::StatusOr<StoreStats> Stats() = 0;

  // Writes a consistent copy of the database (a RocksDB checkpoint: hard
  // links where the file system allows, copies otherwise) into `directory`,
  // which must not exist; its parent must. Commits wait while the copy is
  // taken, so it holds exactly the writes up to the returned revision (and
  // the replicated command log up to the returned sequence). The copy is a
  // data directory: consentd --data_dir=<copy> serves it, and a replica
  // started on it applies the log from the command after that sequence.
  // kAlreadyExists if `directory` exists, kFailedPrecondition if its parent
  // does not or the store is closed.
  struct CheckpointPosition {
    int64_t revision = 0;
    int64_t applied_sequence = 0;  // AppliedSequence
  };
  virtual absl::StatusOr<CheckpointPosition> Checkpoint(const std::string& directory) = 0;

  // Reads every subject's record and exclusions as of one revision, from a
  // consistent view of the database taken while commits wait (briefly);
  // commits go on during the scan, which does not see them. Calls
  // `at_revision` once the view is taken, with its revision, then `visit`
  // for each subject in user-id order, with its exclusions as (content_id,
  // purpose) pairs. Stops at the first error `visit` returns and returns
  // it. Close waits for a scan to end: `visit` should fail when the caller
  // is going away. kDataLoss when a record does not parse.
  using ExclusionPairs = std::vector<std::pair<std::string, std::string>>;
  virtual absl::Status ScanSubjects(
      const std::function<void(int64_t revision)>& at_revision,
      const std::function<absl::Status(const v1::Subject& subject,
                                       const ExclusionPairs& exclusions)>& visit) = 0;

  // Flushes and closes; later calls fail with kFailedPrecondition.
  // Also done by the destructor.
  virtual absl::Status Close() = 0;
};

// Whether an error from an update's `apply` is a refusal by the write
// rules, which depends only on the update and the state it sees (kAborted,
// kFailedPrecondition, kAlreadyExists, kInvalidArgument, kNotFound,
// kOutOfRange), rather than a failure to read or write (any other code).
bool IsRefusal(const absl::Status& status);

// Creates `directory` (and missing parents) readable by its owner only
// (0700): the registry's data is personal data. An existing directory is
// left as it is; kFailedPrecondition when it cannot be made, or is a file.
absl::Status CreatePrivateDirectory(const std::string& directory);

// Removes all but the newest `keep` backups (Checkpoint directories) in
// `backup_dir`, newest by the time each was written (ties: by name).
// Only subdirectories holding a RocksDB database (a CURRENT file) count as
// backups; anything else in the directory is left alone. Returns the
// removed directories' paths, oldest first.
absl::StatusOr<std::vector<std::string>> PruneBackups(const std::string& backup_dir, size_t keep);

}  // namespace consent::storage

#endif  // CONSENT_STORAGE_CONSENT_STORE_H_
