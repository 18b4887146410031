// The registry's writes (account-settings backends): validation, the
// write rules (expected_revision, deleted subjects, idempotency), and the
// commit through the store; and GetSubject, the record those writes keep.
#ifndef CONSENT_SERVER_REGISTRY_WRITES_H_
#define CONSENT_SERVER_REGISTRY_WRITES_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "consent/v1/registry.pb.h"
#include "core/clock.h"
#include "core/policy.h"
#include "server/revision_notifier.h"
#include "storage/consent_store.h"

namespace consent {

// Who is calling, for history; and, for a write, when and how it commits.
struct CallContext {
  // The authenticated caller; without authentication, the peer address.
  std::string caller;
  // The time a write is stamped with and validated against (a birth date
  // or a notice's delivery time may not be in the future);
  // absl::InfinitePast(): the clock's time when the write starts.
  absl::Time time = absl::InfinitePast();
  // > 0: the write is the command at this sequence of the replicated
  // command log, committed with ConsentStore::ApplyLoggedAsync
  // (docs/replication.md).
  int64_t log_sequence = 0;
};

inline constexpr int kMaxBatchSetItems = 1000;
inline constexpr int kMaxBatchNoticeItems = 10000;
// RecordNoticeRequest.purposes, at most.
inline constexpr int kMaxNoticePurposes = 64;

// Thread safe. Does not own its collaborators, which must outlive it.
//
// Errors: kInvalidArgument with a google.rpc.BadRequest naming each bad
// field, including a request_id reused for a different request (its
// fingerprint differs); kAborted (ErrorInfo REVISION_MISMATCH) when
// expected_revision does not match; kFailedPrecondition
// (PreconditionFailure SUBJECT_DELETED) for writes to a deleted subject;
// kAlreadyExists for deleting a deleted subject; kFailedPrecondition
// (PreconditionFailure NOTICE_PURPOSES_DIFFER) for a notice version
// recorded before with other purposes; kNotFound from GetSubject
// for a user never recorded. Storage failures pass through (kUnavailable,
// kResourceExhausted, kInternal, kDataLoss).
class RegistryWrites {
 public:
  // `notifier` is told the new revision after each commit (the change
  // feed's readers wait on it).
  RegistryWrites(storage::ConsentStore* store, PolicyHolder* policies, const Clock* clock,
                 RevisionNotifier* notifier)
      : store_(store), policies_(policies), clock_(clock), notifier_(notifier) {}

  // Each answers through `done` once the write is synced (or at once when
  // the request is refused): on the caller's thread or on the store's
  // (ConsentStore::CommitAsync), so `done` must not block. `request`,
  // `context` and `response` must live until `done` has run.
  using WriteDone = std::function<void(absl::Status)>;
  void SetPreference(const v1::SetPreferenceRequest& request, const CallContext& context,
                     v1::SetPreferenceResponse* response, WriteDone done);
  void BatchSetPreferences(const v1::BatchSetPreferencesRequest& request,
                           const CallContext& context, v1::BatchSetPreferencesResponse* response,
                           WriteDone done);
  void UpdateSubject(const v1::UpdateSubjectRequest& request, const CallContext& context,
                     v1::UpdateSubjectResponse* response, WriteDone done);
  void SetContentExclusion(const v1::SetContentExclusionRequest& request,
                           const CallContext& context, v1::SetContentExclusionResponse* response,
                           WriteDone done);
  void DeleteSubject(const v1::DeleteSubjectRequest& request, const CallContext& context,
                     v1::DeleteSubjectResponse* response, WriteDone done);
  void RecordNotice(const v1::RecordNoticeRequest& request, const CallContext& context,
                    v1::RecordNoticeResponse* response, WriteDone done);
  void BatchRecordNotices(const v1::BatchRecordNoticesRequest& request, const CallContext& context,
                          v1::BatchRecordNoticesResponse* response, WriteDone done);
  // The checks each write above makes before it commits, at time `now`
  // (the write's stamp; CallContext::time): OK, or the kInvalidArgument it
  // answers. They depend only on the request, `now` and the active policy.
  absl::Status Validate(const v1::SetPreferenceRequest& request, absl::Time now) const;
  absl::Status Validate(const v1::BatchSetPreferencesRequest& request, absl::Time now) const;
  absl::Status Validate(const v1::UpdateSubjectRequest& request, absl::Time now) const;
  absl::Status Validate(const v1::SetContentExclusionRequest& request, absl::Time now) const;
  absl::Status Validate(const v1::DeleteSubjectRequest& request, absl::Time now) const;
  absl::Status Validate(const v1::RecordNoticeRequest& request, absl::Time now) const;
  absl::Status Validate(const v1::BatchRecordNoticesRequest& request, absl::Time now) const;
  // CallContext::time, or the clock's time when it has none.
  absl::Time TimeOf(const CallContext& context) const {
    return context.time == absl::InfinitePast() ? clock_->Now() : context.time;
  }

  // Starts a write (one of the above) with a `done` that records its
  // status, and waits for it: the blocking form, for tools and benchmarks.
  static absl::Status AwaitWrite(const std::function<void(WriteDone)>& start);

  absl::Status GetSubject(const v1::GetSubjectRequest& request, v1::GetSubjectResponse* response);

  // Answers a write refused before it reached the store with `refusal`:
  // at once, or, for a command of the replicated log (context.log_sequence
  // set), once the store has recorded the command as applied with nothing
  // in it (then with the failure to record it, if that failed). Also how
  // a command that is not a write is recorded (an OK `refusal`).
  void Refuse(const CallContext& context, absl::Time now, absl::Status refusal, WriteDone done);

 private:
  // Commits at `now` (as the command at context.log_sequence, if it is
  // one), wakes change-feed readers, then passes the result to `then` (on
  // the store's thread, see ConsentStore::CommitAsync). A request id
  // conflict becomes kInvalidArgument naming `field_of(index)` (index -1:
  // the commit's own request id).
  void Commit(std::vector<storage::SubjectUpdate> updates, storage::RequestKey request,
              const CallContext& context, absl::Time now,
              std::function<std::string(int index)> field_of,
              std::function<void(absl::StatusOr<storage::CommitResult>)> then);
  // Commits a validated batch of single-subject writes
  // (BatchSetPreferences, BatchRecordNotices) atomically, as `update(item)`
  // for each item; the response gets each item's revision and the last.
  // `kind` goes into the request id's fingerprint ("BatchSetPreferences":
  // what stored fingerprints were made with).
  template <typename Request, typename Response, typename Update>
  void CommitBatch(const Request& request, absl::string_view kind, const CallContext& context,
                   absl::Time now, Update update, Response* response, WriteDone done);
  // Commits a single-subject write and answers it: the response gets the
  // revision, then `answer(result)` (on the store's thread) fills the rest
  // and gives the status `done` receives.
  template <typename Response, typename Answer>
  void CommitSingle(std::vector<storage::SubjectUpdate> updates, const CallContext& context,
                    absl::Time now, Response* response, Answer answer, WriteDone done) {
    Commit(
        std::move(updates), {}, context, now, [](int) { return std::string("request_id"); },
        [response, answer = std::move(answer),
         done = std::move(done)](absl::StatusOr<storage::CommitResult> result) {
          if (!result.ok()) return done(result.status());
          response->set_revision(result->revisions[0]);
          done(answer(*result));
        });
  }

  storage::ConsentStore* const store_;
  PolicyHolder* const policies_;
  const Clock* const clock_;
  RevisionNotifier* const notifier_;
};

}  // namespace consent

#endif  // CONSENT_SERVER_REGISTRY_WRITES_H_
