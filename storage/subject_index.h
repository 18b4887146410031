// The in-memory subject index (StoreOptions::subject_index): the decision
// view of every subject, what checks read once it has loaded. Private to
// storage/.
#ifndef CONSENT_STORAGE_SUBJECT_INDEX_H_
#define CONSENT_STORAGE_SUBJECT_INDEX_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "consent/v1/types.pb.h"
#include "core/subject_view.h"

namespace consent::storage {

// The decision view of every subject, in memory (StoreOptions::
// subject_index). Each entry is one allocation holding the user id and the
// view; the tables hold the user id's hash and a pointer to it, so a batch
// can find its entries' addresses without reading them, and fetch them all
// at once (docs/performance.md). Sharded so readers on different cores
// rarely share a lock.
class SubjectIndex {
 public:
  // `expected`: about how many subjects will be added (sizes the tables).
  explicit SubjectIndex(size_t expected) {
    for (Shard& shard : shards_) {
      absl::MutexLock lock(&shard.mu);
      shard.entries.reserve(expected / kShards + 1);
    }
  }

  // Sets the user's view (a write).
  void Put(absl::string_view user_id, absl::string_view view) {
    const Key key{user_id, HashOf(user_id)};
    Shard& shard = shards_[ShardIndex(key.hash)];
    absl::MutexLock lock(&shard.mu);
    if (auto it = shard.entries.find(key); it != shard.entries.end()) {
      shard.bytes -= it->allocated();
      shard.entries.erase(it);
    }
    shard.bytes += shard.entries.emplace(key, view).first->allocated();
  }
  // Adds the user's view unless the user is there already: while the index
  // loads, a write made after the load's snapshot has put a newer view.
  void PutIfAbsent(absl::string_view user_id, absl::string_view view) {
    const Key key{user_id, HashOf(user_id)};
    Shard& shard = shards_[ShardIndex(key.hash)];
    absl::MutexLock lock(&shard.mu);
    if (shard.entries.contains(key)) return;
    shard.bytes += shard.entries.emplace(key, view).first->allocated();
  }
  // The views of `user_ids`, decoded onto `arena` into `out` (one pointer
  // each, null where the user has no record); kDataLoss when one does not
  // decode. A batch is grouped by shard, so each lock is taken once. Its
  // cache misses overlap instead of following one another: the table slots
  // are prefetched, then each entry's address is found by hash alone (the
  // slot holds it) and prefetched, and only then are the keys compared and
  // the views decoded.
  absl::Status DecodeMany(absl::Span<const absl::string_view> user_ids, SubjectViewArena* arena,
                          std::vector<const SubjectView*>* out);

  // Once every subject of the store is in (the load finished), reads may
  // use the index; until then they go to RocksDB.
  bool ready() const { return ready_.load(std::memory_order_acquire); }
  void MarkReady() { ready_.store(true, std::memory_order_release); }

  // Subjects held, and the bytes they and the tables take.
  void Measure(int64_t* subjects, int64_t* bytes) {
    *subjects = *bytes = 0;
    for (Shard& shard : shards_) {
      absl::ReaderMutexLock lock(&shard.mu);
      *subjects += static_cast<int64_t>(shard.entries.size());
      *bytes += shard.bytes + static_cast<int64_t>(shard.entries.capacity() * (sizeof(Entry) + 1));
    }
  }

 private:
  static constexpr size_t kShards = 64;
  static constexpr size_t kRecent = 256;  // DecodeMany's memory of a batch's users
  static size_t HashOf(absl::string_view user_id) {
    return absl::Hash<absl::string_view>()(user_id);
  }
  // A user id and its hash (HashOf).
  struct Key {
    absl::string_view user_id;
    size_t hash;
  };
  // Looks up any entry whose user id has this hash, without reading the
  // entry: the caller compares the user id once the entry is in cache.
  struct Candidate {
    size_t hash;
  };
  // The user id's hash, and one allocation: key size and view size (4 bytes
  // each), then both.
  class Entry {
   public:
    Entry(const Key& key, absl::string_view view)
        : hash_(key.hash), data_(new char[kHeader + key.user_id.size() + view.size()]) {
      const absl::string_view id = key.user_id;
      const uint32_t sizes[2] = {static_cast<uint32_t>(id.size()),
                                 static_cast<uint32_t>(view.size())};
      std::memcpy(data_.get(), sizes, kHeader);
      std::memcpy(data_.get() + kHeader, id.data(), id.size());
      std::memcpy(data_.get() + kHeader + id.size(), view.data(), view.size());
    }
    size_t hash() const { return hash_; }
    absl::string_view key() const { return {data_.get() + kHeader, Size(0)}; }
    absl::string_view view() const { return {data_.get() + kHeader + Size(0), Size(1)}; }
    int64_t allocated() const { return static_cast<int64_t>(kHeader + Size(0) + Size(1)); }
    // Two lines: an entry (about 60 bytes) often straddles two. (A prefetch
    // past the end of a short one is harmless.)
    void Prefetch() const {
      __builtin_prefetch(data_.get());
      __builtin_prefetch(
          reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(data_.get()) + 64));
    }

   private:
    static constexpr size_t kHeader = 2 * sizeof(uint32_t);
    uint32_t Size(int i) const {
      uint32_t size;
      std::memcpy(&size, data_.get() + i * sizeof(uint32_t), sizeof(size));
      return size;
    }
    size_t hash_;
    std::unique_ptr<char[]> data_;
  };
  // Entries are found by Key, or by Candidate; the tables never rehash a
  // user id (entries keep theirs).
  struct Hash {
    using is_transparent = void;
    size_t operator()(const Entry& entry) const { return entry.hash(); }
    size_t operator()(const Key& key) const { return key.hash; }
    size_t operator()(const Candidate& candidate) const { return candidate.hash; }
  };
  struct Eq {
    using is_transparent = void;
    bool operator()(const Entry& a, const Entry& b) const {
      return a.hash() == b.hash() && a.key() == b.key();
    }
    bool operator()(const Entry& entry, const Key& key) const {
      return entry.hash() == key.hash && entry.key() == key.user_id;
    }
    bool operator()(const Entry& entry, const Candidate& candidate) const {
      return entry.hash() == candidate.hash;
    }
  };
  struct Shard {
    absl::Mutex mu;
    absl::flat_hash_set<Entry, Hash, Eq> entries ABSL_GUARDED_BY(mu);
    int64_t bytes ABSL_GUARDED_BY(mu) = 0;  // of the entries' allocations
  };
  // By the hash's top bits: the tables inside use its low ones.
  static size_t ShardIndex(size_t hash) { return static_cast<uint64_t>(hash) >> (64 - 6); }
  static_assert(kShards == 64, "ShardIndex takes 6 bits");
  std::array<Shard, kShards> shards_;
  std::atomic<bool> ready_{false};
};

}  // namespace consent::storage

#endif  // CONSENT_STORAGE_SUBJECT_INDEX_H_
