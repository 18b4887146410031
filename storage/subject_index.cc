#include "storage/subject_index.h"

#include <algorithm>

namespace consent::storage {

absl::Status SubjectIndex::DecodeMany(absl::Span<const absl::string_view> user_ids,
                                      SubjectViewArena* arena,
                                      std::vector<const SubjectView*>* out) {
  const size_t n = user_ids.size();
  out->assign(n, nullptr);
  // Positions by shard (a counting sort).
  std::vector<size_t> hashes(n);
  std::vector<uint8_t> shard_of(n);
  std::array<uint32_t, kShards + 1> begin{};
  for (size_t i = 0; i < n; ++i) {
    hashes[i] = HashOf(user_ids[i]);
    shard_of[i] = static_cast<uint8_t>(ShardIndex(hashes[i]));
    ++begin[shard_of[i] + 1];
  }
  for (size_t s = 0; s < kShards; ++s) begin[s + 1] += begin[s];
  std::vector<uint32_t> order(n);
  std::array<uint32_t, kShards> next;
  std::copy(begin.begin(), begin.end() - 1, next.begin());
  for (size_t i = 0; i < n; ++i) order[next[shard_of[i]]++] = static_cast<uint32_t>(i);

  std::vector<const Entry*> found(n);
  // Users met before in this batch, by hash: a batch's repeated users
  // (a third of the items of a Zipf-distributed batch of 1,000) are
  // decoded once. All items of a user fall in one shard, read under one
  // lock, so a repeat gets exactly what a decoding would.
  struct Decoded {
    size_t hash = 0;
    absl::string_view user_id;
    const SubjectView* subject = nullptr;
  };
  std::vector<Decoded> recent(n > 1 ? kRecent : 0);
  for (size_t s = 0; s < kShards; ++s) {
    if (begin[s] == begin[s + 1]) continue;
    Shard& shard = shards_[s];
    absl::ReaderMutexLock lock(&shard.mu);
    for (uint32_t k = begin[s]; k < begin[s + 1]; ++k) {
      shard.entries.prefetch(Candidate{hashes[order[k]]});
    }
    for (uint32_t k = begin[s]; k < begin[s + 1]; ++k) {
      auto it = shard.entries.find(Candidate{hashes[order[k]]});
      found[k] = it == shard.entries.end() ? nullptr : &*it;
      if (found[k] != nullptr) found[k]->Prefetch();
    }
    for (uint32_t k = begin[s]; k < begin[s + 1]; ++k) {
      const absl::string_view user_id = user_ids[order[k]];
      Decoded* seen = recent.empty() ? nullptr : &recent[hashes[order[k]] % kRecent];
      if (seen != nullptr && seen->subject != nullptr && seen->hash == hashes[order[k]] &&
          seen->user_id == user_id) {
        (*out)[order[k]] = seen->subject;
        continue;
      }
      if (found[k] != nullptr && found[k]->key() != user_id) {
        // Another user with the same 64-bit hash: look up the key itself.
        auto it = shard.entries.find(Key{user_id, hashes[order[k]]});
        found[k] = it == shard.entries.end() ? nullptr : &*it;
      }
      if (found[k] == nullptr) continue;
      const SubjectView* subject = arena->Decode(found[k]->view());
      if (subject == nullptr) return absl::DataLossError("subject record does not parse");
      (*out)[order[k]] = subject;
      if (seen != nullptr) *seen = {hashes[order[k]], user_id, subject};
    }
  }
  return absl::OkStatus();
}

}  // namespace consent::storage
