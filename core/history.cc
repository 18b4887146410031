#include "core/history.h"

#include <algorithm>

#include "google/protobuf/util/time_util.h"

namespace consent {

void PutPreference(v1::Subject* subject, const std::string& purpose, const v1::Preference* after) {
  auto* prefs = subject->mutable_preferences();
  auto it = std::lower_bound(
      prefs->begin(), prefs->end(), purpose,
      [](const v1::Preference& p, const std::string& value) { return p.purpose() < value; });
  const bool present = it != prefs->end() && it->purpose() == purpose;
  if (after == nullptr) {
    if (present) prefs->erase(it);
    return;
  }
  if (present) {
    *it = *after;
    return;
  }
  const int index = static_cast<int>(it - prefs->begin());
  *prefs->Add() = *after;
  // Move the new element from the end into its sorted place.
  for (int i = prefs->size() - 1; i > index; --i) prefs->SwapElements(i, i - 1);
}

namespace {

bool NoticeBefore(const v1::NoticeDelivery& a, absl::string_view id, absl::string_view version) {
  return a.notice_id() != id ? a.notice_id() < id : a.notice_version() < version;
}

}  // namespace

const v1::NoticeDelivery* FindNotice(const v1::Subject& subject, absl::string_view notice_id,
                                     absl::string_view notice_version) {
  for (const v1::NoticeDelivery& n : subject.notices()) {
    if (n.notice_id() == notice_id && n.notice_version() == notice_version) return &n;
  }
  return nullptr;
}

const v1::NoticeDelivery& PutNotice(v1::Subject* subject, const v1::NoticeDelivery& delivery) {
  auto* notices = subject->mutable_notices();
  auto it = std::lower_bound(notices->begin(), notices->end(), delivery,
                             [](const v1::NoticeDelivery& a, const v1::NoticeDelivery& b) {
                               return NoticeBefore(a, b.notice_id(), b.notice_version());
                             });
  if (it != notices->end() && it->notice_id() == delivery.notice_id() &&
      it->notice_version() == delivery.notice_version()) {
    if (delivery.delivery_time() < it->delivery_time()) *it = delivery;
    return *it;
  }
  const int index = static_cast<int>(it - notices->begin());
  *notices->Add() = delivery;
  for (int i = notices->size() - 1; i > index; --i) notices->SwapElements(i, i - 1);
  return notices->Get(index);
}

void ApplyEvent(const v1::ChangeEvent& event, SubjectAsOf* state) {
  v1::Subject& subject = state->subject;
  if (!state->exists) {
    subject.set_user_id(event.user_id());
    *subject.mutable_create_time() = event.event_time();
    state->exists = true;
  }
  switch (event.change_case()) {
    case v1::ChangeEvent::kPreference: {
      const v1::PreferenceChange& change = event.preference();
      PutPreference(&subject, change.purpose(), change.has_after() ? &change.after() : nullptr);
      break;
    }
    case v1::ChangeEvent::kAttributes:
      *subject.mutable_attributes() = event.attributes().after();
      break;
    case v1::ChangeEvent::kExclusion: {
      const v1::ExclusionChange& change = event.exclusion();
      std::vector<std::string>& purposes = state->exclusions[change.content_id()];
      auto it = std::find(purposes.begin(), purposes.end(), change.purpose());
      if (change.excluded_after() && it == purposes.end()) {
        purposes.push_back(change.purpose());
        subject.set_exclusion_count(subject.exclusion_count() + 1);
      } else if (!change.excluded_after() && it != purposes.end()) {
        purposes.erase(it);
        subject.set_exclusion_count(subject.exclusion_count() - 1);
        if (purposes.empty()) state->exclusions.erase(change.content_id());
      }
      break;
    }
    case v1::ChangeEvent::kNotice:
      PutNotice(&subject, event.notice().notice());
      break;
    case v1::ChangeEvent::kDeletion:
      subject.clear_attributes();
      subject.clear_preferences();
      subject.clear_notices();
      subject.mutable_attributes()->set_account_state(v1::ACCOUNT_STATE_DELETED);
      *subject.mutable_delete_time() = event.event_time();
      break;
    case v1::ChangeEvent::CHANGE_NOT_SET:
      break;
  }
  subject.set_revision(event.revision());
  *subject.mutable_update_time() = event.event_time();
}

}  // namespace consent
