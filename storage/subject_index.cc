#include "storage/subject_index.h"

#include <algorithm>

#include "absl/container/inlined_vector.h"
#include "google/protobuf/io/coded_stream.h"

namespace consent::storage {

std::string DecisionView(const v1::Subject& subject) {
  v1::Subject view;
  if (subject.has_attributes()) *view.mutable_attributes() = subject.attributes();
  for (const v1::Preference& preference : subject.preferences()) {
    v1::Preference* p = view.add_preferences();
    p->set_purpose(preference.purpose());
    p->set_state(preference.state());
    if (preference.has_effective_time()) *p->mutable_effective_time() = preference.effective_time();
    if (preference.has_expire_time()) *p->mutable_expire_time() = preference.expire_time();
    p->set_revision(preference.revision());
  }
  view.set_exclusion_count(subject.exclusion_count());
  view.set_revision(subject.revision());
  // Of the notices, decisions read each covered purpose's earliest delivery
  // (FirstNotice): kept as (purpose number, Unix seconds) pairs, the
  // seconds rounded up so a notice never counts early.
  // A subject has few notices and purposes: a list searched in order.
  absl::InlinedVector<std::pair<absl::string_view, int64_t>, 2> first;
  for (const v1::NoticeDelivery& notice : subject.notices()) {
    // Without its time a notice never counts (as the decoder reads the
    // record); the write path always sets it.
    if (!notice.has_delivery_time()) continue;
    const int64_t seconds =
        notice.delivery_time().seconds() + (notice.delivery_time().nanos() > 0 ? 1 : 0);
    for (const std::string& purpose : notice.purposes()) {
      auto it = std::find_if(first.begin(), first.end(),
                             [&purpose](const auto& entry) { return entry.first == purpose; });
      if (it == first.end()) {
        first.emplace_back(purpose, seconds);
      } else {
        it->second = std::min(it->second, seconds);
      }
    }
  }
  std::string packed;
  for (const auto& [purpose, seconds] : first) {
    const uint32_t number = seconds >= 0 ? PurposeNumber(purpose) : kNoPurposeNumber;
    if (number == kNoPurposeNumber) {
      // Out of numbers (or before 1970): the name, as the record has it.
      v1::NoticeDelivery* notice = view.add_notices();
      notice->add_purposes(std::string(purpose));
      notice->mutable_delivery_time()->set_seconds(seconds);
      continue;
    }
    uint8_t buffer[2 * 10];  // two varints of at most 10 bytes
    uint8_t* end = google::protobuf::io::CodedOutputStream::WriteVarint32ToArray(number, buffer);
    end = google::protobuf::io::CodedOutputStream::WriteVarint64ToArray(
        static_cast<uint64_t>(seconds), end);
    packed.append(reinterpret_cast<const char*>(buffer), end - buffer);
  }
  std::string bytes = view.SerializeAsString();
  if (!packed.empty()) {
    uint8_t buffer[2 * 10];                   // two varints of at most 10 bytes
    constexpr uint32_t kLengthDelimited = 2;  // the wire type
    uint8_t* end = google::protobuf::io::CodedOutputStream::WriteTagToArray(
        (kCompactNoticesField << 3) | kLengthDelimited, buffer);
    end = google::protobuf::io::CodedOutputStream::WriteVarint32ToArray(
        static_cast<uint32_t>(packed.size()), end);
    bytes.append(reinterpret_cast<const char*>(buffer), end - buffer);
    bytes += packed;
  }
  return bytes;
}

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
