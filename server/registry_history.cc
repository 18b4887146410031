#include "server/registry_history.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "core/decision_engine.h"
#include "core/history.h"
#include "core/proto_time.h"
#include "core/snapshot_signing.h"
#include "core/validation.h"

namespace consent {
namespace {

constexpr int kDefaultHistoryPageSize = 100;
constexpr int kMaxHistoryPageSize = 1000;
constexpr char kPageTokenVersion[] = "h1";

// Opaque page token: the user it belongs to and the last revision returned.
std::string EncodePageToken(absl::string_view user_id, int64_t revision) {
  return absl::WebSafeBase64Escape(absl::StrCat(kPageTokenVersion, ":", revision, ":", user_id));
}

bool DecodePageToken(absl::string_view token, std::string* user_id, int64_t* revision) {
  std::string raw;
  if (!absl::WebSafeBase64Unescape(token, &raw)) return false;
  std::vector<absl::string_view> parts = absl::StrSplit(raw, absl::MaxSplits(':', 2));
  return parts.size() == 3 && parts[0] == kPageTokenVersion &&
         absl::SimpleAtoi(parts[1], revision) && *revision >= 0 &&
         (*user_id = std::string(parts[2]), true);
}

// Whether a change event can affect decisions for `purpose` ("" matches
// all): preference and exclusion events of the purpose, its ancestors or
// its descendants, notices covering one of them; attribute changes and
// deletions always.
bool AffectsPurpose(const v1::ChangeEvent& event, absl::string_view purpose) {
  if (purpose.empty()) return true;
  auto related = [purpose](absl::string_view changed) {
    return CoversPurpose(changed, purpose) || CoversPurpose(purpose, changed);
  };
  if (event.has_preference()) return related(event.preference().purpose());
  if (event.has_exclusion()) return related(event.exclusion().purpose());
  if (event.has_notice()) {
    const auto& purposes = event.notice().notice().purposes();
    return std::any_of(purposes.begin(), purposes.end(), related);
  }
  return true;
}

}  // namespace

absl::Status RegistryHistory::ListHistory(const v1::ListHistoryRequest& request,
                                          v1::ListHistoryResponse* response) const {
  Violations v;
  ValidateId(request.user_id(), "user_id", &v);
  if (request.page_size() < 0) v.Add("page_size", "must not be negative");
  int64_t after = 0;
  if (!request.page_token().empty()) {
    std::string token_user;
    if (!DecodePageToken(request.page_token(), &token_user, &after)) {
      v.Add("page_token", "is not a token from ListHistory");
    } else if (token_user != request.user_id()) {
      v.Add("page_token", "belongs to another user_id");
    }
  }
  if (!v.empty()) return v.ToStatus();
  const int page_size = request.page_size() == 0
                            ? kDefaultHistoryPageSize
                            : std::min(request.page_size(), kMaxHistoryPageSize);
  auto events = store_->ReadUserEvents(request.user_id(), after, page_size + 1);
  if (!events.ok()) return events.status();
  const bool more = static_cast<int>(events->size()) > page_size;
  if (more) events->pop_back();
  for (v1::ChangeEvent& e : *events) *response->add_events() = std::move(e);
  if (more) {
    response->set_next_page_token(
        EncodePageToken(request.user_id(), response->events(page_size - 1).revision()));
  }
  return absl::OkStatus();
}

absl::Status RegistryHistory::VerifyAuditLog(const v1::VerifyAuditLogRequest& request,
                                             v1::VerifyAuditLogResponse* response) const {
  Violations v;
  if (request.start_revision() < 0) v.Add("start_revision", "must not be negative");
  if (request.end_revision() < 0) v.Add("end_revision", "must not be negative");
  if (request.end_revision() > 0 && request.start_revision() > request.end_revision()) {
    v.Add("end_revision", "must not be before start_revision");
  }
  if (!v.empty()) return v.ToStatus();
  auto report = store_->VerifyChain(request.start_revision(), request.end_revision());
  if (!report.ok()) return report.status();
  response->set_ok(report->ok);
  response->set_verified_count(report->verified);
  response->set_first_broken_revision(report->first_broken_revision);
  response->set_detail(report->ok ? absl::StrCat(report->verified, " events verified")
                                  : report->detail);
  return absl::OkStatus();
}

namespace {

// A pseudonymized feed's event: the user's pseudonym, and nothing about
// who made the change or how it chains.
void Pseudonymize(const std::string& key, v1::ChangeEvent* event) {
  event->set_user_id(snapshot::Pseudonym(key, event->user_id()));
  event->clear_caller();
  event->clear_request_id();
  event->clear_source();
  event->clear_previous_hash();
  event->clear_hash();
}

}  // namespace

absl::Status RegistryHistory::WatchChanges(
    const v1::WatchChangesRequest& request,
    const std::function<bool(const v1::WatchChangesResponse&)>& send,
    const std::function<bool()>& stopped) const {
  Violations v;
  if (request.start_revision() < 0) v.Add("start_revision", "must not be negative");
  if (!request.purpose().empty()) {
    ValidatePurpose(request.purpose(), "purpose", *policies_->Get(), &v);
  }
  if (!v.empty()) return v.ToStatus();
  if (request.pseudonymize() && pseudonym_key_.empty()) {
    return absl::FailedPreconditionError(
        "pseudonymize: consentd runs without --pseudonymize_key_file");
  }
  auto oldest = store_->OldestRevision();
  if (!oldest.ok()) return oldest.status();
  int64_t next = std::max<int64_t>(request.start_revision(), 1);
  const int64_t current = store_->CurrentRevision();
  if (*oldest > 0 && next < *oldest) {
    return absl::OutOfRangeError(absl::StrCat("start_revision ", next,
                                              " is older than the oldest revision kept, ", *oldest,
                                              "; start from there"));
  }
  if (next > current + 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "start_revision ", next, " is beyond the registry's next revision ", current + 1));
  }
  constexpr size_t kReadBatch = 256;
  absl::Time last_sent = absl::Now();
  v1::WatchChangesResponse message;
  // With checkpoint_when_current: the revision of the last such checkpoint.
  int64_t announced = -1;
  while (!stopped()) {
    // Every write acknowledged up to `visible` is readable now, so a short
    // read below has delivered everything up to it.
    const int64_t visible = store_->CurrentRevision();
    auto events = store_->ReadEvents(next, kReadBatch);
    if (!events.ok()) return events.status();
    for (v1::ChangeEvent& event : *events) {
      next = event.revision() + 1;
      if (!AffectsPurpose(event, request.purpose())) continue;
      if (request.pseudonymize()) Pseudonymize(pseudonym_key_, &event);
      *message.mutable_event() = std::move(event);
      if (!send(message)) return absl::CancelledError("the watcher went away");
      last_sent = absl::Now();
    }
    const bool caught_up = events->size() < kReadBatch && next - 1 >= visible;
    // Idle (or only filtered events), or caught up when asked to say so: a
    // checkpoint says how far we are.
    if (absl::Now() - last_sent >= checkpoint_interval_ ||
        (request.checkpoint_when_current() && caught_up && announced != next - 1)) {
      announced = next - 1;
      v1::Checkpoint* checkpoint = message.mutable_checkpoint();
      checkpoint->set_revision(next - 1);
      *checkpoint->mutable_time() = ToProto(clock_->Now());
      if (!send(message)) return absl::CancelledError("the watcher went away");
      last_sent = absl::Now();
    }
    if (events->size() == kReadBatch) continue;  // more to catch up on
    if (!notifier_->WaitBeyond(next - 1, last_sent + checkpoint_interval_)) break;
  }
  return absl::UnavailableError(
      absl::StrCat("consentd is shutting down; resume with start_revision ", next));
}
}  // namespace consent
