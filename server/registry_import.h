// Bulk import (ImportSubjects): each record of an import stands for the
// writes an account-settings backend would have made — its attributes an
// UpdateSubject, each preference a SetPreference, in order — and is
// committed through the store's commit pipeline like them, so it is
// ordered with every other write and reads the subject as it is when it
// applies. A message's records are one step (ConsentStore::ImportAsync),
// committed with the import's progress, so a step applies once however
// often it is sent.
//
// With replication (replication.h) a step is a command of the replicated
// log (replication::v1::ImportStep): its valid records, appended and
// applied on every replica like any write, with the records at or below
// the import's progress at that place in the log skipped.
#ifndef CONSENT_SERVER_REGISTRY_IMPORT_H_
#define CONSENT_SERVER_REGISTRY_IMPORT_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "consent/replication/v1/command.pb.h"
#include "consent/v1/registry.pb.h"
#include "core/clock.h"
#include "core/policy.h"
#include "server/registry_writes.h"
#include "server/replication.h"
#include "server/revision_notifier.h"
#include "storage/consent_store.h"

namespace consent {

// ImportSubjectsRequest.records, at most.
inline constexpr int kMaxImportRecords = 1000;
// ImportSubjectsResponse.rejections, at most.
inline constexpr int kMaxImportRejections = 100;

// Why `record` may not be imported under `policy` at `now` (the field at
// fault and the problem); none when it may.
std::optional<v1::ImportRejection> ImportRecordProblem(const v1::ImportRecord& record,
                                                       const CompiledPolicy& policy,
                                                       absl::Time now);

// Records of one step made into the store's updates, for `caller`. Used
// by one thread at a time; `records` must outlive it, and it must outlive
// the commit of its updates.
class ImportBatch {
 public:
  ImportBatch(std::string import_id, std::string caller,
              const google::protobuf::RepeatedPtrField<v1::ImportRecord>* records);
  ImportBatch(const ImportBatch&) = delete;
  ImportBatch& operator=(const ImportBatch&) = delete;

  // Validates the records from `first` on at `now` (ImportRecordProblem)
  // and returns the updates of the valid ones, in record order. Once.
  std::vector<storage::SubjectUpdate> Prepare(const CompiledPolicy& policy, absl::Time now,
                                              int first);
  // Once the updates are committed: the records rejected, by validation
  // or when applied (a deleted subject), in offset order.
  std::vector<v1::ImportRejection> Rejections() const;
  // The records Prepare took (those from `first` on).
  int64_t records() const { return records_; }

 private:
  // What each update of record `r` does first: a deleted subject refuses
  // the record, as it refuses writes (the update skips itself), and true
  // is returned.
  bool Refused(int r, storage::UpdateContext& context, const v1::Subject& subject);
  // What each does last: the event's kind, caller, request id
  // ("<import id>:<offset>") and source (channel "import").
  void Describe(int r, v1::ChangeKind kind, v1::ChangeEvent& event) const;

  const std::string import_id_;
  const std::string caller_;
  const google::protobuf::RepeatedPtrField<v1::ImportRecord>* const records_in_;
  v1::Source source_;
  int64_t records_ = 0;
  std::vector<v1::ImportRejection> invalid_;
  // Per record: refused when applied, the subject being deleted. Written
  // by the store's preparing thread, read once the commit is answered.
  std::vector<char> deleted_;
};

// Thread safe. Does not own its collaborators, which must outlive it and
// every Call.
class RegistryImport {
 public:
  RegistryImport(storage::ConsentStore* store, PolicyHolder* policies, const Clock* clock,
                 RevisionNotifier* notifier)
      : store_(store), policies_(policies), clock_(clock), notifier_(notifier) {}

  // Replication: from now on each step is a command of `replicator`'s log.
  // Call once, before serving.
  void set_replicator(Replicator* replicator) { replicator_ = replicator; }

  class Call;
  // Called after each step is answered: the records it applied and
  // rejected, and its status. May be empty.
  using StepObserver = std::function<void(int64_t imported, int64_t rejected, const absl::Status&)>;

  // Starts one ImportSubjects call of import `import_id` for `context`'s
  // caller. kInvalidArgument (field import_id) for a bad id; kAborted
  // while another call to this consentd is importing the same id (the
  // progress of an import moves on one call at a time).
  absl::StatusOr<std::unique_ptr<Call>> Begin(const std::string& import_id, CallContext context,
                                              StepObserver on_step = {});

 private:
  friend class Call;
  void End(const std::string& import_id);

  storage::ConsentStore* const store_;
  PolicyHolder* const policies_;
  const Clock* const clock_;
  RevisionNotifier* const notifier_;
  Replicator* replicator_ = nullptr;  // null: standalone
  absl::Mutex mu_;
  absl::flat_hash_set<std::string> running_ ABSL_GUARDED_BY(mu_);
};

// One call: its messages in order, each committed as one step without
// waiting for the previous ones to sync (at most kMaxInFlight unanswered).
// With replication, each step is appended and applied before the next is
// appended (the log keeps the call's steps in order), and a step larger
// than the log's largest command is split into several.
// Used by one thread at a time.
class RegistryImport::Call {
 public:
  ~Call();  // waits for the steps in flight, then ends the call
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;

  // The offset the import was applied through (here) when the call began.
  int64_t acknowledged_at_start() const { return start_offset_; }

  // Takes the call's next message. Its records at or below the offset
  // acknowledged when the call began are skipped; each other record is
  // validated (a bad one is rejected: ImportSubjectsResponse.rejections)
  // and the rest committed as one step. Errors end the call:
  // kInvalidArgument for a message that breaks the call's rules (another
  // import_id, more than kMaxImportRecords records, an offset not above
  // the one before), or an earlier step's failure.
  absl::Status Add(std::unique_ptr<v1::ImportSubjectsRequest> message);

  // Waits for every step, then fills `response`; the call's status: OK
  // when every step was committed, else the first failure.
  absl::Status Finish(v1::ImportSubjectsResponse* response);

 private:
  friend class RegistryImport;
  static constexpr int kMaxInFlight = 4;
  struct Step;
  Call(RegistryImport* owner, std::string import_id, CallContext context, int64_t start_offset,
       StepObserver on_step);
  // Replication: appends the message's records from `first` on as one or
  // more commands, each once the one before is applied here.
  absl::Status AddReplicated(const v1::ImportSubjectsRequest& message, int first);
  // Appends `command` and waits for it to be applied here; `invalid`
  // holds the rejections of the records it covers that were not valid
  // here (and so are not in it).
  absl::Status SubmitStep(replication::v1::Command command,
                          std::vector<v1::ImportRejection> invalid);
  void Answered(Step* step, absl::StatusOr<storage::CommitResult> result);
  // Counts a step's outcome (under mu_).
  void Count(int64_t imported, int64_t skipped, std::vector<v1::ImportRejection> rejections,
             int64_t acknowledged) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AwaitInFlight(int at_most);

  RegistryImport* const owner_;
  const std::string import_id_;
  const CallContext context_;
  const int64_t start_offset_;
  const StepObserver on_step_;
  int64_t last_offset_;  // of the last record taken (Add's thread only)

  absl::Mutex mu_;
  std::deque<std::unique_ptr<Step>> in_flight_ ABSL_GUARDED_BY(mu_);
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  int64_t acknowledged_ ABSL_GUARDED_BY(mu_);
  int64_t imported_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t rejected_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t skipped_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<v1::ImportRejection> rejections_ ABSL_GUARDED_BY(mu_);
};

}  // namespace consent

#endif  // CONSENT_SERVER_REGISTRY_IMPORT_H_
