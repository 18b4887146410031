// Replication (docs/replication.md): consentd replicas that share one
// command log in NATS JetStream (storage/jetstream_log.h). A write taken
// by any replica is validated and stamped there, appended to the log as
// one command, and answered once this replica has applied it. Every
// replica applies the whole log, in order, into its own store, through
// the same code a standalone write commits by, so every replica holds the
// same records, revisions and history.
//
// Replicator is the log's side of that: appending commands, applying them
// in order, and handing each caller the outcome of its own command. What a
// command means is the CommandApplier's (the registry).
#ifndef CONSENT_SERVER_REPLICATION_H_
#define CONSENT_SERVER_REPLICATION_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "consent/replication/v1/command.pb.h"
#include "storage/consent_store.h"
#include "storage/jetstream_log.h"

namespace consent {

struct ReplicationOptions {
  storage::JetStreamLogOptions log;
  // How long a write waits for its command to be applied here once the
  // log has it; then the caller gets kUnavailable (the command stays in
  // the log and is applied: a retry with the same request_id learns its
  // outcome).
  absl::Duration apply_wait = absl::Seconds(10);
  // A command is appended, under the same message id, for up to this many
  // times log.timeout (refusals that come at once, as during a stream
  // leader's election, are retried after a pause) before the caller gets
  // kUnavailable.
  int append_attempts = 3;
  // Threads appending commands; each waits for its command's
  // acknowledgement, so this bounds the appends in flight.
  int appenders = 16;
  // Commands applied but not yet committed, at most.
  int max_applying = 1024;
};

// What a replica does with each command of the log. Called by the
// Replicator's applying thread, in log order.
class CommandApplier {
 public:
  virtual ~CommandApplier() = default;
  // The outcome of a command for its caller: the status, and the
  // serialized response when OK.
  using Done = std::function<void(absl::Status status, std::string response)>;
  // Commits the write `command` holds as the log's command at `sequence`
  // (ConsentStore::ApplyLoggedAsync) and calls `done` once it is committed
  // or refused, possibly on another thread; `done` does not block.
  // Applying must depend only on the command and the store's state: a
  // refusal (kAborted, kFailedPrecondition, kAlreadyExists,
  // kInvalidArgument) is the same on every replica; a storage failure
  // (kUnavailable, kResourceExhausted, kInternal, kDataLoss) is not, and
  // the command is applied again.
  virtual void ApplyWrite(const replication::v1::Command& command, int64_t sequence, Done done) = 0;
  // Applies a command that must see every command before it committed
  // (AppliesAlone: a policy activation, an import step), before
  // returning; `response` gets the serialized outcome when OK. Called
  // when no write is being applied.
  virtual absl::Status ApplyAlone(const replication::v1::Command& command, int64_t sequence,
                                  std::string* response) = 0;
};

// Thread safe. Stop (or the destructor) before the store closes.
class Replicator {
 public:
  // Opens the log and starts applying it from the command after the
  // store's AppliedSequence. `store` and `applier` must outlive the
  // Replicator. kUnavailable when the NATS cluster does not answer.
  static absl::StatusOr<std::unique_ptr<Replicator>> Start(const ReplicationOptions& options,
                                                           storage::ConsentStore* store,
                                                           CommandApplier* applier);
  ~Replicator();
  Replicator(const Replicator&) = delete;
  Replicator& operator=(const Replicator&) = delete;

  // Appends `command` (validated and stamped: its time, caller and write;
  // origin and call are set here) under message id `request_id` (a new
  // one when empty), then calls `done` with the outcome of applying it
  // here, on the thread that applied it. kUnavailable when the log does
  // not acknowledge it (the outcome is unknown: it may still be applied)
  // or it is not applied here within apply_wait; kInvalidArgument when it
  // is larger than the log takes.
  void Submit(replication::v1::Command command, const std::string& request_id,
              CommandApplier::Done done);

  // Submit without a request id, waiting for the outcome: OK with the
  // serialized response parsed into `answer`, or Submit's error
  // (kInternal when the response does not parse as `answer`).
  absl::Status SubmitAndWait(replication::v1::Command command,
                             google::protobuf::MessageLite* answer);

  // The largest command the log takes, in bytes (serialized).
  int64_t max_command_bytes() const { return options_.log.max_message_bytes; }

  // Waits until this replica has applied every command the log held when
  // called, or `timeout` passes (kDeadlineExceeded), reporting progress
  // through `progress(applied, target)` about every 5 s (may be empty).
  absl::Status AwaitCaughtUp(absl::Duration timeout,
                             const std::function<void(int64_t, int64_t)>& progress);

  struct Stats {
    // The log's last sequence (as last read, about once a second) and the
    // last sequence applied here (committed, refused or replayed).
    int64_t log_sequence = 0;
    int64_t applied_sequence = 0;
    // Commands applied since start; commands that failed to apply for a
    // storage failure and were applied again; commands that did not parse.
    int64_t applied_commands = 0;
    int64_t reapplied_commands = 0;
    int64_t malformed_commands = 0;
    // Writes waiting for their command to be applied here.
    int64_t waiting_writes = 0;
    // True once the log was seen to end before what this replica applied
    // (the NATS cluster lost acknowledged commands): it applies nothing
    // more and refuses writes (docs/replication.md).
    bool log_lost = false;
  };
  Stats stats() const;

  // Called after each append with how long it took (acknowledged or not)
  // and whether it was; from the appending threads. Set before Submit.
  void set_on_append(std::function<void(absl::Duration, bool acknowledged)> on_append) {
    on_append_ = std::move(on_append);
  }

  // Answers what waits with kUnavailable, stops appending and applying,
  // and waits for the commands being applied. Idempotent.
  void Stop();

 private:
  Replicator(const ReplicationOptions& options, storage::ConsentStore* store,
             CommandApplier* applier, std::unique_ptr<storage::JetStreamLog> log,
             std::string origin);
  struct Waiter {
    CommandApplier::Done done;
    int64_t sequence = 0;  // once appended
    absl::Time deadline = absl::InfiniteFuture();
  };
  struct Append {
    uint64_t call = 0;
    std::string msg_id;
    std::string request_id;
    std::string bytes;
  };
  void RunAppender();
  void RunApplier();
  // Appends one command, retrying under the same id; answers its caller
  // when that fails.
  void AppendOne(Append& append);
  // Hands the outcome of the command at `sequence` to its caller, if it
  // was this process's and the caller still waits.
  void Answer(const replication::v1::Command& command, absl::Status status, std::string response);
  // Takes the caller of `call` out of waiting; null when none waits.
  CommandApplier::Done TakeWaiter(uint64_t call) ABSL_LOCKS_EXCLUDED(mu_);
  // Answers the callers whose commands were not applied in time; at most
  // every 100 ms, however often called.
  void ExpireWaiters();
  // Applies one delivered command (the applying thread).
  void ApplyOne(storage::LoggedCommand logged);

  const ReplicationOptions options_;
  storage::ConsentStore* const store_;
  CommandApplier* const applier_;
  const std::unique_ptr<storage::JetStreamLog> log_;
  const std::string origin_;
  std::function<void(absl::Duration, bool)> on_append_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_call_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<uint64_t, Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  std::deque<Append> appends_ ABSL_GUARDED_BY(mu_);
  // Commands handed to the applier and not yet answered.
  int applying_ ABSL_GUARDED_BY(mu_) = 0;
  // A command failed to apply for a storage failure: the applying thread
  // reads the log again from the store's AppliedSequence.
  bool reapply_ ABSL_GUARDED_BY(mu_) = false;
  Stats stats_ ABSL_GUARDED_BY(mu_);
  absl::Time last_expiry_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();

  absl::Mutex threads_mu_;
  std::vector<std::thread> appenders_ ABSL_GUARDED_BY(threads_mu_);
  std::thread applier_thread_ ABSL_GUARDED_BY(threads_mu_);
};

// Sets what every command carries from the replica that accepts it: the
// time it is stamped with and the caller.
void StampCommand(const std::string& caller, absl::Time now, replication::v1::Command* command);

// Whether `command` is applied alone (CommandApplier::ApplyAlone).
bool AppliesAlone(const replication::v1::Command& command);

// Whether a status from applying a command is the same on every replica
// (a refusal by the write rules) rather than a storage failure here.
bool IsDeterministicOutcome(const absl::Status& status);

}  // namespace consent

#endif  // CONSENT_SERVER_REPLICATION_H_
