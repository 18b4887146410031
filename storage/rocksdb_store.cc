// RocksDB implementation of ConsentStore. The key and value layout is
// documented in docs/storage.md; keep the two in step.
#include <algorithm>
#include <atomic>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/util/time_util.h"
#include "rocksdb/db.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/options.h"
#include "rocksdb/slice.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"
#include "storage/consent_store.h"
#include "storage/keys.h"

namespace consent::storage {
namespace {

using google::protobuf::util::TimeUtil;

constexpr char kFormatVersion[] = "1";
constexpr char kSubjectsCf[] = "subjects";
constexpr char kEventsCf[] = "events";
constexpr char kUserEventsCf[] = "user_events";
constexpr char kMetaCf[] = "meta";
constexpr char kMetaFormatVersion[] = "format_version";
constexpr char kMetaRevision[] = "revision";

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
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create data directory ", dir, ": ", ec.message()));
  }
  return absl::OkStatus();
}

class RocksDbStore final : public ConsentStore {
 public:
  RocksDbStore(std::unique_ptr<rocksdb::DB> db, std::vector<rocksdb::ColumnFamilyHandle*> handles,
               int64_t revision)
      : db_(std::move(db)), handles_(std::move(handles)), revision_(revision) {}

  ~RocksDbStore() override { Close().IgnoreError(); }

  absl::StatusOr<CommitResult> Commit(std::vector<SubjectUpdate> updates, absl::Time now) override;
  absl::StatusOr<v1::Subject> GetSubject(absl::string_view user_id) override;
  absl::Status GetSubjects(absl::Span<const absl::string_view> user_ids,
                           std::vector<std::optional<v1::Subject>>* out) override;
  int64_t CurrentRevision() const override { return revision_.load(std::memory_order_acquire); }
  absl::StatusOr<std::vector<v1::ChangeEvent>> ReadEvents(int64_t start_revision,
                                                          size_t limit) override;
  absl::Status Close() override;

  // Column family handles, in the order of ColumnFamilies().
  rocksdb::ColumnFamilyHandle* subjects() const { return handles_[1]; }
  rocksdb::ColumnFamilyHandle* events() const { return handles_[2]; }
  rocksdb::ColumnFamilyHandle* user_events() const { return handles_[3]; }
  rocksdb::ColumnFamilyHandle* meta() const { return handles_[4]; }

 private:
  // Reads one subject from the database (no pending writes). Sets `exists`.
  absl::Status ReadSubject(absl::string_view user_id, bool* exists, v1::Subject* subject)
      ABSL_SHARED_LOCKS_REQUIRED(open_mu_);

  // Guards db_ against Close while calls are in flight: calls hold it
  // shared, Close exclusively.
  mutable absl::Mutex open_mu_;
  std::unique_ptr<rocksdb::DB> db_ ABSL_GUARDED_BY(open_mu_);
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  // Serialises commits so revisions are assigned in commit order.
  absl::Mutex write_mu_ ABSL_ACQUIRED_BEFORE(open_mu_);
  std::atomic<int64_t> revision_;
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

absl::StatusOr<CommitResult> RocksDbStore::Commit(std::vector<SubjectUpdate> updates,
                                                  absl::Time now) {
  if (updates.empty()) {
    return absl::InvalidArgumentError("commit of no updates");
  }
  absl::MutexLock write_lock(&write_mu_);
  absl::ReaderMutexLock open_lock(&open_mu_);
  if (db_ == nullptr) return absl::FailedPreconditionError("store is closed");

  const google::protobuf::Timestamp now_proto = ToProto(now);
  int64_t revision = revision_.load(std::memory_order_relaxed);
  // Subjects changed by this commit, so a later update of the same user
  // sees the earlier one's result.
  absl::flat_hash_map<std::string, v1::Subject> pending;
  rocksdb::WriteBatch batch;
  CommitResult result;
  result.revisions.reserve(updates.size());
  result.subjects.reserve(updates.size());

  for (SubjectUpdate& update : updates) {
    bool exists = true;
    v1::Subject subject;
    auto it = pending.find(update.user_id);
    if (it != pending.end()) {
      subject = it->second;
    } else {
      absl::Status s = ReadSubject(update.user_id, &exists, &subject);
      if (!s.ok()) return s;
    }
    v1::ChangeEvent event;
    absl::Status s = update.apply(exists, revision + 1, subject, event);
    if (!s.ok()) return s;

    ++revision;
    subject.set_user_id(update.user_id);
    subject.set_revision(revision);
    *subject.mutable_update_time() = now_proto;
    if (!subject.has_create_time()) *subject.mutable_create_time() = now_proto;
    event.set_revision(revision);
    event.set_user_id(update.user_id);
    *event.mutable_event_time() = now_proto;

    batch.Put(events(), EventKey(revision), event.SerializeAsString());
    batch.Put(user_events(), UserEventKey(update.user_id, revision), rocksdb::Slice());
    result.revisions.push_back(revision);
    result.subjects.push_back(subject);
    pending[update.user_id] = std::move(subject);
  }
  for (const auto& [user_id, subject] : pending) {
    batch.Put(subjects(), user_id, subject.SerializeAsString());
  }
  batch.Put(meta(), kMetaRevision, EncodeRevision(revision));

  rocksdb::WriteOptions options;
  options.sync = true;  // never acknowledge a write that is not on disk
  absl::Status s = FromRocks(db_->Write(options, &batch), "committing write");
  if (!s.ok()) return s;
  revision_.store(revision, std::memory_order_release);
  return result;
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
                                       std::vector<std::optional<v1::Subject>>* out) {
  absl::ReaderMutexLock lock(&open_mu_);
  if (db_ == nullptr) return absl::FailedPreconditionError("store is closed");
  const size_t n = user_ids.size();
  std::vector<rocksdb::Slice> keys;
  keys.reserve(n);
  for (absl::string_view id : user_ids) keys.emplace_back(id.data(), id.size());
  std::vector<rocksdb::PinnableSlice> values(n);
  std::vector<rocksdb::Status> statuses(n);
  db_->MultiGet(rocksdb::ReadOptions(), subjects(), n, keys.data(), values.data(), statuses.data());
  out->clear();
  out->resize(n);
  for (size_t i = 0; i < n; ++i) {
    if (statuses[i].IsNotFound()) continue;
    absl::Status s = FromRocks(statuses[i], "reading subjects");
    if (!s.ok()) return s;
    v1::Subject& subject = (*out)[i].emplace();
    if (!subject.ParseFromArray(values[i].data(), static_cast<int>(values[i].size()))) {
      return absl::DataLossError("subject record does not parse");
    }
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

absl::Status RocksDbStore::Close() {
  absl::MutexLock write_lock(&write_mu_);
  absl::MutexLock lock(&open_mu_);
  if (db_ == nullptr) return absl::OkStatus();
  rocksdb::Status s = db_->FlushWAL(/*sync=*/true);
  for (rocksdb::ColumnFamilyHandle* handle : handles_) {
    rocksdb::Status ds = db_->DestroyColumnFamilyHandle(handle);
    if (s.ok()) s = ds;
  }
  handles_.clear();
  rocksdb::Status cs = db_->Close();
  if (s.ok()) s = cs;
  db_.reset();
  return FromRocks(s, "closing store");
}

std::vector<rocksdb::ColumnFamilyDescriptor> ColumnFamilies(const StoreOptions& store_options) {
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(store_options.block_cache_bytes);
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  table.cache_index_and_filter_blocks = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  rocksdb::ColumnFamilyOptions point_reads;
  point_reads.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  point_reads.OptimizeForPointLookup(store_options.block_cache_bytes >> 20);

  rocksdb::ColumnFamilyOptions scans;  // events are read in revision order
  return {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
      {kSubjectsCf, point_reads},
      {kEventsCf, scans},
      {kUserEventsCf, scans},
      {kMetaCf, rocksdb::ColumnFamilyOptions()},
  };
}

}  // namespace

absl::StatusOr<std::unique_ptr<ConsentStore>> ConsentStore::Open(const StoreOptions& options) {
  if (absl::Status s = CheckDataDir(options.data_dir); !s.ok()) return s;

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.paranoid_checks = true;
  db_options.max_background_jobs = 2;
  db_options.keep_log_file_num = 5;

  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw_db = nullptr;
  const std::string context = absl::StrCat("opening data directory ", options.data_dir);
  absl::Status s = FromRocks(
      rocksdb::DB::Open(db_options, options.data_dir, ColumnFamilies(options), &handles, &raw_db),
      context);
  if (!s.ok()) return s;
  std::unique_ptr<rocksdb::DB> db(raw_db);
  rocksdb::ColumnFamilyHandle* meta = handles[4];

  // A new database gets its format version; an old one must match it.
  std::string value;
  rocksdb::Status rs = db->Get(rocksdb::ReadOptions(), meta, kMetaFormatVersion, &value);
  if (rs.IsNotFound()) {
    rocksdb::WriteOptions wo;
    wo.sync = true;
    rs = db->Put(wo, meta, kMetaFormatVersion, kFormatVersion);
  } else if (rs.ok() && value != kFormatVersion) {
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    return absl::FailedPreconditionError(absl::StrCat(context, ": storage format version ", value,
                                                      " is not supported (want ", kFormatVersion,
                                                      ")"));
  }
  int64_t revision = 0;
  if (rs.ok()) {
    rs = db->Get(rocksdb::ReadOptions(), meta, kMetaRevision, &value);
    if (rs.ok()) {
      if (!DecodeRevision(value, &revision)) {
        rs = rocksdb::Status::Corruption("meta revision has a bad encoding");
      }
    } else if (rs.IsNotFound()) {
      rs = rocksdb::Status::OK();
    }
  }
  if (!rs.ok()) {
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    return FromRocks(rs, context);
  }
  return std::unique_ptr<ConsentStore>(
      new RocksDbStore(std::move(db), std::move(handles), revision));
}

}  // namespace consent::storage
