// RocksDbStore (rocksdb_store.h): opening and reopening the database,
// reads, statistics and closing. The key and value layout is documented
// in docs/storage.md; keep the two in step.
#include "storage/rocksdb_store.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <system_error>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "rocksdb/file_system.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/listener.h"
#include "rocksdb/slice.h"
#include "rocksdb/slice_transform.h"
#include "rocksdb/table.h"
#include "rocksdb/utilities/checkpoint.h"
#include "rocksdb/write_batch.h"
#include "storage/audit_chain.h"
#include "storage/history_runs.h"
#include "storage/rocksdb_log.h"

namespace consent::storage {

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

namespace {

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

std::vector<rocksdb::ColumnFamilyDescriptor> ColumnFamilies(const StoreOptions& store_options) {
  // Point reads (subjects, exclusions, request ids): what RocksDB's
  // OptimizeForPointLookup sets, spelled out (it replaces the whole table
  // factory), with one shared block cache: a bloom filter per SST, a hash
  // index inside each data block, whole-key bloom filters in memtables.
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(store_options.rocksdb.block_cache_bytes);
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  table.data_block_index_type = rocksdb::BlockBasedTableOptions::kDataBlockBinaryAndHash;
  table.data_block_hash_table_util_ratio = 0.75;
  table.block_restart_interval = store_options.rocksdb.block_restart_interval;
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

RocksDbStore::RocksDbStore(const StoreOptions& options, std::unique_ptr<rocksdb::DB> db,
                           std::vector<rocksdb::ColumnFamilyHandle*> handles, int64_t revision,
                           absl::Time last_time)
    : options_(options),
      db_(std::move(db)),
      handles_(std::move(handles)),
      revision_(revision),
      last_time_(last_time),
      history_(options.history_index_batch, options.on_history_written),
      pipeline_(this, options.max_queued_commits) {}

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
      history_.Add(std::make_shared<HistoryRun>(keys, disk->revision));
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
    stats.rocksdb.block_cache_hits =
        static_cast<int64_t>(statistics_->getTickerCount(rocksdb::BLOCK_CACHE_HIT));
    stats.rocksdb.block_cache_misses =
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
  stats.rocksdb.write_stall_micros = absl::ToInt64Microseconds(stalls_->Total());
  stats.rocksdb.live_sst_bytes = sum(rocksdb::DB::Properties::kLiveSstFilesSize);
  stats.rocksdb.memtable_bytes = sum(rocksdb::DB::Properties::kCurSizeAllMemTables);
  stats.rocksdb.pending_compaction_bytes =
      sum(rocksdb::DB::Properties::kEstimatePendingCompactionBytes);
  uint64_t value = 0;
  if (db_->GetIntProperty(rocksdb::DB::Properties::kIsWriteStopped, &value)) {
    stats.rocksdb.write_stopped = static_cast<int64_t>(value);
  }
  if (db_->GetIntProperty(subjects(), rocksdb::DB::Properties::kEstimateNumKeys, &value)) {
    stats.estimated_subjects = static_cast<int64_t>(value);
  }
  if (index_ != nullptr) {
    stats.index_ready = index_->ready() ? 1 : 0;
    index_->Measure(&stats.index_subjects, &stats.index_bytes);
  }
  const HistoryTail::Figures history = history_.Measure();
  stats.history_pending = history.pending;
  stats.history_runs = history.runs;
  stats.history_write_failures = history.write_failures;
  return stats;
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
  pipeline_.Stop();
  history_.Stop();
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
  const absl::Status history_written = WriteHistory(history_.Copy());
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

bool IsRefusal(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kOutOfRange:
      return true;
    default:
      return false;
  }
}

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
  if (options.rocksdb.collect_statistics) {
    db_options.statistics = rocksdb::CreateDBStatistics();
    // Tickers only: histograms and timers cost more than they tell here.
    db_options.statistics->set_stats_level(rocksdb::StatsLevel::kExceptHistogramOrTimers);
  }

  std::unique_ptr<rocksdb::Env> env;
  if (options.rocksdb.file_system != nullptr) {
    env = rocksdb::NewCompositeEnv(options.rocksdb.file_system);
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
  auto store = std::make_unique<RocksDbStore>(options, std::move(db), std::move(handles),
                                              disk->revision, disk->last_time);
  {
    absl::MutexLock lock(&store->flight_mu_);
    store->last_hash_ = std::move(disk->last_hash);
  }
  store->env_ = std::move(env);
  store->db_options_ = db_options;
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
  store->pipeline_.Start();
  store->history_.Start([raw = store.get()](const HistoryTail::Runs& runs) {
    absl::ReaderMutexLock open_lock(&raw->open_mu_);
    return raw->db_ == nullptr ? absl::FailedPreconditionError("store is closed")
                               : raw->WriteHistory(runs);
  });
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
