// The subject record decoder (SubjectViewArena::Decode, written by hand)
// against the generated parser: never a crash, and whenever both accept the
// bytes, the same decision fields.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

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
