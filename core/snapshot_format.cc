#include "core/snapshot_format.h"

#include <algorithm>
#include <cstring>
#include <tuple>

#include "absl/base/internal/endian.h"
#include "absl/numeric/int128.h"
#include "absl/strings/str_cat.h"
#include "core/varint.h"
#include "google/protobuf/io/coded_stream.h"

namespace consent::snapshot {
namespace {

// Record flags.
constexpr uint64_t kHasJurisdiction = 1;
constexpr uint64_t kHasBirthDate = 2;
constexpr uint64_t kHasPreferences = 4;
constexpr uint64_t kHasNotices = 8;
constexpr uint64_t kHasExclusions = 16;
constexpr int kAccountStateShift = 5;
// Preference bounds.
constexpr uint8_t kHasEffective = 1;
constexpr uint8_t kHasExpire = 2;

constexpr int kOffsetBits = 40;
constexpr uint64_t kOffsetMask = (uint64_t{1} << kOffsetBits) - 1;

uint64_t Mix(uint64_t a, uint64_t b) {
  const absl::uint128 r = absl::uint128(a) * b;
  return absl::Uint128Low64(r) ^ absl::Uint128High64(r);
}

void PutVarint(std::string* out, uint64_t v) {
  uint8_t buffer[10];
  const uint8_t* end = google::protobuf::io::CodedOutputStream::WriteVarint64ToArray(v, buffer);
  out->append(reinterpret_cast<const char*>(buffer), end - buffer);
}
uint64_t ZigZag(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
int64_t UnZigZag(uint64_t v) { return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1); }
void PutString(std::string* out, absl::string_view s) {
  PutVarint(out, s.size());
  out->append(s.data(), s.size());
}
void PutTime(std::string* out, absl::Time t) {
  const int64_t seconds = absl::ToUnixSeconds(t);  // rounds toward the past
  PutVarint(out, ZigZag(seconds));
  PutVarint(out,
            static_cast<uint64_t>((t - absl::FromUnixSeconds(seconds)) / absl::Nanoseconds(1)));
}
void Put64(std::string* out, uint64_t v) {
  char b[8];
  absl::little_endian::Store64(b, v);
  out->append(b, 8);
}

// Reads what PutVarint and friends wrote, never past `end`; `ok` turns false
// (and stays so) on overrun.
class Cursor {
 public:
  Cursor(const char* p, const char* end) : p_(p), end_(end) {}
  bool ok() const { return ok_; }
  const char* position() const { return p_; }
  uint64_t Varint() {
    uint64_t v;
    return ReadVarint(&p_, end_, &v) ? v : Fail();
  }
  uint8_t Byte() {
    if (p_ == end_) return static_cast<uint8_t>(Fail());
    return static_cast<uint8_t>(*p_++);
  }
  absl::string_view String() {
    const uint64_t size = Varint();
    if (!ok_ || size > static_cast<uint64_t>(end_ - p_)) {
      Fail();
      return {};
    }
    absl::string_view s(p_, size);
    p_ += size;
    return s;
  }
  absl::Time Time() {
    const int64_t seconds = UnZigZag(Varint());
    const uint64_t nanos = Varint();
    if (nanos >= 1'000'000'000) Fail();
    return absl::FromUnixSeconds(seconds) + absl::Nanoseconds(static_cast<int64_t>(nanos));
  }

 private:
  uint64_t Fail() {
    ok_ = false;
    p_ = end_;
    return 0;
  }
  const char* p_;
  const char* end_;
  bool ok_ = true;
};

// a == b, for ids: those of 8 to 16 bytes (most) compared as two
// overlapping words, in bounds of both, instead of through a call to
// memcmp (offline_bench BM_OfflineCheckMany before and after:
// docs/performance.md, "Offline decisions").
bool SameId(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  if (a.size() < 8 || a.size() > 16) return a == b;
  const size_t last = a.size() - 8;
  return absl::little_endian::Load64(a.data()) == absl::little_endian::Load64(b.data()) &&
         absl::little_endian::Load64(a.data() + last) ==
             absl::little_endian::Load64(b.data() + last);
}

absl::Status Damaged(uint64_t offset) {
  return absl::DataLossError(absl::StrCat("snapshot record at offset ", offset, " is damaged"));
}

// A table of names: varint count, then each as a string.
std::string EncodeNames(const std::vector<std::string>& names) {
  std::string out;
  PutVarint(&out, names.size());
  for (const std::string& name : names) PutString(&out, name);
  return out;
}
bool DecodeNames(absl::string_view bytes, std::vector<std::string>* names) {
  Cursor c(bytes.data(), bytes.data() + bytes.size());
  const uint64_t n = c.Varint();
  if (!c.ok() || n > bytes.size()) return false;
  names->reserve(n);
  for (uint64_t i = 0; i < n; ++i) names->emplace_back(c.String());
  return c.ok() && c.position() == bytes.data() + bytes.size();
}

}  // namespace

uint64_t IdHash(absl::string_view id) {
  constexpr uint64_t k0 = 0xa0761d6478bd642f, k1 = 0xe7037ed1a0b428db, k2 = 0x8ebc6af09c88c6e3;
  const char* p = id.data();
  size_t left = id.size();
  uint64_t h = Mix(k0 ^ id.size(), k1);
  for (; left >= 8; left -= 8, p += 8) h = Mix(h ^ absl::little_endian::Load64(p), k2);
  uint64_t tail = 0;
  for (size_t i = 0; i < left; ++i)
    tail |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return Mix(Mix(h ^ tail, k1), k2 ^ id.size());
}

SnapshotWriter::SnapshotWriter(Sink sink) : sink_(std::move(sink)) {
  buffer_.reserve(kChunk + 4096);
  buffer_.append(kMagic.data(), kMagic.size());
  offset_ = kMagic.size();
}

uint32_t SnapshotWriter::PurposeIndex(absl::string_view purpose) {
  auto [it, added] = purposes_.try_emplace(purpose, purpose_names_.size());
  if (added) purpose_names_.emplace_back(purpose);
  return it->second;
}

uint32_t SnapshotWriter::JurisdictionIndex(absl::string_view jurisdiction) {
  auto [it, added] = jurisdictions_.try_emplace(jurisdiction, jurisdiction_names_.size());
  if (added) jurisdiction_names_.emplace_back(jurisdiction);
  return it->second;
}

absl::Status SnapshotWriter::Flush() {
  if (status_.ok() && !buffer_.empty()) status_ = sink_(buffer_);
  buffer_.clear();
  return status_;
}

absl::Status SnapshotWriter::Emit(absl::string_view bytes) {
  buffer_.append(bytes.data(), bytes.size());
  offset_ += bytes.size();
  if (buffer_.size() >= kChunk) return Flush();
  return status_;
}

absl::Status SnapshotWriter::Add(absl::string_view user_id, const SubjectView& subject,
                                 std::vector<Exclusion> exclusions) {
  if (!status_.ok()) return status_;
  if (offset_ > kOffsetMask) {
    return absl::ResourceExhaustedError("a snapshot holds at most 1 TiB of records");
  }
  entries_.emplace_back(IdHash(user_id), offset_);
  std::string record;
  PutString(&record, user_id);
  uint64_t flags = static_cast<uint64_t>(subject.account_state) << kAccountStateShift;
  if (!subject.jurisdiction.empty()) flags |= kHasJurisdiction;
  if (subject.birth_date) flags |= kHasBirthDate;
  if (!subject.preferences.empty()) flags |= kHasPreferences;
  if (!subject.notices.empty()) flags |= kHasNotices;
  if (!exclusions.empty()) flags |= kHasExclusions;
  PutVarint(&record, flags);
  if (flags & kHasJurisdiction) PutVarint(&record, JurisdictionIndex(subject.jurisdiction));
  if (flags & kHasBirthDate) {
    PutVarint(&record, ZigZag(subject.birth_date->year));
    PutVarint(&record, ZigZag(subject.birth_date->month));
    PutVarint(&record, ZigZag(subject.birth_date->day));
  }
  PutVarint(&record, static_cast<uint64_t>(subject.revision));
  if (flags & kHasPreferences) {
    PutVarint(&record, subject.preferences.size());
    for (const PreferenceView& p : subject.preferences) {
      PutVarint(&record, PurposeIndex(p.purpose));
      PutVarint(&record, static_cast<uint64_t>(p.state));
      record.push_back(static_cast<char>((p.effective_time ? kHasEffective : 0) |
                                         (p.expire_time ? kHasExpire : 0)));
      if (p.effective_time) PutTime(&record, *p.effective_time);
      if (p.expire_time) PutTime(&record, *p.expire_time);
      PutVarint(&record, static_cast<uint64_t>(p.revision));
    }
  }
  if (flags & kHasNotices) {
    PutVarint(&record, subject.notices.size());
    for (const NoticeView& n : subject.notices) {
      PutVarint(&record, PurposeIndex(n.purpose));
      PutTime(&record, n.delivery_time);
    }
  }
  if (flags & kHasExclusions) {
    // Sorted, so a check finds a content item's exclusions together.
    std::sort(exclusions.begin(), exclusions.end(), [](const Exclusion& a, const Exclusion& b) {
      return std::tie(a.content_id, a.purpose) < std::tie(b.content_id, b.purpose);
    });
    PutVarint(&record, exclusions.size());
    for (const Exclusion& e : exclusions) {
      PutString(&record, e.content_id);
      PutVarint(&record, PurposeIndex(e.purpose));
    }
    exclusions_ += static_cast<int64_t>(exclusions.size());
  }
  return Emit(record);
}

absl::StatusOr<uint64_t> SnapshotWriter::Finish(const SnapshotInfo& info) {
  if (!status_.ok()) return status_;
  const uint64_t subjects = entries_.size();
  const uint64_t records_end = offset_;
  const uint64_t purposes_offset = offset_;
  const std::string purposes = EncodeNames(purpose_names_);
  if (absl::Status s = Emit(purposes); !s.ok()) return s;
  const uint64_t jurisdictions_offset = offset_;
  const std::string jurisdictions = EncodeNames(jurisdiction_names_);
  if (absl::Status s = Emit(jurisdictions); !s.ok()) return s;
  const uint64_t policy_offset = offset_;
  if (absl::Status s = Emit(info.policy_text); !s.ok()) return s;
  if (offset_ % 8 != 0) {
    if (absl::Status s = Emit(std::string(8 - offset_ % 8, '\0')); !s.ok()) return s;
  }
  // At most 3/4 full, so a lookup probes about 2.5 slots when the id is
  // absent and 1.5 when present (linear probing).
  uint64_t slots = 8;
  while (slots * 3 < entries_.size() * 4) slots *= 2;
  const uint64_t table_offset = offset_;
  {
    std::vector<uint64_t> table(slots, 0);
    for (const auto& [hash, offset] : entries_) {
      uint64_t i = hash & (slots - 1);
      while (table[i] != 0) i = (i + 1) & (slots - 1);
      table[i] = ((hash >> kOffsetBits) << kOffsetBits) | offset;
    }
    entries_.clear();
    entries_.shrink_to_fit();
    std::string bytes;
    bytes.reserve(kChunk);
    for (uint64_t slot : table) {
      Put64(&bytes, slot);
      if (bytes.size() >= kChunk) {
        if (absl::Status s = Emit(bytes); !s.ok()) return s;
        bytes.clear();
      }
    }
    if (absl::Status s = Emit(bytes); !s.ok()) return s;
  }
  std::string footer(kMagic);
  char word[4];
  absl::little_endian::Store32(word, kFormatVersion);
  footer.append(word, 4);
  absl::little_endian::Store32(word, info.pseudonymized ? kPseudonymized : 0);
  footer.append(word, 4);
  Put64(&footer, static_cast<uint64_t>(info.revision));
  Put64(&footer, static_cast<uint64_t>(absl::ToUnixNanos(info.create_time)));
  Put64(&footer, subjects);
  Put64(&footer, static_cast<uint64_t>(exclusions_));
  for (uint64_t v :
       {uint64_t{kMagic.size()}, records_end, purposes_offset, uint64_t{purposes.size()},
        jurisdictions_offset, uint64_t{jurisdictions.size()}, policy_offset,
        uint64_t{info.policy_text.size()}, table_offset, slots}) {
    Put64(&footer, v);
  }
  footer.resize(kFooterSize, '\0');
  if (absl::Status s = Emit(footer); !s.ok()) return s;
  if (absl::Status s = Flush(); !s.ok()) return s;
  return offset_;
}

absl::StatusOr<SnapshotReader> SnapshotReader::Open(absl::string_view bytes) {
  auto bad = [](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("not a registry snapshot: ", why));
  };
  if (bytes.size() < kMagic.size() + kFooterSize || bytes.substr(0, kMagic.size()) != kMagic) {
    return bad("no snapshot header");
  }
  const char* f = bytes.data() + bytes.size() - kFooterSize;
  if (absl::string_view(f, kMagic.size()) != kMagic) return bad("no footer (truncated?)");
  const uint32_t version = absl::little_endian::Load32(f + 8);
  if (version != kFormatVersion) {
    return bad(absl::StrCat("format version ", version, ", this build reads ", kFormatVersion));
  }
  SnapshotReader r;
  r.bytes_ = bytes;
  auto word = [f](int i) { return absl::little_endian::Load64(f + 16 + 8 * i); };
  r.info_.pseudonymized = (absl::little_endian::Load32(f + 12) & kPseudonymized) != 0;
  r.info_.revision = static_cast<int64_t>(word(0));
  r.info_.create_time = absl::FromUnixNanos(static_cast<int64_t>(word(1)));
  r.info_.exclusions = static_cast<int64_t>(word(3));
  r.records_begin_ = word(4);
  r.records_end_ = word(5);
  const uint64_t purposes_offset = word(6), purposes_size = word(7);
  const uint64_t jurisdictions_offset = word(8), jurisdictions_size = word(9);
  const uint64_t policy_offset = word(10), policy_size = word(11);
  const uint64_t table_offset = word(12), slots = word(13);
  const uint64_t footer_offset = bytes.size() - kFooterSize;
  auto within = [footer_offset](uint64_t offset, uint64_t size) {
    return offset <= footer_offset && size <= footer_offset - offset;
  };
  if (r.records_begin_ != kMagic.size() || r.records_end_ < r.records_begin_ ||
      !within(purposes_offset, purposes_size) ||
      !within(jurisdictions_offset, jurisdictions_size) || !within(policy_offset, policy_size) ||
      slots == 0 || (slots & (slots - 1)) != 0 || slots > footer_offset / 8 ||
      table_offset % 8 != 0 || !within(table_offset, slots * 8) ||
      table_offset + slots * 8 != footer_offset || r.records_end_ > purposes_offset) {
    return bad("inconsistent footer");
  }
  if (!DecodeNames(bytes.substr(purposes_offset, purposes_size), &r.purposes_) ||
      !DecodeNames(bytes.substr(jurisdictions_offset, jurisdictions_size), &r.jurisdictions_)) {
    return bad("damaged name tables");
  }
  r.info_.policy_text = std::string(bytes.substr(policy_offset, policy_size));
  if (reinterpret_cast<uintptr_t>(bytes.data() + table_offset) % alignof(uint64_t) != 0) {
    return bad("slot table not aligned in memory");
  }
  r.slots_ = reinterpret_cast<const uint64_t*>(bytes.data() + table_offset);
  r.mask_ = slots - 1;
  r.info_.subjects = static_cast<int64_t>(word(2));
  return r;
}

uint64_t SnapshotReader::Find(absl::string_view user_id, uint64_t hash) const {
  if (slots_ == nullptr) return 0;
  const uint64_t tag = hash >> kOffsetBits;
  // At most every slot once: a damaged table may have no empty one.
  for (uint64_t i = hash & mask_, probes = 0; probes <= mask_; i = (i + 1) & mask_, ++probes) {
    const uint64_t slot = absl::little_endian::ToHost64(slots_[i]);
    if (slot == 0) return 0;
    if ((slot >> kOffsetBits) != tag) continue;
    const uint64_t offset = slot & kOffsetMask;
    if (offset < records_begin_ || offset >= records_end_) continue;  // damaged: never matches
    Cursor c(bytes_.data() + offset, bytes_.data() + records_end_);
    if (SameId(c.String(), user_id) && c.ok()) return offset;
  }
  return 0;
}

uint64_t SnapshotReader::Find(absl::string_view user_id, uint64_t hash, uint64_t located) const {
  if (located >= records_begin_ && located < records_end_) {
    Cursor c(bytes_.data() + located, bytes_.data() + records_end_);
    if (SameId(c.String(), user_id) && c.ok()) return located;
  }
  return Find(user_id, hash);
}

uint64_t SnapshotReader::Locate(uint64_t hash) const {
  if (slots_ == nullptr) return 0;
  const uint64_t tag = hash >> kOffsetBits;
  for (uint64_t j = hash & mask_, probes = 0; probes <= mask_; j = (j + 1) & mask_, ++probes) {
    const uint64_t slot = absl::little_endian::ToHost64(slots_[j]);
    if (slot == 0) return 0;
    if ((slot >> kOffsetBits) == tag) {
      const uint64_t offset = slot & kOffsetMask;
      return offset >= records_begin_ && offset < records_end_ ? offset : 0;
    }
  }
  return 0;
}

void SnapshotReader::Load(uint64_t offset) const {
  if (offset < records_begin_ || offset >= records_end_) return;
  const char* first = bytes_.data() + offset;
  const char* second = bytes_.data() + std::min(offset + 63, records_end_ - 1);
  // Reads the compiler must keep, though nothing uses their values.
  char a = *first, b = *second;
  asm volatile("" : : "r"(a), "r"(b));
}

absl::Status SnapshotReader::DecodeAt(uint64_t offset, absl::string_view* user_id,
                                      absl::string_view content_id, Scratch* scratch,
                                      SubjectView* view, std::vector<Exclusion>* all_exclusions,
                                      uint64_t* end) const {
  Cursor c(bytes_.data() + offset, bytes_.data() + records_end_);
  *user_id = c.String();
  const uint64_t flags = c.Varint();
  // Field by field: `*view = SubjectView{}` compiles to a `rep stos`,
  // slow to start (offline_bench BM_OfflineCheckMany before and after:
  // docs/performance.md, "Offline decisions").
  view->jurisdiction = {};
  view->birth_date.reset();
  view->exclusion_count = 0;
  view->account_state = static_cast<v1::AccountState>(flags >> kAccountStateShift);
  if (flags & kHasJurisdiction) {
    const uint64_t j = c.Varint();
    if (j >= jurisdictions_.size()) return Damaged(offset);
    view->jurisdiction = jurisdictions_[j];
  }
  if (flags & kHasBirthDate) {
    DateView date;
    date.year = static_cast<int32_t>(UnZigZag(c.Varint()));
    date.month = static_cast<int32_t>(UnZigZag(c.Varint()));
    date.day = static_cast<int32_t>(UnZigZag(c.Varint()));
    view->birth_date = date;
  }
  view->revision = static_cast<int64_t>(c.Varint());
  auto purpose = [&](absl::string_view* out) {
    const uint64_t p = c.Varint();
    if (p >= purposes_.size()) return false;
    *out = purposes_[p];
    return true;
  };
  scratch->preferences.clear();
  scratch->notices.clear();
  scratch->excluded.clear();
  if (flags & kHasPreferences) {
    const uint64_t n = c.Varint();
    if (n > records_end_) return Damaged(offset);
    for (uint64_t i = 0; i < n && c.ok(); ++i) {
      PreferenceView& p = scratch->preferences.emplace_back();
      if (!purpose(&p.purpose)) return Damaged(offset);
      p.state = static_cast<v1::PreferenceState>(c.Varint());
      const uint8_t bounds = c.Byte();
      if (bounds & kHasEffective) p.effective_time = c.Time();
      if (bounds & kHasExpire) p.expire_time = c.Time();
      p.revision = static_cast<int64_t>(c.Varint());
    }
  }
  if (flags & kHasNotices) {
    const uint64_t n = c.Varint();
    if (n > records_end_) return Damaged(offset);
    for (uint64_t i = 0; i < n && c.ok(); ++i) {
      NoticeView& notice = scratch->notices.emplace_back();
      if (!purpose(&notice.purpose)) return Damaged(offset);
      notice.delivery_time = c.Time();
    }
  }
  if (flags & kHasExclusions) {
    const uint64_t n = c.Varint();
    if (n > records_end_) return Damaged(offset);
    view->exclusion_count = static_cast<int64_t>(n);
    for (uint64_t i = 0; i < n && c.ok(); ++i) {
      const absl::string_view content = c.String();
      absl::string_view name;
      if (!purpose(&name)) return Damaged(offset);
      if (all_exclusions != nullptr) {
        all_exclusions->push_back({std::string(content), std::string(name)});
      } else if (content == content_id) {
        scratch->excluded.emplace_back(name);
      }
    }
  }
  if (!c.ok()) return Damaged(offset);
  view->preferences = scratch->preferences;
  view->notices = scratch->notices;
  *end = static_cast<uint64_t>(c.position() - bytes_.data());
  return absl::OkStatus();
}

absl::Status SnapshotReader::Decode(uint64_t offset, absl::string_view content_id, Scratch* scratch,
                                    SubjectView* view) const {
  absl::string_view user_id;
  uint64_t end;
  return DecodeAt(offset, &user_id, content_id, scratch, view, nullptr, &end);
}

absl::Status SnapshotReader::DecodeAll(uint64_t offset, Scratch* scratch, SubjectView* view,
                                       std::vector<Exclusion>* exclusions) const {
  absl::string_view user_id;
  uint64_t end;
  return DecodeAt(offset, &user_id, "", scratch, view, exclusions, &end);
}

absl::Status SnapshotReader::ForEach(
    const std::function<absl::Status(absl::string_view user_id, const SubjectView& view,
                                     absl::Span<const Exclusion> exclusions)>& visit) const {
  Scratch scratch;
  std::vector<Exclusion> exclusions;
  for (uint64_t offset = records_begin_; offset < records_end_;) {
    absl::string_view user_id;
    SubjectView view;
    exclusions.clear();
    if (absl::Status s = DecodeAt(offset, &user_id, "", &scratch, &view, &exclusions, &offset);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = visit(user_id, view, exclusions); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace consent::snapshot
