// RocksDbStore (rocksdb_store.h): what runs beside the commit pipeline —
// recording policies, the request-id purge, checkpoints (backups), and
// walking the audit hash chain. Each takes the write lock when it must
// see no commit in progress.
#include <algorithm>
#include <filesystem>
#include <limits>
#include <system_error>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "rocksdb/utilities/checkpoint.h"
#include "rocksdb/write_batch.h"
#include "storage/audit_chain.h"
#include "storage/rocksdb_store.h"

namespace consent::storage {

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
  // Never an id that a later commit could still find live: commits are
  // stamped no earlier than the latest time stamped so far, and an id is
  // live for request_id_retention after its own time. So a purge changes
  // no commit's outcome, whatever the clock says: a replica applying the
  // replicated log behind the clock purges only what it has passed, and
  // every replica resolves the same replays (docs/replication.md).
  {
    absl::MutexLock lock(&flight_mu_);
    before = std::min(before, last_time_ - options_.request_id_retention);
  }
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

absl::StatusOr<ConsentStore::CheckpointPosition> RocksDbStore::Checkpoint(
    const std::string& directory) {
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
  CheckpointPosition position;
  position.revision = revision_.load(std::memory_order_acquire);
  absl::StatusOr<int64_t> applied = ReadProgress(kMetaAppliedSequence);
  if (!applied.ok()) return applied.status();
  position.applied_sequence = *applied;
  // No flush here: what the memtables hold is in the synced WAL, which the
  // checkpoint copies, and the copy replays it when opened.
  s = checkpoint->CreateCheckpoint(directory, std::numeric_limits<uint64_t>::max());
  if (!s.ok()) return FromRocks(s, absl::StrCat("writing the checkpoint to ", directory));
  // Owner only, like the data directory (RocksDB creates it with the umask).
  std::filesystem::permissions(directory, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::replace, ec);
  return position;
}

absl::StatusOr<std::vector<std::string>> PruneBackups(const std::string& backup_dir, size_t keep) {
  namespace fs = std::filesystem;
  std::error_code ec;
  struct Backup {
    fs::file_time_type written;
    std::string path;
  };
  std::vector<Backup> backups;
  for (fs::directory_iterator it(backup_dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::directory_entry& entry = *it;
    std::error_code entry_ec;
    if (!entry.is_directory(entry_ec)) continue;
    const fs::path current = entry.path() / "CURRENT";
    const fs::file_time_type written = fs::last_write_time(current, entry_ec);
    if (entry_ec) continue;  // not a backup
    backups.push_back({written, entry.path().string()});
  }
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("listing backups in ", backup_dir, ": ", ec.message()));
  }
  std::vector<std::string> removed;
  if (backups.size() <= keep) return removed;
  std::sort(backups.begin(), backups.end(), [](const Backup& a, const Backup& b) {
    return a.written != b.written ? a.written < b.written : a.path < b.path;
  });
  backups.resize(backups.size() - keep);
  for (const Backup& old : backups) {
    fs::remove_all(old.path, ec);
    if (ec) {
      return absl::FailedPreconditionError(
          absl::StrCat("removing old backup ", old.path, ": ", ec.message()));
    }
    removed.push_back(old.path);
  }
  return removed;
}

absl::Status RocksDbStore::ScanSubjects(
    const std::function<void(int64_t revision)>& at_revision,
    const std::function<absl::Status(const v1::Subject& subject, const ExclusionPairs& exclusions)>&
        visit) {
  // No group is being written or prepared while the view is taken, so it
  // holds exactly the writes up to `revision`; then commits go on. open_mu_
  // is held shared for the whole scan, as the subject index's load does.
  absl::ReleasableMutexLock write_lock(&write_mu_);
  AwaitNoWrite();
  absl::ReaderMutexLock open_lock(&open_mu_);
  if (db_ == nullptr) return absl::FailedPreconditionError("store is closed");
  const rocksdb::Snapshot* snapshot = db_->GetSnapshot();
  const int64_t revision = revision_.load(std::memory_order_acquire);
  write_lock.Release();
  rocksdb::DB* const db = db_.get();  // open_mu_ is held until the scan ends
  auto release = absl::MakeCleanup([db, snapshot] { db->ReleaseSnapshot(snapshot); });
  at_revision(revision);
  rocksdb::ReadOptions read;
  read.snapshot = snapshot;
  read.fill_cache = false;  // one pass over everything: keep the cache for checks
  read.readahead_size = 2 << 20;
  std::unique_ptr<rocksdb::Iterator> subjects_it(db_->NewIterator(read, subjects()));
  std::unique_ptr<rocksdb::Iterator> exclusions_it(db_->NewIterator(read, exclusions()));
  exclusions_it->SeekToFirst();
  v1::Subject subject;
  ExclusionPairs exclusions;
  for (subjects_it->SeekToFirst(); subjects_it->Valid(); subjects_it->Next()) {
    const rocksdb::Slice value = subjects_it->value();
    if (!subject.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
      return absl::DataLossError("a subject record does not parse");
    }
    // Exclusion keys start with the user id and a 0 byte, which sorts below
    // every id byte: both iterators go in user-id order, so the subject's
    // exclusions are next (exclusions of users without a record, which no
    // decision reads, are passed over).
    exclusions.clear();
    const std::string prefix = ExclusionPrefix(subject.user_id(), "");
    const absl::string_view user_prefix(prefix.data(), subject.user_id().size() + 1);
    for (; exclusions_it->Valid(); exclusions_it->Next()) {
      const absl::string_view key(exclusions_it->key().data(), exclusions_it->key().size());
      if (key.substr(0, user_prefix.size()) != user_prefix) {
        if (key > user_prefix) break;
        continue;
      }
      const absl::string_view rest = key.substr(user_prefix.size());
      const size_t zero = rest.find('\0');
      if (zero == absl::string_view::npos)
        return absl::DataLossError("an exclusion key is damaged");
      exclusions.emplace_back(std::string(rest.substr(0, zero)),
                              std::string(rest.substr(zero + 1)));
    }
    if (absl::Status s = visit(subject, exclusions); !s.ok()) return s;
  }
  if (absl::Status s = FromRocks(subjects_it->status(), "scanning subjects"); !s.ok()) return s;
  return FromRocks(exclusions_it->status(), "scanning exclusions");
}

}  // namespace consent::storage
