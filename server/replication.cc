#include "server/replication.h"

#include <pthread.h>

#include <algorithm>
#include <random>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "core/proto_time.h"
#include "server/log.h"

namespace consent {
namespace {

using replication::v1::Command;

// Names this process in the commands it appends: random, so that a
// restarted replica never takes an earlier process's command for its own.
std::string NewOrigin() {
  std::random_device random;
  std::string bytes(12, '\0');
  for (char& c : bytes) c = static_cast<char>(random() & 0xff);
  return absl::BytesToHexString(bytes);
}

}  // namespace

void StampCommand(const std::string& caller, absl::Time now, Command* command) {
  *command->mutable_time() = ToProto(now);
  command->set_caller(caller);
}

bool AppliesAlone(const Command& command) {
  return command.write_case() == Command::kActivatePolicy ||
         command.write_case() == Command::kImportStep;
}

bool IsDeterministicOutcome(const absl::Status& status) {
  return status.ok() || storage::IsRefusal(status);
}

absl::StatusOr<std::unique_ptr<Replicator>> Replicator::Start(const ReplicationOptions& options,
                                                              storage::ConsentStore* store,
                                                              CommandApplier* applier) {
  if (options.appenders < 1 || options.append_attempts < 1 || options.max_applying < 1) {
    return absl::InvalidArgumentError(
        "replication needs at least one appender, one append attempt and one command applying");
  }
  auto log = storage::JetStreamLog::Open(options.log);
  if (!log.ok()) return log.status();
  // A store that applied commands the log does not hold: the NATS cluster
  // lost acknowledged commands (docs/replication.md, "Guarantees"), and
  // what it appends next would take their sequences.
  absl::StatusOr<int64_t> applied = store->AppliedSequence();
  if (!applied.ok()) return applied.status();
  absl::StatusOr<uint64_t> last = (*log)->LastSequence();
  if (!last.ok()) return last.status();
  if (*applied > static_cast<int64_t>(*last)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this replica applied the command log through ", *applied, " but the log ends at ", *last,
        ": the NATS cluster lost commands it had acknowledged; see docs/replication.md, "
        "\"When the log lost commands\""));
  }
  std::unique_ptr<Replicator> replicator(
      new Replicator(options, store, applier, *std::move(log), NewOrigin()));
  absl::MutexLock lock(&replicator->threads_mu_);
  for (int i = 0; i < options.appenders; ++i) {
    replicator->appenders_.emplace_back([r = replicator.get()] { r->RunAppender(); });
    pthread_setname_np(replicator->appenders_.back().native_handle(), "consent-append");
  }
  replicator->applier_thread_ = std::thread([r = replicator.get()] { r->RunApplier(); });
  pthread_setname_np(replicator->applier_thread_.native_handle(), "consent-apply");
  return replicator;
}

Replicator::Replicator(const ReplicationOptions& options, storage::ConsentStore* store,
                       CommandApplier* applier, std::unique_ptr<storage::JetStreamLog> log,
                       std::string origin)
    : options_(options),
      store_(store),
      applier_(applier),
      log_(std::move(log)),
      origin_(std::move(origin)) {}

Replicator::~Replicator() { Stop(); }

void Replicator::Submit(Command command, const std::string& request_id, CommandApplier::Done done) {
  uint64_t call = 0;
  absl::Status refused;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      refused = absl::UnavailableError("the replica is shutting down; retry on another");
    } else if (stats_.log_lost) {
      refused = absl::UnavailableError(
          "this replica stopped: the replicated command log lost commands it had applied "
          "(docs/replication.md); retry on another replica");
    } else {
      call = next_call_++;
      waiters_[call].done = std::move(done);
    }
  }
  if (!refused.ok()) return done(std::move(refused), "");
  command.set_origin(origin_);
  command.set_call(call);
  Append append;
  append.call = call;
  append.request_id = request_id;
  // Without a request id, an id of the call's own: an append retried after
  // a lost acknowledgement is still recognised.
  append.msg_id = request_id.empty() ? absl::StrCat(origin_, "-", call) : request_id;
  append.bytes = command.SerializeAsString();
  absl::MutexLock lock(&mu_);
  appends_.push_back(std::move(append));
}

absl::Status Replicator::SubmitAndWait(Command command, google::protobuf::MessageLite* answer) {
  absl::Status status;
  absl::Notification answered;
  Submit(std::move(command), "", [&](absl::Status s, std::string bytes) {
    status = std::move(s);
    if (status.ok() && !answer->ParseFromString(bytes)) {
      status = absl::InternalError(
          absl::StrCat("a replicated answer does not parse as ", answer->GetTypeName()));
    }
    answered.Notify();
  });
  answered.WaitForNotification();
  return status;
}

void Replicator::RunAppender() {
  while (true) {
    Append append;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !appends_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (stopping_) return;  // Stop answers what is left
      append = std::move(appends_.front());
      appends_.pop_front();
    }
    AppendOne(append);
  }
}

void Replicator::AppendOne(Append& append) {
  absl::Status failure;
  bool renamed = false;
  // Retried under the same id until append_attempts appends have had their
  // whole wait: a stream without a leader (an election) refuses at once,
  // so quick refusals are retried after a pause, up to that deadline.
  const absl::Time deadline = absl::Now() + options_.append_attempts * options_.log.timeout;
  absl::Duration pause = absl::Milliseconds(50);
  while (true) {
    const absl::Time start = absl::Now();
    absl::StatusOr<storage::JetStreamLog::Appended> appended =
        log_->Append(append.msg_id, append.bytes);
    if (on_append_) on_append_(absl::Now() - start, appended.ok());
    if (appended.ok() && appended->duplicate && !append.request_id.empty() && !renamed) {
      // The log already holds a command under this request id: this call's
      // own (an append retried after a lost acknowledgement), or another
      // call's (the request retried elsewhere, or another request reusing
      // the id). Under an id of its own this command is applied too, and
      // resolves its request id as a standalone write would: a replay, or
      // a conflict. Whichever of the two is this call's answers it.
      append.msg_id = absl::StrCat(append.request_id, "#", origin_, "-", append.call);
      renamed = true;
      continue;
    }
    if (appended.ok()) {
      absl::MutexLock lock(&mu_);
      auto it = waiters_.find(append.call);
      if (it != waiters_.end()) {
        it->second.sequence = static_cast<int64_t>(appended->sequence);
        it->second.deadline = absl::Now() + options_.apply_wait;
      }
      return;
    }
    failure = appended.status();
    if (!absl::IsUnavailable(failure)) break;  // too large: retrying cannot help
    if (absl::Now() + pause >= deadline) break;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
    }
    if (absl::Now() - start < pause) absl::SleepFor(pause);
    pause = std::min(pause * 2, absl::Seconds(1));
  }
  CommandApplier::Done done = TakeWaiter(append.call);
  if (done == nullptr) return;
  if (absl::IsUnavailable(failure)) {
    failure = absl::UnavailableError(absl::StrCat(
        "the replicated command log did not acknowledge the write (", failure.message(),
        "); it may or may not have been recorded: retry with the same request_id"));
  }
  done(failure, "");
}

CommandApplier::Done Replicator::TakeWaiter(uint64_t call) {
  absl::MutexLock lock(&mu_);
  auto it = waiters_.find(call);
  if (it == waiters_.end()) return nullptr;
  CommandApplier::Done done = std::move(it->second.done);
  waiters_.erase(it);
  return done;
}

void Replicator::Answer(const Command& command, absl::Status status, std::string response) {
  if (command.origin() != origin_) return;
  CommandApplier::Done done = TakeWaiter(command.call());
  if (done != nullptr) done(std::move(status), std::move(response));
}

void Replicator::ExpireWaiters() {
  std::vector<std::pair<int64_t, CommandApplier::Done>> expired;
  int64_t applied = 0;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    if (now - last_expiry_ < absl::Milliseconds(100)) return;
    last_expiry_ = now;
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (it->second.sequence > 0 && it->second.deadline < now) {
        expired.emplace_back(it->second.sequence, std::move(it->second.done));
        waiters_.erase(it++);
      } else {
        ++it;
      }
    }
    applied = stats_.applied_sequence;
  }
  for (auto& [sequence, done] : expired) {
    done(absl::UnavailableError(absl::StrCat(
             "the write is in the replicated command log at sequence ", sequence,
             " but this replica has applied only through ", applied, " within ",
             absl::FormatDuration(options_.apply_wait),
             "; it will take effect: retry with the same request_id to learn its outcome")),
         "");
  }
}

void Replicator::RunApplier() {
  const absl::Duration kPoll = absl::Milliseconds(100);
  std::unique_ptr<storage::JetStreamLog::Reader> reader;
  int64_t next = 0;  // the sequence the reader delivers next
  // Where a new reader starts: 0 for after what the store has applied.
  int64_t resume_from = 0;
  absl::Time last_log_read = absl::InfinitePast();
  absl::Time last_delivery = absl::Now();
  while (true) {
    bool log_lost = false;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
      log_lost = stats_.log_lost;
    }
    if (log_lost) {
      // Nothing more is applied: the next commands appended would take the
      // sequences this replica applied with other commands.
      reader.reset();
      ExpireWaiters();
      absl::SleepFor(absl::Seconds(1));
      continue;
    }
    {
      absl::MutexLock lock(&mu_);
      if (reapply_) {
        // A command failed for a storage failure: once nothing is being
        // applied, read again from what the store has applied (a command
        // after it that wrote nothing has the same outcome again).
        auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return applying_ == 0; };
        mu_.Await(absl::Condition(&idle));
        reapply_ = false;
        reader.reset();
        resume_from = 0;
      }
    }
    if (reader == nullptr) {
      absl::StatusOr<int64_t> applied =
          resume_from > 0 ? absl::StatusOr<int64_t>(resume_from - 1) : store_->AppliedSequence();
      absl::StatusOr<std::unique_ptr<storage::JetStreamLog::Reader>> opened =
          applied.ok()
              ? log_->ReadFrom(static_cast<uint64_t>(*applied + 1))
              : absl::StatusOr<std::unique_ptr<storage::JetStreamLog::Reader>>(applied.status());
      if (!opened.ok()) {
        LogWarning("cannot read the replicated command log; trying again",
                   {{"error", std::string(opened.status().message())}});
        ExpireWaiters();
        absl::SleepFor(absl::Seconds(1));
        continue;
      }
      reader = *std::move(opened);
      next = *applied + 1;
      last_delivery = absl::Now();
      if (resume_from == 0) {
        absl::MutexLock lock(&mu_);
        stats_.applied_sequence = std::max(stats_.applied_sequence, *applied);
      }
    }
    absl::StatusOr<std::optional<storage::LoggedCommand>> delivered = reader->Next(kPoll);
    if (!delivered.ok()) {
      LogWarning(
          "reading the replicated command log failed; reading again",
          {{"error", std::string(delivered.status().message())}, {"next", absl::StrCat(next)}});
      reader.reset();
      resume_from = next;  // what was delivered is being applied
      absl::SleepFor(kPoll);
    } else if (delivered->has_value()) {
      if (static_cast<int64_t>((*delivered)->sequence) != next) {
        // The log no longer holds what this replica needs next (its
        // retention dropped it): only a newer backup can catch it up.
        LogError(
            "the replicated command log does not hold the next command this replica needs; "
            "start it from a newer backup (docs/replication.md)",
            {{"needed", absl::StrCat(next)}, {"delivered", absl::StrCat((*delivered)->sequence)}});
        reader.reset();
        resume_from = next;
        ExpireWaiters();
        absl::SleepFor(absl::Seconds(5));
        continue;
      }
      next = static_cast<int64_t>((*delivered)->sequence) + 1;
      last_delivery = absl::Now();
      ApplyOne(*std::move(*delivered));
    } else {
      // Nothing delivered although the log holds more: the server holding
      // the reader may have failed. Read again from where it stopped.
      int64_t log_sequence = 0;
      {
        absl::MutexLock lock(&mu_);
        log_sequence = stats_.log_sequence;
      }
      if (log_sequence >= next && absl::Now() - last_delivery > absl::Seconds(2)) {
        LogWarning("the replicated command log's reader is stalled; reading again",
                   {{"next", absl::StrCat(next)}, {"log_sequence", absl::StrCat(log_sequence)}});
        reader.reset();
        resume_from = next;
      }
    }
    ExpireWaiters();
    if (absl::Now() - last_log_read >= absl::Seconds(1)) {
      last_log_read = absl::Now();
      if (absl::StatusOr<uint64_t> last = log_->LastSequence(); last.ok()) {
        absl::MutexLock lock(&mu_);
        stats_.log_sequence = static_cast<int64_t>(*last);
        if (stats_.log_sequence + 1 < next) {
          stats_.log_lost = true;
          LogError(
              "the replicated command log ends before what this replica applied: the NATS "
              "cluster lost commands it had acknowledged; this replica applies nothing more and "
              "refuses writes (docs/replication.md, \"When the log lost commands\")",
              {{"log_sequence", absl::StrCat(stats_.log_sequence)},
               {"applied_through", absl::StrCat(next - 1)}});
        }
      }
    }
  }
  // Stop: wait for what is being applied.
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return applying_ == 0; };
  mu_.Await(absl::Condition(&idle));
}

void Replicator::ApplyOne(storage::LoggedCommand logged) {
  const int64_t sequence = static_cast<int64_t>(logged.sequence);
  auto command = std::make_shared<Command>();
  if (!command->ParseFromString(logged.bytes) || command->write_case() == Command::WRITE_NOT_SET) {
    // The same on every replica: skipped by all.
    LogError("a command of the replicated log does not parse; skipped",
             {{"sequence", absl::StrCat(sequence)}, {"msg_id", logged.msg_id}});
    absl::MutexLock lock(&mu_);
    ++stats_.malformed_commands;
    stats_.applied_sequence = std::max(stats_.applied_sequence, sequence);
    return;
  }
  if (AppliesAlone(*command)) {
    {
      absl::MutexLock lock(&mu_);
      auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return applying_ == 0; };
      mu_.Await(absl::Condition(&idle));
      if (reapply_) return;  // read again from before a failed write
    }
    std::string response;
    absl::Status status = applier_->ApplyAlone(*command, sequence, &response);
    {
      absl::MutexLock lock(&mu_);
      if (!IsDeterministicOutcome(status)) {
        reapply_ = true;
        ++stats_.reapplied_commands;
        return;
      }
      ++stats_.applied_commands;
      stats_.applied_sequence = std::max(stats_.applied_sequence, sequence);
    }
    Answer(*command, std::move(status), std::move(response));
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return applying_ < options_.max_applying;
    };
    mu_.Await(absl::Condition(&room));
    ++applying_;
  }
  applier_->ApplyWrite(*command, sequence,
                       [this, command, sequence](absl::Status status, std::string response) {
                         const bool deterministic = IsDeterministicOutcome(status);
                         {
                           absl::MutexLock lock(&mu_);
                           --applying_;
                           if (!deterministic) {
                             reapply_ = true;
                             ++stats_.reapplied_commands;
                           } else {
                             ++stats_.applied_commands;
                             stats_.applied_sequence = std::max(stats_.applied_sequence, sequence);
                           }
                         }
                         if (deterministic) {
                           Answer(*command, std::move(status), std::move(response));
                         }
                       });
}

absl::Status Replicator::AwaitCaughtUp(absl::Duration timeout,
                                       const std::function<void(int64_t, int64_t)>& progress) {
  absl::StatusOr<uint64_t> last = log_->LastSequence();
  if (!last.ok()) return last.status();
  const int64_t target = static_cast<int64_t>(*last);
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock lock(&mu_);
  auto caught_up = [this, target]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || stats_.applied_sequence >= target;
  };
  while (!mu_.AwaitWithDeadline(absl::Condition(&caught_up),
                                std::min(deadline, absl::Now() + absl::Seconds(5)))) {
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("applied the replicated command log through ",
                                                      stats_.applied_sequence, " of ", target,
                                                      " within ", absl::FormatDuration(timeout)));
    }
    if (progress) progress(stats_.applied_sequence, target);
  }
  if (stopping_) return absl::UnavailableError("the replica is shutting down");
  return absl::OkStatus();
}

Replicator::Stats Replicator::stats() const {
  absl::MutexLock lock(&mu_);
  Stats stats = stats_;
  stats.waiting_writes = static_cast<int64_t>(waiters_.size());
  return stats;
}

void Replicator::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  {
    absl::MutexLock lock(&threads_mu_);
    for (std::thread& t : appenders_) {
      if (t.joinable()) t.join();
    }
    if (applier_thread_.joinable()) applier_thread_.join();
  }
  std::vector<CommandApplier::Done> left;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [call, waiter] : waiters_) left.push_back(std::move(waiter.done));
    waiters_.clear();
    appends_.clear();
  }
  for (auto& done : left) {
    done(absl::UnavailableError(
             "the replica shut down before the write's outcome was known; retry with the same "
             "request_id"),
         "");
  }
}

}  // namespace consent
