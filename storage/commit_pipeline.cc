// The group commit: CommitPipeline's queue and threads, and RocksDbStore's
// stages (docs/storage.md, "Durability"). A group gathers what its commits
// write (records, events, exclusions, request ids) in one rocksdb
// WriteBatch, and reads its own writes, and those of the group being
// written under it, before the database.
#include "storage/commit_pipeline.h"

#include <pthread.h>

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "core/proto_time.h"
#include "google/protobuf/arena.h"
#include "rocksdb/write_batch.h"
#include "storage/audit_chain.h"
#include "storage/history_runs.h"
#include "storage/rocksdb_store.h"

namespace consent::storage {

CommitPipeline::CommitPipeline(Stages* stages, size_t max_queued)
    : stages_(stages), max_queued_(max_queued) {}

void CommitPipeline::Start() {
  absl::MutexLock lock(&threads_mu_);
  preparer_ = std::thread([this] { RunPreparer(); });
  writer_ = std::thread([this] { RunWriter(); });
  answerer_ = std::thread([this] { RunAnswerer(); });
  // Named for ps, top and perf.
  pthread_setname_np(preparer_.native_handle(), "consent-prepare");
  pthread_setname_np(writer_.native_handle(), "consent-write");
  pthread_setname_np(answerer_.native_handle(), "consent-answer");
}

void CommitPipeline::Submit(std::unique_ptr<PendingCommit> commit) {
  bool full = false;
  {
    absl::MutexLock lock(&queue_mu_);
    full = queue_.size() >= max_queued_;
    if (!stopping_ && !full) {
      queue_.push_back(std::move(commit));
      return;
    }
  }
  if (full) {
    commit->done(absl::ResourceExhaustedError(
        absl::StrCat("the commit queue is full (", max_queued_,
                     " writes waiting for the disk); nothing was written, retry later")));
    return;
  }
  commit->done(absl::FailedPreconditionError("store is closed"));
}

void CommitPipeline::Stop() {
  absl::MutexLock lock(&threads_mu_);
  {
    absl::MutexLock queue_lock(&queue_mu_);
    stopping_ = true;
  }
  // Each stage finishes what the one before it passed on, then stops.
  if (preparer_.joinable()) preparer_.join();
  if (writer_.joinable()) writer_.join();
  if (answerer_.joinable()) answerer_.join();
}

void CommitPipeline::RunPreparer() {
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
    // A group with nothing to write (null) goes through the writer too, so
    // callers are answered in commit order.
    std::shared_ptr<PreparedGroup> prepared = stages_->Prepare(commits);
    absl::MutexLock lock(&stages_mu_);
    to_write_.push_back(GroupToWrite{std::move(prepared), std::move(taken)});
  }
  absl::MutexLock lock(&stages_mu_);
  preparer_done_ = true;
}

void CommitPipeline::FreeWrittenGroups() {
  std::vector<std::shared_ptr<PreparedGroup>> written;
  absl::MutexLock lock(&stages_mu_);
  written.swap(written_);
  // `lock` is released first, then `written` freed.
}

void CommitPipeline::RunWriter() {
  while (true) {
    GroupToWrite next;
    {
      absl::MutexLock lock(&stages_mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(stages_mu_) {
        return preparer_done_ || !to_write_.empty();
      };
      stages_mu_.Await(absl::Condition(&ready));
      if (to_write_.empty()) break;
      next = std::move(to_write_.front());
      to_write_.pop_front();
    }
    if (next.group != nullptr) {
      std::vector<PendingCommit*> commits;
      for (const auto& c : next.commits) commits.push_back(c.get());
      stages_->Write(*next.group, commits);
    }
    absl::MutexLock lock(&stages_mu_);
    if (next.group != nullptr) written_.push_back(std::move(next.group));
    to_answer_.push_back(std::move(next.commits));
  }
  absl::MutexLock lock(&stages_mu_);
  writer_done_ = true;
}

void CommitPipeline::RunAnswerer() {
  while (true) {
    std::deque<Commits> batches;
    {
      absl::MutexLock lock(&stages_mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(stages_mu_) {
        return writer_done_ || !to_answer_.empty();
      };
      stages_mu_.Await(absl::Condition(&ready));
      if (to_answer_.empty()) break;
      batches.swap(to_answer_);
    }
    for (Commits& commits : batches) {
      for (auto& commit : commits) commit->done(std::move(commit->result));
    }
  }
}

struct RocksDbStore::Group final : PreparedGroup {
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
  absl::flat_hash_map<std::string, int64_t> progress;        // meta key -> position
  // The group that was being written when this one was prepared (null if
  // none): read after this group's own maps, before the database. Not
  // changed once it is being written.
  std::shared_ptr<const Group> base;
  rocksdb::WriteBatch batch;
  // For the subject index: each written subject's view, in view_bytes.
  // The user ids are the keys of `subjects`, which does not change once
  // the group is prepared.
  struct View {
    const std::string* user_id;
    size_t begin, end;
  };
  std::vector<View> views;
  std::string view_bytes;
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

  void Skip() override { skipped_ = true; }
  bool skipped() const { return skipped_; }

 private:
  RocksDbStore* store_;
  Group* group_;
  const std::string& user_id_;
  bool exists_;
  int64_t revision_;
  absl::Time time_;
  bool skipped_ = false;
};

absl::StatusOr<int64_t> RocksDbStore::FindProgress(const Group& group, const std::string& key) {
  if (const int64_t* position = Group::Find(group, &Group::progress, key)) return *position;
  return ReadProgress(key);
}

absl::StatusOr<int64_t> RocksDbStore::ReadProgress(const std::string& key) {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), meta(), key, &value);
  if (s.IsNotFound()) return 0;
  if (!s.ok()) return FromRocks(s, absl::StrCat("reading meta key \"", key, "\""));
  int64_t position = 0;
  if (!DecodeRevision(value, &position)) {
    return absl::DataLossError(absl::StrCat("meta key \"", key, "\" does not parse"));
  }
  return position;
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
  pipeline_.Submit(std::move(commit));
}

void RocksDbStore::ImportAsync(std::vector<SubjectUpdate> updates, absl::Time now, ImportStep step,
                               std::function<void(absl::StatusOr<CommitResult>)> done) {
  auto commit = std::make_unique<PendingCommit>();
  commit->updates = std::move(updates);
  commit->now = now;
  commit->import = std::move(step);
  commit->done = std::move(done);
  pipeline_.Submit(std::move(commit));
}

absl::StatusOr<int64_t> RocksDbStore::ImportedThrough(absl::string_view import_id) {
  absl::ReaderMutexLock lock(&open_mu_);
  if (db_ == nullptr) return absl::FailedPreconditionError("store is closed");
  return ReadProgress(absl::StrCat(kMetaImportPrefix, import_id));
}

void RocksDbStore::ApplyLoggedAsync(std::vector<SubjectUpdate> updates, absl::Time now,
                                    RequestKey request, int64_t sequence,
                                    std::function<void(absl::StatusOr<CommitResult>)> done) {
  SubmitLogged(std::move(updates), now, std::move(request), std::nullopt, sequence,
               std::move(done));
}

void RocksDbStore::ApplyLoggedImportAsync(std::vector<SubjectUpdate> updates, absl::Time now,
                                          ImportStep step, int64_t sequence,
                                          std::function<void(absl::StatusOr<CommitResult>)> done) {
  SubmitLogged(std::move(updates), now, {}, std::move(step), sequence, std::move(done));
}

void RocksDbStore::SubmitLogged(std::vector<SubjectUpdate> updates, absl::Time now,
                                RequestKey request, std::optional<ImportStep> import,
                                int64_t sequence,
                                std::function<void(absl::StatusOr<CommitResult>)> done) {
  if (sequence <= 0) {
    done(absl::InvalidArgumentError("a logged command needs a positive sequence"));
    return;
  }
  auto commit = std::make_unique<PendingCommit>();
  commit->updates = std::move(updates);
  commit->now = now;
  commit->request = std::move(request);
  commit->import = std::move(import);
  commit->log_sequence = sequence;
  commit->done = std::move(done);
  pipeline_.Submit(std::move(commit));
}

absl::StatusOr<int64_t> RocksDbStore::AppliedSequence() {
  absl::ReaderMutexLock lock(&open_mu_);
  if (db_ == nullptr) return absl::FailedPreconditionError("store is closed");
  return ReadProgress(kMetaAppliedSequence);
}

void RocksDbStore::AwaitNoWrite() {
  absl::MutexLock lock(&flight_mu_);
  AwaitNoWriteLocked();
}

absl::Status WritesRefused(const absl::Status& cause) {
  return absl::UnavailableError(absl::StrCat(
      "writes are refused: a synced write failed (", cause.message(),
      ") and the store has not reopened its database yet; checks still answer from what was "
      "committed; retry later"));
}

std::shared_ptr<PreparedGroup> RocksDbStore::Prepare(const std::vector<PendingCommit*>& commits) {
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
  if (index_ != nullptr) group->views.reserve(group->subjects.size());
  for (const auto& entry : group->subjects) written.push_back(&entry);
  std::sort(written.begin(), written.end(),
            [](const auto* a, const auto* b) { return a->first < b->first; });
  std::string record;  // reused: one allocation for the group's records
  for (const auto* entry : written) {
    const auto& [user_id, subject] = *entry;
    subject->SerializeToString(&record);
    batch.Put(subjects(), user_id, record);
    if (index_ != nullptr) {
      const size_t begin = group->view_bytes.size();
      AppendDecisionView(*subject, &group->view_bytes);
      group->views.push_back({&user_id, begin, group->view_bytes.size()});
    }
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

void RocksDbStore::Write(PreparedGroup& prepared, const std::vector<PendingCommit*>& commits) {
  // Every group this store's Prepare returns is a Group.
  Group& group = static_cast<Group&>(prepared);
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
      const absl::string_view bytes = group.view_bytes;
      for (const Group::View& view : group.views) {
        index_->Put(*view.user_id, bytes.substr(view.begin, view.end - view.begin));
      }
      if (group.history != nullptr) history_.Add(group.history);
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
    // A failed group leaves no write in flight (Write), and the groups
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

void RocksDbStore::RecordLogged(PendingCommit& commit, Group& group, rocksdb::WriteBatch& batch) {
  batch.Put(meta(), kMetaAppliedSequence, EncodeRevision(commit.log_sequence));
  group.progress[kMetaAppliedSequence] = commit.log_sequence;
  commit.wrote = true;
}

void RocksDbStore::ApplyCommit(PendingCommit& commit, Group& group, rocksdb::WriteBatch& batch) {
  group.BeginCommit();
  batch.SetSavePoint();
  // Ends this commit without writing anything of it; but a command of the
  // replicated log with an outcome that is the same on every replica (a
  // replay, a request id conflict, a refusal) is recorded as applied, so
  // the next command follows it.
  auto abandon = [&](absl::StatusOr<CommitResult> result) {
    group.Rollback();
    batch.RollbackToSavePoint().PermitUncheckedError();
    if (commit.log_sequence > 0 && (result.ok() || IsRefusal(result.status()))) {
      RecordLogged(commit, group, batch);
    }
    commit.result = std::move(result);
  };
  const absl::Time stamp = std::max(commit.now, group.last_time);
  CommitResult result;
  // A command of the replicated log: each once, in order, with no gap
  // (checked before its request id: a command delivered again is not a
  // replay).
  if (commit.log_sequence > 0) {
    auto through = FindProgress(group, kMetaAppliedSequence);
    if (!through.ok()) return abandon(through.status());
    if (commit.log_sequence != *through + 1) {
      return abandon(absl::UnavailableError(
          absl::StrCat("the replicated command log is applied through ", *through, "; command ",
                       commit.log_sequence, " is not the next")));
    }
    if (commit.updates.empty() && !commit.import) {
      result.outcome = CommitResult::Outcome::kApplied;
      return abandon(result);  // recorded, and nothing else
    }
  }
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
  // An import's step: once only, in order.
  if (commit.import) {
    auto through = FindProgress(group, absl::StrCat(kMetaImportPrefix, commit.import->import_id));
    if (!through.ok()) return abandon(through.status());
    if (*through >= commit.import->offset) {
      return abandon(absl::AbortedError(absl::StrCat(
          "import \"", commit.import->import_id, "\" is already applied through offset ", *through,
          ", not before ", commit.import->offset)));
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
    if (context.skipped()) {
      result.revisions.push_back(0);
      result.replayed.push_back(false);
      result.subjects.emplace_back();
      result.replies.emplace_back();
      continue;
    }

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
  if (commit.import) {
    // Even when every update skipped itself: the step is done.
    std::string key = absl::StrCat(kMetaImportPrefix, commit.import->import_id);
    batch.Put(meta(), key, EncodeRevision(commit.import->offset));
    group.progress[std::move(key)] = commit.import->offset;
    applied = true;
  }
  if (applied && commit.log_sequence > 0) RecordLogged(commit, group, batch);
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

}  // namespace consent::storage
