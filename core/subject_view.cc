#include "core/subject_view.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>

#include "absl/container/inlined_vector.h"
#include "absl/container/node_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "core/proto_time.h"
#include "core/varint.h"
#include "google/protobuf/io/coded_stream.h"

namespace consent {
namespace {

// Protobuf's wire format (protobuf.dev/programming-guides/encoding).
enum WireType : int {
  kVarint = 0,
  kFixed64 = 1,
  kLengthDelimited = 2,
  kStartGroup = 3,
  kEndGroup = 4,
  kFixed32 = 5,
};

// Reads one message's fields from its bytes.
class WireReader {
 public:
  explicit WireReader(absl::string_view bytes)
      : p_(bytes.data()), end_(bytes.data() + bytes.size()) {}

  bool done() const { return p_ == end_; }

  bool Varint(uint64_t* value) { return ReadVarint(&p_, end_, value); }

  // The next field's number and wire type. As protobuf reads a tag: at
  // most 5 bytes, the value's low 32 bits.
  bool Tag(uint32_t* field, int* wire_type) {
    uint32_t tag = 0;
    for (int i = 0;; ++i) {
      if (i == 5 || p_ == end_) return false;
      const uint8_t byte = static_cast<uint8_t>(*p_++);
      tag |= static_cast<uint32_t>(byte & 0x7fu) << (7 * i);
      if ((byte & 0x80u) == 0) break;
    }
    if ((tag >> 3) == 0) return false;
    *field = tag >> 3;
    *wire_type = static_cast<int>(tag & 7);
    return true;
  }

  bool LengthDelimited(absl::string_view* bytes) {
    uint64_t size;
    if (!Varint(&size) || size > static_cast<uint64_t>(end_ - p_)) return false;
    *bytes = absl::string_view(p_, size);
    p_ += size;
    return true;
  }

  // Skips a field that is not read (after its tag). `depth` bounds nested
  // groups.
  bool Skip(uint32_t field, int wire_type, int depth = 0) {
    switch (wire_type) {
      case kVarint: {
        uint64_t ignored;
        return Varint(&ignored);
      }
      case kFixed64:
        return Advance(8);
      case kLengthDelimited: {
        absl::string_view ignored;
        return LengthDelimited(&ignored);
      }
      case kFixed32:
        return Advance(4);
      case kStartGroup: {
        if (depth >= kMaxDepth) return false;
        for (;;) {
          uint32_t inner;
          int inner_type;
          if (!Tag(&inner, &inner_type)) return false;
          if (inner_type == kEndGroup) return inner == field;
          if (!Skip(inner, inner_type, depth + 1)) return false;
        }
      }
      default:  // an end group without its start, or no wire type at all
        return false;
    }
  }

 private:
  static constexpr int kMaxDepth = 100;  // as protobuf's parser
  bool Advance(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) return false;
    p_ += n;
    return true;
  }

  const char* p_;
  const char* end_;
};

// Reads a message's fields: `read(field, wire_type, reader)` consumes the
// field and returns true, or returns false without consuming it (not one
// it reads: skipped as unknown). Fails on malformed bytes.
template <typename ReadField>
bool ForEachField(absl::string_view bytes, ReadField read) {
  WireReader reader(bytes);
  while (!reader.done()) {
    uint32_t field;
    int wire_type;
    if (!reader.Tag(&field, &wire_type)) return false;
    bool ok = true;
    if (!read(field, wire_type, reader, &ok)) ok = reader.Skip(field, wire_type);
    if (!ok) return false;
  }
  return true;
}

// A google.protobuf.Timestamp being read: fields of several occurrences
// merge, so the time is made once all are read.
struct TimestampFields {
  static constexpr uint32_t kSeconds = google::protobuf::Timestamp::kSecondsFieldNumber;
  static constexpr uint32_t kNanos = google::protobuf::Timestamp::kNanosFieldNumber;
  bool present = false;
  int64_t seconds = 0;
  int32_t nanos = 0;

  bool Merge(absl::string_view bytes) {
    present = true;
    return ForEachField(bytes, [this](uint32_t field, int type, WireReader& r, bool* ok) {
      uint64_t v = 0;
      if (type != kVarint || (field != kSeconds && field != kNanos)) return false;
      *ok = r.Varint(&v);
      if (field == kSeconds) {
        seconds = static_cast<int64_t>(v);
      } else {
        nanos = static_cast<int32_t>(v);
      }
      return true;
    });
  }
  std::optional<absl::Time> time() const {
    if (!present) return std::nullopt;
    return TimeOf(seconds, nanos);
  }
};

bool MergeDate(absl::string_view bytes, DateView* date) {
  return ForEachField(bytes, [date](uint32_t field, int type, WireReader& r, bool* ok) {
    int32_t* target = field == v1::Date::kYearFieldNumber    ? &date->year
                      : field == v1::Date::kMonthFieldNumber ? &date->month
                      : field == v1::Date::kDayFieldNumber   ? &date->day
                                                             : nullptr;
    if (type != kVarint || target == nullptr) return false;
    uint64_t v = 0;
    *ok = r.Varint(&v);
    *target = static_cast<int32_t>(v);
    return true;
  });
}

bool MergeAttributes(absl::string_view bytes, SubjectView* view) {
  using A = v1::SubjectAttributes;
  return ForEachField(bytes, [view](uint32_t field, int type, WireReader& r, bool* ok) {
    if (field == A::kJurisdictionFieldNumber && type == kLengthDelimited) {
      *ok = r.LengthDelimited(&view->jurisdiction);
    } else if (field == A::kBirthDateFieldNumber && type == kLengthDelimited) {
      absl::string_view date;
      if (!view->birth_date) view->birth_date.emplace();
      *ok = r.LengthDelimited(&date) && MergeDate(date, &*view->birth_date);
    } else if (field == A::kAccountStateFieldNumber && type == kVarint) {
      uint64_t v = 0;
      *ok = r.Varint(&v);
      view->account_state = static_cast<v1::AccountState>(static_cast<int32_t>(v));
    } else {
      return false;
    }
    return true;
  });
}

bool ReadPreference(absl::string_view bytes, PreferenceView* preference) {
  using P = v1::Preference;
  TimestampFields effective, expire;
  const bool ok = ForEachField(bytes, [&](uint32_t field, int type, WireReader& r, bool* field_ok) {
    absl::string_view nested;
    uint64_t v = 0;
    if (field == P::kPurposeFieldNumber && type == kLengthDelimited) {
      *field_ok = r.LengthDelimited(&preference->purpose);
    } else if (field == P::kStateFieldNumber && type == kVarint) {
      *field_ok = r.Varint(&v);
      preference->state = static_cast<v1::PreferenceState>(static_cast<int32_t>(v));
    } else if ((field == P::kEffectiveTimeFieldNumber || field == P::kExpireTimeFieldNumber) &&
               type == kLengthDelimited) {
      *field_ok = r.LengthDelimited(&nested) &&
                  (field == P::kEffectiveTimeFieldNumber ? effective : expire).Merge(nested);
    } else if (field == P::kRevisionFieldNumber && type == kVarint) {
      *field_ok = r.Varint(&v);
      preference->revision = static_cast<int64_t>(v);
    } else {
      return false;
    }
    return true;
  });
  preference->effective_time = effective.time();
  preference->expire_time = expire.time();
  return ok;
}

// A v1::NoticeDelivery: one NoticeView per purpose it lists, appended to
// `out`. A delivery without its time never counts (it is taken as
// delivered at the end of time).
bool ReadNotice(absl::string_view bytes, std::vector<NoticeView>* out) {
  using N = v1::NoticeDelivery;
  const size_t first = out->size();
  absl::string_view id, version;
  TimestampFields delivery;
  const bool ok = ForEachField(bytes, [&](uint32_t field, int type, WireReader& r, bool* field_ok) {
    if (type != kLengthDelimited) return false;
    absl::string_view value;
    if (field == N::kNoticeIdFieldNumber) {
      *field_ok = r.LengthDelimited(&id);
    } else if (field == N::kNoticeVersionFieldNumber) {
      *field_ok = r.LengthDelimited(&version);
    } else if (field == N::kPurposesFieldNumber) {
      *field_ok = r.LengthDelimited(&value);
      out->emplace_back().purpose = value;
    } else if (field == N::kDeliveryTimeFieldNumber) {
      *field_ok = r.LengthDelimited(&value) && delivery.Merge(value);
    } else {
      return false;
    }
    return true;
  });
  const absl::Time at = delivery.time().value_or(absl::InfiniteFuture());
  for (size_t i = first; i < out->size(); ++i) {
    NoticeView& n = (*out)[i];
    n.delivery_time = at;
    n.notice_id = id;
    n.notice_version = version;
  }
  return ok;
}

// The subject index's compact notices (kCompactNoticesField).
bool ReadCompactNotices(absl::string_view bytes, std::vector<NoticeView>* out) {
  WireReader r(bytes);
  while (!r.done()) {
    uint64_t number, seconds;
    if (!r.Varint(&number) || !r.Varint(&seconds) || number > kMaxPurposeNumbers) return false;
    std::optional<absl::string_view> name = PurposeName(static_cast<uint32_t>(number));
    if (!name) return false;
    NoticeView& n = out->emplace_back();
    n.purpose = *name;
    n.delivery_time = absl::FromUnixSeconds(static_cast<int64_t>(seconds));
  }
  return true;
}

// PurposeNumber's table: names are added under `mu` and published through
// `size`, so PurposeName reads without a lock. Never destroyed.
struct PurposeTable {
  absl::Mutex mu;
  // A node map: its keys stay where they are, and `names` points at them.
  absl::node_hash_map<std::string, uint32_t> numbers ABSL_GUARDED_BY(mu);
  std::atomic<const std::string*> names[kMaxPurposeNumbers] = {};
  std::atomic<uint32_t> size{0};
};
PurposeTable& Purposes() {
  static PurposeTable* const table = new PurposeTable();
  return *table;
}

}  // namespace

uint32_t PurposeNumber(absl::string_view purpose) {
  PurposeTable& table = Purposes();
  absl::MutexLock lock(&table.mu);
  if (auto it = table.numbers.find(purpose); it != table.numbers.end()) return it->second;
  const uint32_t number = table.size.load(std::memory_order_relaxed);
  if (number >= kMaxPurposeNumbers) return kNoPurposeNumber;
  auto [it, inserted] = table.numbers.emplace(std::string(purpose), number);
  table.names[number].store(&it->first, std::memory_order_release);
  table.size.store(number + 1, std::memory_order_release);
  return number;
}

std::optional<absl::string_view> PurposeName(uint32_t number) {
  PurposeTable& table = Purposes();
  if (number >= table.size.load(std::memory_order_acquire)) return std::nullopt;
  return *table.names[number].load(std::memory_order_acquire);
}

const SubjectView* SubjectViewArena::Decode(absl::string_view bytes) {
  // Decoded in place: copying a finished view through the
  // stack took most of Decode's samples (perf annotate: loads of 16 bytes
  // after stores of 4), and Decode went from 7.5% to 4.8% of consentd's
  // samples under BatchCheck. Strings point into `bytes` until copied.
  SubjectView& view = *new (Allocate(sizeof(SubjectView))) SubjectView();
  preferences_.clear();
  notices_.clear();
  using S = v1::Subject;
  const bool ok = ForEachField(bytes, [&](uint32_t field, int type, WireReader& r, bool* field_ok) {
    absl::string_view nested;
    uint64_t v = 0;
    if (field == S::kAttributesFieldNumber && type == kLengthDelimited) {
      *field_ok = r.LengthDelimited(&nested) && MergeAttributes(nested, &view);
    } else if (field == S::kPreferencesFieldNumber && type == kLengthDelimited) {
      *field_ok =
          r.LengthDelimited(&nested) && ReadPreference(nested, &preferences_.emplace_back());
    } else if (field == S::kNoticesFieldNumber && type == kLengthDelimited) {
      *field_ok = r.LengthDelimited(&nested) && ReadNotice(nested, &notices_);
    } else if (field == kCompactNoticesField && type == kLengthDelimited) {
      *field_ok = r.LengthDelimited(&nested) && ReadCompactNotices(nested, &notices_);
    } else if ((field == S::kExclusionCountFieldNumber || field == S::kRevisionFieldNumber) &&
               type == kVarint) {
      *field_ok = r.Varint(&v);
      (field == S::kExclusionCountFieldNumber ? view.exclusion_count : view.revision) =
          static_cast<int64_t>(v);
    } else {
      return false;
    }
    return true;
  });
  if (!ok) return nullptr;  // its memory stays unused until the arena goes

  // Then the preferences, the notices, then the strings, in one
  // allocation.
  const size_t n = preferences_.size();
  const size_t notices = notices_.size();
  size_t size =
      n * sizeof(PreferenceView) + notices * sizeof(NoticeView) + view.jurisdiction.size();
  for (const PreferenceView& p : preferences_) size += p.purpose.size();
  for (const NoticeView& notice : notices_) {
    size += notice.purpose.size() + notice.notice_id.size() + notice.notice_version.size();
  }
  if (size == 0) return &view;
  char* memory = static_cast<char*>(Allocate(size));
  auto* copied = reinterpret_cast<PreferenceView*>(memory);
  auto* copied_notices = reinterpret_cast<NoticeView*>(memory + n * sizeof(PreferenceView));
  char* chars = memory + n * sizeof(PreferenceView) + notices * sizeof(NoticeView);
  auto copy = [&chars](absl::string_view s) {
    if (s.empty()) return absl::string_view();  // no pointer into the source
    std::memcpy(chars, s.data(), s.size());
    chars += s.size();
    return absl::string_view(chars - s.size(), s.size());
  };
  view.jurisdiction = copy(view.jurisdiction);
  for (size_t i = 0; i < n; ++i) {
    PreferenceView& p = preferences_[i];
    p.purpose = copy(p.purpose);
    new (&copied[i]) PreferenceView(p);
  }
  if (n > 0) view.preferences = absl::MakeConstSpan(copied, n);
  for (size_t i = 0; i < notices; ++i) {
    NoticeView& notice = notices_[i];
    notice.purpose = copy(notice.purpose);
    notice.notice_id = copy(notice.notice_id);
    notice.notice_version = copy(notice.notice_version);
    new (&copied_notices[i]) NoticeView(notice);
  }
  if (notices > 0) view.notices = absl::MakeConstSpan(copied_notices, notices);
  return &view;
}

const SubjectView* SubjectViewArena::Add(const v1::Subject& subject) {
  // One reading of the fields for both: Decode's.
  return Decode(subject.SerializeAsString());
}

void* SubjectViewArena::Allocate(size_t size) {
  // Every allocation a multiple of kAlign, so each starts aligned.
  size = (size + kAlign - 1) & ~(kAlign - 1);
  if (size > left_) {
    // Blocks double from 16 KiB to 1 MiB: a batch of 1,000 takes a few.
    constexpr size_t kFirst = 16 << 10, kLargest = 1 << 20;
    block_size_ = block_size_ == 0 ? kFirst : std::min(kLargest, 2 * block_size_);
    const size_t block = std::max(block_size_, size);
    blocks_.emplace_back(new char[block]);  // not zeroed; new[] aligns for any type
    next_ = blocks_.back().get();
    left_ = block;
  }
  void* p = next_;
  next_ += size;
  left_ -= size;
  return p;
}

void AppendDecisionView(const v1::Subject& subject, std::string* out) {
  // Cleared, not destroyed, between calls: its messages and strings keep
  // their memory, so a view costs no allocation once the thread has built
  // one of its shape.
  thread_local v1::Subject view;
  view.Clear();
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
  view.AppendToString(out);
  if (!packed.empty()) {
    uint8_t buffer[2 * 10];  // two varints of at most 10 bytes
    uint8_t* end = google::protobuf::io::CodedOutputStream::WriteTagToArray(
        (kCompactNoticesField << 3) | kLengthDelimited, buffer);
    end = google::protobuf::io::CodedOutputStream::WriteVarint32ToArray(
        static_cast<uint32_t>(packed.size()), end);
    out->append(reinterpret_cast<const char*>(buffer), end - buffer);
    *out += packed;
  }
}

std::string DecisionView(const v1::Subject& subject) {
  std::string bytes;
  AppendDecisionView(subject, &bytes);
  return bytes;
}

}  // namespace consent
