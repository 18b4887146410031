// What decisions read of a subject's record (ConsentStore::GetSubjects), as
// plain structs instead of protobuf messages: a batch check reads one per
// item, and parsing each into a v1::Subject on an arena cost about 15% of
// consentd's CPU under BatchCheck (docs/performance.md).
#ifndef CONSENT_CORE_SUBJECT_VIEW_H_
#define CONSENT_CORE_SUBJECT_VIEW_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <type_traits>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "consent/v1/types.pb.h"

namespace consent {

// A v1::Date's fields.
struct DateView {
  int32_t year = 0;
  int32_t month = 0;
  int32_t day = 0;
};

// A v1::Preference's decision fields.
struct PreferenceView {
  absl::string_view purpose;
  // The enum's number as stored (proto3 enums are open: it may be one this
  // build does not name).
  v1::PreferenceState state = v1::PREFERENCE_STATE_UNSPECIFIED;
  // Unset: the bound is open.
  std::optional<absl::Time> effective_time;
  std::optional<absl::Time> expire_time;
  int64_t revision = 0;
};

// One purpose a delivered notice covers (a v1::NoticeDelivery gives one per
// purpose it lists).
struct NoticeView {
  absl::string_view purpose;
  absl::Time delivery_time;
  // Empty in the subject index's compact view (kCompactNoticesField),
  // which keeps only what decisions read.
  absl::string_view notice_id;
  absl::string_view notice_version;
};

// A v1::Subject's decision fields: attributes, preferences, notices,
// exclusion count, revision.
struct SubjectView {
  absl::string_view jurisdiction;
  std::optional<DateView> birth_date;
  v1::AccountState account_state = v1::ACCOUNT_STATE_UNSPECIFIED;
  absl::Span<const PreferenceView> preferences;
  absl::Span<const NoticeView> notices;
  int64_t exclusion_count = 0;
  int64_t revision = 0;
};

// Views live in blocks that are freed without running destructors.
static_assert(std::is_trivially_destructible_v<PreferenceView>);
static_assert(std::is_trivially_destructible_v<NoticeView>);
static_assert(std::is_trivially_destructible_v<SubjectView>);

// The field of v1::Subject (reserved there, never stored on disk) in which
// the subject index's decision view keeps the notices compactly: packed
// varints, pairs of (PurposeNumber of a covered purpose, the earliest
// delivery of a notice covering it in Unix seconds): 9 bytes for a subject
// notified of one purpose, the field's tag and length and one pair.
inline constexpr uint32_t kCompactNoticesField = 100;

// Process-wide numbers for purpose names, for the compact notices: a
// number is one byte where a name is a dozen. Assigned on first use, in
// memory only (never written to disk: another process numbers otherwise).
// Thread safe. Returns kNoPurposeNumber once kMaxPurposeNumbers names have
// numbers; the caller keeps the name instead.
inline constexpr uint32_t kMaxPurposeNumbers = 1 << 16;
inline constexpr uint32_t kNoPurposeNumber = ~uint32_t{0};
uint32_t PurposeNumber(absl::string_view purpose);
// The name of a number PurposeNumber gave; nullopt for any other number.
// Lock free. The name lives as long as the process.
std::optional<absl::string_view> PurposeName(uint32_t number);

// The part of a subject record that decisions read (the subject index's
// entries, a snapshot's records): attributes, preferences without their
// source and update time, each covered purpose's earliest notice delivery
// in whole seconds rounded up (kCompactNoticesField), the exclusion count
// and the revision. Serialized as a Subject; SubjectViewArena::Decode
// reads it. Uses PurposeNumber: the bytes are for this process only.
std::string DecisionView(const v1::Subject& subject);
// The same bytes, appended to `*out` (one buffer for many views).
void AppendDecisionView(const v1::Subject& subject, std::string* out);

// Owns views and everything they point to (strings, preferences), in a few
// blocks: a batch's views cost no allocation each. Views live as long as
// their arena. Not thread safe.
class SubjectViewArena {
 public:
  SubjectViewArena() = default;
  SubjectViewArena(const SubjectViewArena&) = delete;
  SubjectViewArena& operator=(const SubjectViewArena&) = delete;

  // The view of a serialized v1::Subject (its decision fields; the others
  // are skipped), or null when `bytes` is not a well-formed message.
  // Fields read as protobuf reads them: a later occurrence of a scalar
  // wins, one of a message merges into it, a field with an unexpected wire
  // type is skipped as unknown. Unlike protobuf, strings are not checked
  // for valid UTF-8 (the store wrote them), and groups are rejected.
  const SubjectView* Decode(absl::string_view bytes);

  // The view of `subject` (copies what it needs).
  const SubjectView* Add(const v1::Subject& subject);

 private:
  // `size` bytes, aligned for a view.
  static constexpr size_t kAlign = alignof(SubjectView);
  static_assert(alignof(PreferenceView) <= kAlign && alignof(NoticeView) <= kAlign &&
                (kAlign & (kAlign - 1)) == 0 && sizeof(PreferenceView) % kAlign == 0);
  void* Allocate(size_t size);

  std::vector<std::unique_ptr<char[]>> blocks_;
  char* next_ = nullptr;
  size_t left_ = 0;
  size_t block_size_ = 0;                    // of the newest block
  std::vector<PreferenceView> preferences_;  // Decode's, until copied
  std::vector<NoticeView> notices_;          // Decode's, until copied
};

}  // namespace consent

#endif  // CONSENT_CORE_SUBJECT_VIEW_H_
