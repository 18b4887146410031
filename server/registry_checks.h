// The registry's checks (training pipelines): Check and BatchCheck (each
// message of a StreamCheck stream is a BatchCheck), evaluated by the
// decision engine (core/decision_engine.h) against the current state (the
// subject index or RocksDB) or, with as_of, against the state folded from
// the user's history.
#ifndef CONSENT_SERVER_REGISTRY_CHECKS_H_
#define CONSENT_SERVER_REGISTRY_CHECKS_H_

#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "consent/v1/registry.pb.h"
#include "core/clock.h"
#include "core/decision_engine.h"
#include "core/history.h"
#include "core/policy.h"
#include "storage/consent_store.h"

namespace consent {

inline constexpr int kMaxBatchCheckItems = 10000;

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

// Where a batch's decisions go, in item order: Reserve once, then Add per
// item. The service layer's hand-written encoder (wire.h,
// EncodedDecisions) is the one BatchCheck and StreamCheck answer with.
class DecisionSink {
 public:
  virtual ~DecisionSink() = default;
  // `n` decisions under `policy` follow.
  virtual void Reserve(int n, const CompiledPolicy& policy) = 0;
  virtual void Add(const Verdict& verdict, int64_t revision) = 0;
  // In place of a decision, for an item whose own fields are invalid:
  // `problem` is kInvalidArgument with a google.rpc.BadRequest payload.
  virtual void AddInvalid(const absl::Status& problem) = 0;
  // After the last Add: the registry's revision when the items were read
  // (the response's `revision`).
  virtual void Finish(int64_t revision) = 0;
};

// Thread safe. Does not own its collaborators, which must outlive it.
//
// Errors: kInvalidArgument with a google.rpc.BadRequest naming each bad
// field (purpose unknown to the policy in force at the evaluation time,
// ids, content, a create_time more than 5 minutes after the evaluation
// time, min_revision < 0, as_of in the future, a batch's item count).
// In a batch, an item's own bad fields (user_id, content, create_time) do
// not fail the call: that item's answer is its error (AddInvalid) and the
// others are decided;
// kFailedPrecondition (PreconditionFailure REVISION_NOT_REACHED) for a
// min_revision beyond the registry's revision (with replication: kUnavailable
// once the wait for it ends, set_revision_wait); kOutOfRange for an as_of
// before the first policy. Storage failures pass through.
class RegistryChecks {
 public:
  RegistryChecks(storage::ConsentStore* store, PolicyHolder* policies, const Clock* clock)
      : store_(store), policies_(policies), clock_(clock) {}

  absl::Status Check(const v1::CheckRequest& request, v1::CheckResponse* response) const;
  // A batch stops as soon as `control` says the caller gave up (its
  // deadline passed, or it cancelled): kDeadlineExceeded or kCancelled,
  // the decisions left incomplete (not to be sent). Checked every 256
  // items, and before each user's history is folded for as_of. Each
  // message of a StreamCheck stream is one (wire.h: RawCheckStream).
  absl::Status BatchCheck(const v1::BatchCheckRequest& request, DecisionSink* decisions,
                          const CallControl& control = {}) const;

  // Replication: a read whose min_revision is ahead of the store calls
  // `wait(min_revision)`, which waits a while for this replica to apply it
  // and returns the store's revision then; still behind, the read is
  // kUnavailable. Unset (standalone), such a read is kFailedPrecondition at
  // once. Set before serving.
  void set_revision_wait(std::function<int64_t(int64_t revision)> wait) {
    revision_wait_ = std::move(wait);
  }

 private:
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

  storage::ConsentStore* const store_;
  PolicyHolder* const policies_;
  const Clock* const clock_;
  std::function<int64_t(int64_t revision)> revision_wait_;
};

}  // namespace consent

#endif  // CONSENT_SERVER_REGISTRY_CHECKS_H_
