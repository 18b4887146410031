// What recording a preference means, shared by SetPreference,
// BatchSetPreferences and ImportSubjects: the checks of its fields and the
// change it makes to a subject record and its event. Templates over the
// message carrying the preference (v1::SetPreferenceRequest,
// v1::ImportedPreference), which name the fields alike.
#ifndef CONSENT_SERVER_PREFERENCE_WRITE_H_
#define CONSENT_SERVER_PREFERENCE_WRITE_H_

#include <string>

#include "consent/v1/types.pb.h"
#include "core/history.h"
#include "core/policy.h"
#include "core/proto_time.h"
#include "core/validation.h"
#include "storage/consent_store.h"

namespace consent {

// Validates purpose, state, effective_time and expire_time of `p`; `prefix`
// names it ("", "requests[3]." or "preferences[1].").
template <typename P>
void ValidatePreferenceFields(const P& p, const std::string& prefix, const CompiledPolicy& policy,
                              Violations* v) {
  ValidatePurpose(p.purpose(), prefix + "purpose", policy, v);
  if (p.state() == v1::PREFERENCE_STATE_UNSPECIFIED) {
    v->Add(prefix + "state", "is required: OBJECTED, CONSENTED or CLEARED");
  } else if (!v1::PreferenceState_IsValid(p.state())) {
    v->Add(prefix + "state", "is not a known preference state");
  }
  if (p.has_effective_time()) {
    if (std::string problem = TimestampProblem(p.effective_time()); !problem.empty()) {
      v->Add(prefix + "effective_time", problem);
    }
  }
  if (p.has_expire_time()) {
    if (std::string problem = TimestampProblem(p.expire_time()); !problem.empty()) {
      v->Add(prefix + "expire_time", problem);
    } else if (p.has_effective_time() && p.expire_time() <= p.effective_time()) {
      v->Add(prefix + "expire_time", "must be after effective_time");
    }
  }
  if (p.state() == v1::PREFERENCE_STATE_CLEARED &&
      (p.has_effective_time() || p.has_expire_time())) {
    v->Add(prefix + "state", "CLEARED takes no effective_time or expire_time");
  }
}

// Records `p` (validated) in `subject` and describes it in `event`'s
// preference change: CLEARED removes the purpose's preference, the other
// states replace it, stamped with the update's revision and time. `source`
// may be null. The event's kind and caller are the caller's to set.
template <typename P>
void ApplyPreference(const P& p, const v1::Source* source, const storage::UpdateContext& context,
                     v1::Subject& subject, v1::ChangeEvent& event) {
  v1::PreferenceChange* change = event.mutable_preference();
  change->set_purpose(p.purpose());
  for (const v1::Preference& existing : subject.preferences()) {
    if (existing.purpose() == p.purpose()) *change->mutable_before() = existing;
  }
  if (p.state() == v1::PREFERENCE_STATE_CLEARED) {
    PutPreference(&subject, p.purpose(), nullptr);
    return;
  }
  v1::Preference* after = change->mutable_after();
  after->set_purpose(p.purpose());
  after->set_state(p.state());
  if (p.has_effective_time()) *after->mutable_effective_time() = p.effective_time();
  if (p.has_expire_time()) *after->mutable_expire_time() = p.expire_time();
  if (source != nullptr) *after->mutable_source() = *source;
  after->set_revision(context.revision());
  *after->mutable_update_time() = ToProto(context.time());
  PutPreference(&subject, p.purpose(), after);
}

}  // namespace consent

#endif  // CONSENT_SERVER_PREFERENCE_WRITE_H_
