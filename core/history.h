// A subject's state rebuilt from its change events, for point-in-time
// (as_of) answers. Events carry their full "after" values, so folding them
// in revision order reproduces what the write path stored.
#ifndef CONSENT_CORE_HISTORY_H_
#define CONSENT_CORE_HISTORY_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "consent/v1/types.pb.h"

namespace consent {

struct SubjectAsOf {
  // False while no event has been applied: nothing was recorded yet.
  bool exists = false;
  v1::Subject subject;
  // content_id -> purposes it is excluded for.
  absl::flat_hash_map<std::string, std::vector<std::string>> exclusions;
};

// Applies one event (of this subject, in revision order) to `state`.
void ApplyEvent(const v1::ChangeEvent& event, SubjectAsOf* state);

// Sets or removes the preference for `purpose` in `subject`, keeping the
// preferences sorted by purpose. `after` null removes it. Shared by the
// write path and the fold so both keep the same shape.
void PutPreference(v1::Subject* subject, const std::string& purpose, const v1::Preference* after);

// The subject's entry for (notice_id, notice_version), or null.
const v1::NoticeDelivery* FindNotice(const v1::Subject& subject, absl::string_view notice_id,
                                     absl::string_view notice_version);

// Records a delivery of a notice in `subject`: one entry per (notice_id,
// notice_version), sorted, holding the earliest delivery (a later one
// changes nothing). Returns the entry. Shared by the write path and the
// fold so both keep the same shape.
const v1::NoticeDelivery& PutNotice(v1::Subject* subject, const v1::NoticeDelivery& delivery);

}  // namespace consent

#endif  // CONSENT_CORE_HISTORY_H_
