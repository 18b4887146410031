// The snapshot file (docs/offline.md, "File format"): the decision inputs
// of every subject at one revision and the policy in force, laid out to be
// memory-mapped and searched in place. SnapshotWriter builds one (consentd's
// ExportSnapshot); SnapshotReader reads one (consent_offline). Signing is
// snapshot_signing.h's: a signed file is these bytes and a trailer.
//
// Layout, little-endian:
//   "CRSNAP01"                          8 bytes
//   records                             one per subject, variable size
//   purposes, jurisdictions             tables of names records refer to
//   policy text                         the consent.v1.Policy in force
//   slot table                          8-aligned, a power of two of u64
//   footer                              kFooterSize bytes (Footer)
// A record: varint id size, id, varint flags (kHas* bits; the account
// state from bit 5), [varint jurisdiction index], [zigzag birth year,
// month, day], varint revision, [preferences], [notices], [exclusions]
// (each list a varint count, then its entries; see snapshot_format.cc).
// A slot: 0 when empty, else the top 24 bits of the id's IdHash above the
// record's file offset (40 bits); linear probing from IdHash's low bits.
#ifndef CONSENT_CORE_SNAPSHOT_FORMAT_H_
#define CONSENT_CORE_SNAPSHOT_FORMAT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/subject_view.h"

namespace consent::snapshot {

inline constexpr absl::string_view kMagic = "CRSNAP01";
inline constexpr uint32_t kFormatVersion = 1;
inline constexpr size_t kFooterSize = 128;
// Footer flags.
inline constexpr uint32_t kPseudonymized = 1;

// A portable 64-bit hash of a user id: the same in every process and on
// every (little-endian) machine, unlike absl::Hash, which is seeded.
uint64_t IdHash(absl::string_view id);

// What a snapshot says about itself.
struct SnapshotInfo {
  // Every write up to this revision, and none after it.
  int64_t revision = 0;
  absl::Time create_time = absl::UnixEpoch();
  // The consent.v1.Policy in force, in text format.
  std::string policy_text;
  // User ids are keyed hashes (docs/offline.md, "Pseudonymized snapshots").
  bool pseudonymized = false;
  int64_t subjects = 0;
  int64_t exclusions = 0;
};

// One exclusion of a subject: the content it excludes, and for which purpose.
struct Exclusion {
  std::string content_id;
  std::string purpose;
};

// Builds a snapshot, handing its bytes to `sink` in order, in pieces of
// about kChunk bytes; the sink's first error stops the writer. Not thread
// safe. Memory: 16 bytes per subject for the table, until Finish.
class SnapshotWriter {
 public:
  static constexpr size_t kChunk = 1 << 20;
  using Sink = std::function<absl::Status(absl::string_view bytes)>;
  explicit SnapshotWriter(Sink sink);

  // Adds a subject: `subject` is its decision view (DecisionView, decoded),
  // `exclusions` all of them. Each user once.
  absl::Status Add(absl::string_view user_id, const SubjectView& subject,
                   std::vector<Exclusion> exclusions);

  // Writes the tables and the footer; `info`'s counts are the writer's.
  // Returns the number of bytes written in all.
  absl::StatusOr<uint64_t> Finish(const SnapshotInfo& info);

 private:
  absl::Status Emit(absl::string_view bytes);
  absl::Status Flush();
  uint32_t PurposeIndex(absl::string_view purpose);
  uint32_t JurisdictionIndex(absl::string_view jurisdiction);

  Sink sink_;
  std::string buffer_;
  absl::Status status_;
  uint64_t offset_ = 0;  // bytes emitted so far, buffer included
  // (IdHash, record offset) of every subject.
  std::vector<std::pair<uint64_t, uint64_t>> entries_;
  int64_t exclusions_ = 0;
  absl::flat_hash_map<std::string, uint32_t> purposes_;
  std::vector<std::string> purpose_names_;
  absl::flat_hash_map<std::string, uint32_t> jurisdictions_;
  std::vector<std::string> jurisdiction_names_;
};

// Reads a snapshot in place. The bytes (the file, trailer excluded) must
// outlive the reader and must not change. Open checks the structure: a
// file that is not a snapshot, or is truncated, is refused; records are
// checked as they are read (bounds), so a damaged file gives errors, never
// a crash; its integrity is the signature's to prove. Thread safe.
class SnapshotReader {
 public:
  // kInvalidArgument when `bytes` is not a snapshot of this format.
  static absl::StatusOr<SnapshotReader> Open(absl::string_view bytes);
  // A reader of nothing (Find finds no one) until assigned one from Open.
  SnapshotReader() = default;

  const SnapshotInfo& info() const { return info_; }

  // The file offset of `user_id`'s record (`hash` is its IdHash), or 0
  // when the snapshot has none.
  uint64_t Find(absl::string_view user_id, uint64_t hash) const;
  // The same, given what Locate(hash) returned: its record is compared
  // first, so the slots are not read again when it is the id's.
  uint64_t Find(absl::string_view user_id, uint64_t hash, uint64_t located) const;
  // For callers that look up many ids at once (consent_offline's
  // batches): Locate reads the slot of `hash` and returns the offset of
  // the record it most likely names (0 when none), Load reads the first
  // two cache lines of the record at such an offset (most records cross
  // into a second). Both are plain reads, so a batch that calls Locate
  // for a group of ids, then Load for each, has each group's reads in
  // flight together. Prefetch hints instead were slower at 10M subjects
  // (offline_bench BM_OfflineCheckMany; docs/performance.md, "Offline
  // decisions"). Neither changes what Find returns.
  uint64_t Locate(uint64_t hash) const;
  void Load(uint64_t offset) const;

  // Scratch space for Decode: the views it returns point into it (and
  // into the file) until its next use.
  struct Scratch {
    std::vector<PreferenceView> preferences;
    std::vector<NoticeView> notices;
    std::vector<std::string> excluded;
  };
  // The decision view of the record at `offset` (from Find), and in
  // `scratch->excluded` the purposes for which it excludes `content_id`.
  // kDataLoss when the record is damaged.
  absl::Status Decode(uint64_t offset, absl::string_view content_id, Scratch* scratch,
                      SubjectView* view) const;
  // The same, with every exclusion of the record in `exclusions`.
  absl::Status DecodeAll(uint64_t offset, Scratch* scratch, SubjectView* view,
                         std::vector<Exclusion>* exclusions) const;

  // Every record's user id and view, in file order (a full read: for
  // tests and tools). Stops at the first error of `visit`.
  absl::Status ForEach(
      const std::function<absl::Status(absl::string_view user_id, const SubjectView& view,
                                       absl::Span<const Exclusion> exclusions)>& visit) const;

 private:
  absl::Status DecodeAt(uint64_t offset, absl::string_view* user_id, absl::string_view content_id,
                        Scratch* scratch, SubjectView* view, std::vector<Exclusion>* all_exclusions,
                        uint64_t* end) const;

  absl::string_view bytes_;
  SnapshotInfo info_;
  uint64_t records_begin_ = 0, records_end_ = 0;
  const uint64_t* slots_ = nullptr;
  uint64_t mask_ = 0;
  std::vector<std::string> purposes_;
  std::vector<std::string> jurisdictions_;
};

}  // namespace consent::snapshot

#endif  // CONSENT_CORE_SNAPSHOT_FORMAT_H_
