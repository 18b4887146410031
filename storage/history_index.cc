// The user history index: HistoryTail (its newest entries, in memory, and
// the thread that writes them in bulk), and RocksDbStore's side of it.
#include "storage/history_index.h"

#include <pthread.h>

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <utility>

#include "rocksdb/db.h"
#include "rocksdb/sst_file_writer.h"
#include "storage/keys.h"
#include "storage/rocksdb_store.h"

namespace consent::storage {

HistoryTail::HistoryTail(size_t batch,
                         std::function<void(const absl::Status&, int64_t entries)> on_written)
    : batch_(batch), on_written_(std::move(on_written)) {}

void HistoryTail::Add(std::shared_ptr<const HistoryRun> run) {
  absl::MutexLock lock(&mu_);
  keys_ += run->size();
  runs_.push_back(std::move(run));
}

HistoryTail::Runs HistoryTail::Copy() const {
  absl::MutexLock lock(&mu_);
  return runs_;
}

void HistoryTail::DropOldest(size_t runs, size_t keys) {
  absl::MutexLock lock(&mu_);
  // The oldest of the tail: only the history thread, or the owner after
  // Stop, drops runs, and Add appends.
  runs_.erase(runs_.begin(), runs_.begin() + static_cast<std::ptrdiff_t>(runs));
  keys_ -= keys;
}

HistoryTail::Figures HistoryTail::Measure() const {
  absl::MutexLock lock(&mu_);
  return Figures{static_cast<int64_t>(keys_), static_cast<int64_t>(runs_.size()), failures_};
}

void HistoryTail::Start(BulkWrite write) {
  absl::MutexLock lock(&thread_mu_);
  thread_ = std::thread([this, write = std::move(write)] { Run(write); });
  pthread_setname_np(thread_.native_handle(), "consent-history");
}

void HistoryTail::Stop() {
  absl::MutexLock lock(&thread_mu_);
  {
    absl::MutexLock tail_lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void HistoryTail::Run(BulkWrite write) {
  while (true) {
    Runs runs;
    bool merge_only = false;  // too many runs, not enough entries to write
    {
      absl::MutexLock lock(&mu_);
      auto write_ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return keys_ > 0 && keys_ >= batch_ && keys_ >= retry_keys_;
      };
      auto ready = [this, &write_ready]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || write_ready() || runs_.size() > kMaxRuns;
      };
      mu_.Await(absl::Condition(&ready));
      if (stopping_) return;  // the owner writes the rest
      runs = runs_;
      merge_only = !write_ready();
    }
    if (merge_only) {
      Merge(runs);
      continue;
    }
    const absl::Status s = write(runs);
    {
      absl::MutexLock lock(&mu_);
      // Failed (a full disk, say): the entries stay in memory, readable,
      // and the write is tried again when another batch has come.
      retry_keys_ = s.ok() ? 0 : keys_ + std::max<size_t>(batch_, 1);
      if (!s.ok()) ++failures_;
    }
    if (on_written_) {
      int64_t entries = 0;
      for (const auto& run : runs) entries += static_cast<int64_t>(run->size());
      on_written_(s, entries);
    }
  }
}

void HistoryTail::Merge(const Runs& runs) {
  std::vector<size_t> sizes;
  sizes.reserve(runs.size());
  for (const auto& run : runs) sizes.push_back(run->size());
  const size_t from = MergeFrom(sizes);
  if (from >= runs.size()) return;
  const Runs newest(runs.begin() + static_cast<std::ptrdiff_t>(from), runs.end());
  int64_t last_revision = 0;
  for (const auto& run : newest) last_revision = std::max(last_revision, run->last_revision());
  auto merged = std::make_shared<const HistoryRun>(MergeRuns(newest), last_revision);
  absl::MutexLock lock(&mu_);
  // Only this thread drops or replaces runs, and Add appends: the merged
  // runs are still at [from, runs.size()).
  const auto first = runs_.begin() + static_cast<std::ptrdiff_t>(from);
  runs_.erase(first, runs_.begin() + static_cast<std::ptrdiff_t>(runs.size()));
  runs_.insert(runs_.begin() + static_cast<std::ptrdiff_t>(from), std::move(merged));
}

absl::Status RocksDbStore::WriteHistory(const HistoryTail::Runs& runs) {
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
  history_.DropOldest(runs.size(), keys.size());
  return absl::OkStatus();
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
  history_.Add(std::make_shared<HistoryRun>(keys, last_revision));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::ChangeEvent>> RocksDbStore::ReadUserEvents(absl::string_view user_id,
                                                                          int64_t after_revision,
                                                                          size_t limit) {
  absl::ReaderMutexLock lock(&open_mu_);
  if (db_ == nullptr) return absl::FailedPreconditionError("store is closed");
  // The index gives the revisions; one MultiGet fetches the events. The
  // newest entries are in memory: copied first, so an entry that moves to
  // RocksDB meanwhile is found in one or the other (or both).
  const HistoryTail::Runs tail = history_.Copy();
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

}  // namespace consent::storage
