// The subject record decoder (SubjectViewArena::Decode, written by hand)
// against the generated parser: never a crash, and whenever both accept the
// bytes, the same decision fields.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <tuple>
#include <vector>

#include "consent/v1/types.pb.h"
#include "core/subject_view.h"

namespace {

bool Same(const consent::SubjectView& a, const consent::SubjectView& b) {
  if (a.jurisdiction != b.jurisdiction || a.account_state != b.account_state ||
      a.exclusion_count != b.exclusion_count || a.revision != b.revision ||
      a.birth_date.has_value() != b.birth_date.has_value() ||
      a.preferences.size() != b.preferences.size()) {
    return false;
  }
  if (a.birth_date &&
      (a.birth_date->year != b.birth_date->year || a.birth_date->month != b.birth_date->month ||
       a.birth_date->day != b.birth_date->day)) {
    return false;
  }
  // Notices, as multisets: the generated parser keeps field 100 (the
  // index's compact notices) as an unknown field and writes it last.
  if (a.notices.size() != b.notices.size()) return false;
  auto sorted = [](absl::Span<const consent::NoticeView> notices) {
    std::vector<std::tuple<absl::string_view, absl::Time, absl::string_view, absl::string_view>>
        out;
    for (const auto& n : notices) {
      out.emplace_back(n.purpose, n.delivery_time, n.notice_id, n.notice_version);
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  if (sorted(a.notices) != sorted(b.notices)) return false;
  for (size_t i = 0; i < a.preferences.size(); ++i) {
    const auto& p = a.preferences[i];
    const auto& q = b.preferences[i];
    if (p.purpose != q.purpose || p.state != q.state || p.revision != q.revision ||
        p.effective_time != q.effective_time || p.expire_time != q.expire_time) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  consent::SubjectViewArena arena;
  const consent::SubjectView* decoded = arena.Decode(bytes);
  consent::v1::Subject parsed;
  if (decoded == nullptr || !parsed.ParseFromArray(data, static_cast<int>(size))) return 0;
  if (!Same(*decoded, *arena.Add(parsed))) std::abort();
  return 0;
}
