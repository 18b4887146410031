// The registry's operations, independent of the transport: validation,
// the write rules, and checks. The gRPC services (registry_service.h) are
// thin adapters over this class.
#ifndef CONSENT_SERVER_REGISTRY_H_
#define CONSENT_SERVER_REGISTRY_H_

#include <array>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "consent/v1/admin.pb.h"
#include "consent/v1/registry.pb.h"
#include "core/clock.h"
#include "core/decision_engine.h"
#include "core/policy.h"
#include "server/history.h"
#include "server/revision_notifier.h"
#include "storage/consent_store.h"

namespace consent {

// Who is calling, for history.
struct CallContext {
  // The authenticated caller; without authentication, the peer address.
  std::string caller;
};

// Whether a call's caller has given up, for work that can stop early.
struct CallControl {
  // The call's deadline (real time), InfiniteFuture for none.
  absl::Time deadline = absl::InfiniteFuture();
  // True once the call was cancelled; may be empty.
  std::function<bool()> cancelled;
  // kDeadlineExceeded or kCancelled once the caller has given up, naming
  // what stopped; OK otherwise.
  absl::Status GaveUp(absl::string_view what) const;
};

// The outcome of activating a policy.
struct PolicyChange {
  std::string version;
  std::string previous_version;
  // False when the text equals the active policy's: nothing was recorded.
  bool changed = false;
};

inline constexpr int kMaxBatchSetItems = 1000;
inline constexpr int kMaxBatchCheckItems = 10000;

// Thread safe. Does not own its collaborators, which must outlive it.
//
// Errors: kInvalidArgument with a google.rpc.BadRequest naming each bad
// field, including a request_id reused for a different request;
// kAborted when expected_revision does not match; kFailedPrecondition for
// writes to a deleted subject and min_revision beyond the registry's
// revision; kAlreadyExists for deleting a deleted subject; kNotFound from
// GetSubject for a user never recorded. For as_of reads: kInvalidArgument
// for a time in the future, kOutOfRange before the first policy. For
// WatchChanges: kOutOfRange before the oldest revision kept,
// kFailedPrecondition beyond the next one. Storage failures pass through
// (kInternal, kDataLoss).
// Arena block sizes for a batch of checks (1,000 items: a few blocks).
google::protobuf::ArenaOptions BatchArenaOptions();

// A batch's decisions as the bytes of a BatchCheckResponse (the same as a
// StreamCheckResponse's), written directly: building a v1::Decision each
// (and a copy of the policy version each) and serializing them took about
// 9% of consentd's CPU under BatchCheck (docs/performance.md). The bytes
// are what protobuf would write for the same decisions (tests compare
// them).
class EncodedDecisions {
 public:
  const std::string& bytes() const { return bytes_; }
  // Decisions by reason (index: the reason's number), for metrics.
  absl::Span<const int64_t> tally() const { return tally_; }

  // `n` decisions under `policy` (its version) follow, each added by Add.
  void Reserve(int n, const CompiledPolicy& policy) { Reserve(n, policy.version()); }
  void Reserve(int n, absl::string_view policy_version);
  void Add(const Verdict& verdict, int64_t revision);

 private:
  std::string bytes_;
  std::string version_field_;  // policy_version's tag, length and bytes
  std::array<int64_t, v1::DecisionReason_ARRAYSIZE> tally_{};
};

class Registry {
 public:
  Registry(storage::ConsentStore* store, PolicyHolder* policies, const Clock* clock)
      : store_(store), policies_(policies), clock_(clock) {}

  // WatchChanges sends a checkpoint after this long without an event.
  void set_checkpoint_interval(absl::Duration interval) { checkpoint_interval_ = interval; }
  // Where CreateBackup writes (each backup a new subdirectory); empty
  // disables CreateBackup. Set before serving.
  void set_backup_dir(std::string directory) { backup_dir_ = std::move(directory); }

  // Loads every policy version kept in the store (for as_of), then
  // activates `file_policy` unless it is the latest already. Call once,
  // before serving.
  absl::Status Init(std::shared_ptr<const CompiledPolicy> file_policy);

  // Makes `next` the active policy and records it (with its activation
  // time) in the store. The same text as the active policy changes nothing;
  // a different text under the active policy's version is
  // kFailedPrecondition. Thread safe; activations are serialised.
  absl::StatusOr<PolicyChange> ActivatePolicy(std::shared_ptr<const CompiledPolicy> next);

  // The writes. Each answers through `done` once the write is synced (or
  // at once when the request is refused): on the caller's thread or on the
  // store's (ConsentStore::CommitAsync), so `done` must not block.
  // `request`, `context` and `response` must live until `done` has run.
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
  // Starts a write (one of the above) with a `done` that records its
  // status, and waits for it: the blocking form, for tools and benchmarks.
  static absl::Status AwaitWrite(const std::function<void(WriteDone)>& start);
  absl::Status GetSubject(const v1::GetSubjectRequest& request, v1::GetSubjectResponse* response);
  absl::Status Check(const v1::CheckRequest& request, v1::CheckResponse* response);
  // A batch stops as soon as `control` says the caller gave up (its
  // deadline passed, or it cancelled): kDeadlineExceeded or kCancelled,
  // the response left incomplete (not to be sent). Checked every 256
  // items, and before each user's history is folded for as_of.
  // The response is encoded by hand (EncodedDecisions).
  absl::Status BatchCheck(const v1::BatchCheckRequest& request, EncodedDecisions* response,
                          const CallControl& control = {});
  // One message of a StreamCheck stream: a batch check.
  absl::Status StreamCheck(const v1::StreamCheckRequest& request, v1::StreamCheckResponse* response,
                           const CallControl& control = {});

  absl::Status ListHistory(const v1::ListHistoryRequest& request,
                           v1::ListHistoryResponse* response);

  // Streams change events from request.start_revision on through `send`
  // (false: the client is gone), reading them from the store, so a slow
  // consumer only slows its own stream; when idle, waits for commits and
  // sends a checkpoint every checkpoint interval. Returns when `stopped`
  // says so or the watchers are closed (kUnavailable, naming the revision
  // to resume from), or the client went away (kCancelled).
  absl::Status WatchChanges(const v1::WatchChangesRequest& request,
                            const std::function<bool(const v1::WatchChangesResponse&)>& send,
                            const std::function<bool()>& stopped);
  // Ends every WatchChanges stream (shutdown).
  void CloseWatchers() { notifier_.Close(); }

  absl::Status VerifyAuditLog(const v1::VerifyAuditLogRequest& request,
                              v1::VerifyAuditLogResponse* response);

  // A consistent copy of the store in a new directory under the backup
  // directory (set_backup_dir), named by request.directory. Writes wait
  // while the copy is taken; reads go on. INVALID_ARGUMENT for a name that
  // is not one (a path, "..", empty), ALREADY_EXISTS, FAILED_PRECONDITION
  // when backups are disabled.
  absl::Status CreateBackup(const v1::CreateBackupRequest& request,
                            v1::CreateBackupResponse* response);

 private:
  // BatchCheck and StreamCheck: requests with purpose, items, as_of and
  // min_revision; decisions appended in item order.
  // `Decisions` is DecisionMessages or EncodedDecisions.
  template <typename Request, typename Decisions>
  absl::Status CheckItems(const Request& request, Decisions* decisions, const CallControl& control);

  // What reads are evaluated against.
  struct ReadView {
    std::shared_ptr<const CompiledPolicy> policy;
    absl::Time at;
    // Evaluate from history (as_of) rather than current state.
    bool as_of = false;
  };
  // Checks min_revision and as_of; picks the policy and evaluation time.
  absl::StatusOr<ReadView> PrepareRead(bool has_as_of, const google::protobuf::Timestamp& as_of,
                                       int64_t min_revision) const;
  // Folds the user's events stamped at or before `at` into `state`.
  absl::Status LoadAsOf(absl::string_view user_id, absl::Time at, SubjectAsOf* state) const;

  // Commits, wakes change-feed readers, then passes the result to `then`
  // (on the store's thread, see ConsentStore::CommitAsync). A request id
  // conflict becomes kInvalidArgument naming `field_of(index)` (index -1:
  // the commit's own request id).
  void Commit(std::vector<storage::SubjectUpdate> updates, storage::RequestKey request,
              std::function<std::string(int index)> field_of,
              std::function<void(absl::StatusOr<storage::CommitResult>)> then);
  // Commits a single-subject write and answers it: the response gets the
  // revision, then `answer(result)` (on the store's thread) fills the rest
  // and gives the status `done` receives.
  template <typename Response, typename Answer>
  void CommitSingle(std::vector<storage::SubjectUpdate> updates, Response* response, Answer answer,
                    WriteDone done) {
    Commit(
        std::move(updates), {}, [](int) { return std::string("request_id"); },
        [response, answer = std::move(answer),
         done = std::move(done)](absl::StatusOr<storage::CommitResult> result) {
          if (!result.ok()) return done(result.status());
          response->set_revision(result->revisions[0]);
          done(answer(*result));
        });
  }

  storage::ConsentStore* store_;
  PolicyHolder* policies_;
  const Clock* clock_;
  absl::Mutex activate_mu_;
  RevisionNotifier notifier_;
  absl::Duration checkpoint_interval_ = absl::Seconds(5);
  std::string backup_dir_;
};

}  // namespace consent

#endif  // CONSENT_SERVER_REGISTRY_H_
