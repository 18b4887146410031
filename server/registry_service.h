// gRPC adapters: consent.v1.ConsentRegistry and consent.v1.ConsentAdmin over
// Registry and the policy holder. They translate statuses (errors.h) and
// nothing else.
#ifndef CONSENT_SERVER_REGISTRY_SERVICE_H_
#define CONSENT_SERVER_REGISTRY_SERVICE_H_

#include <array>
#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "consent/v1/admin.grpc.pb.h"
#include "consent/v1/registry.grpc.pb.h"
#include "core/clock.h"
#include "core/policy.h"
#include "server/authenticator.h"
#include "server/drain_gate.h"
#include "server/errors.h"
#include "server/metrics.h"
#include "server/registry.h"
#include "server/rpc.h"
#include "server/wire.h"
#include "server/worker_pool.h"

namespace consent {

// A unary call's reactor that leaves the drain gate when gRPC is done with
// the call, then deletes itself.
class GatedReactor final : public grpc::ServerUnaryReactor {
 public:
  explicit GatedReactor(DrainGate* gate) : gate_(gate) {}
  void OnDone() override {
    gate_->Exit();
    delete this;
  }

 private:
  DrainGate* gate_;
};

// Per-call bookkeeping shared by both services: admission through the
// drain gate, authorization (when the server has an auth file),
// grpc_server_* metrics (when `metrics` is not null), and an error line for
// failures that are the server's own (INTERNAL, DATA_LOSS, UNKNOWN).
//
// Every handler runs through Serve, ServeFrom or ServeAsync and is given
// the authorized caller; a call that is refused never reaches it, so a
// refused caller learns nothing about the request's fields.
class CallAccounting {
 public:
  CallAccounting(DrainGate* gate, Metrics* metrics);

  // The auth file calls are authorized against; null (the default) serves
  // every caller. Set before serving.
  void set_auth(const AuthHolder* auth) { auth_ = auth; }

  // The caller of `context`'s call, if it may call `rpc` (AuthHolder::Authorize).
  absl::StatusOr<Authorized> Authorize(const grpc::ServerContextBase& context, Rpc rpc) const {
    if (auth_ == nullptr) return Authorized();
    return auth_->Authorize(context, rpc);
  }

  // Runs `handler(const Authorized&)` (returning grpc::Status) if the gate
  // admits the call and its caller may make it. `request_id` (may be
  // empty) goes into the error line.
  template <typename Handler>
  grpc::Status Serve(const grpc::ServerContextBase& context, Rpc rpc, absl::string_view request_id,
                     Handler&& handler) {
    const int64_t start = NowNanos();
    return ServeFrom(start, rpc, request_id, Authorize(context, rpc), handler);
  }
  // Serve for a call that arrived at `start` (NowNanos()), was authorized
  // then (`who`: the caller, or why it is refused) and has waited for a
  // thread since: the wait counts in its handling time.
  template <typename Handler>
  grpc::Status ServeFrom(int64_t start, Rpc rpc, absl::string_view request_id,
                         const absl::StatusOr<Authorized>& who, Handler&& handler) {
    MethodMetrics* method = methods_[static_cast<int>(rpc)];
    if (method == nullptr) return Finish(rpc, request_id, Admit(who, handler));
    method->Started();
    grpc::Status status = Admit(who, handler);
    method->Handled(status.error_code(), absl::Nanoseconds(NowNanos() - start));
    return Finish(rpc, request_id, std::move(status));
  }

  // Serve for a unary call that finishes later: `start(who, finish)` begins
  // it and `finish(status)`, called once from any thread, ends it (metrics,
  // error line, the answer). Returns the call's reactor. The call counts as
  // in flight until gRPC is done with it — its answer sent, or the call
  // cancelled — so a drain that ends does not cut answers off.
  template <typename Start>
  grpc::ServerUnaryReactor* ServeAsync(grpc::CallbackServerContext* context, Rpc rpc,
                                       absl::string_view request_id, Start start) {
    MethodMetrics* method = methods_[static_cast<int>(rpc)];
    const int64_t begin = NowNanos();
    if (method != nullptr) method->Started();
    auto finish = [this, rpc, request_id, method, begin](grpc::ServerUnaryReactor* reactor,
                                                         grpc::Status status) {
      if (method != nullptr) {
        method->Handled(status.error_code(), absl::Nanoseconds(NowNanos() - begin));
      }
      reactor->Finish(Finish(rpc, request_id, std::move(status)));
    };
    if (!gate_->Enter()) {
      grpc::ServerUnaryReactor* refused = context->DefaultReactor();
      finish(refused, Draining());
      return refused;
    }
    absl::StatusOr<Authorized> who = Authorize(*context, rpc);
    if (!who.ok()) {
      gate_->Exit();
      grpc::ServerUnaryReactor* refused = context->DefaultReactor();
      finish(refused, ToGrpcStatus(who.status()));
      return refused;
    }
    auto* reactor = new GatedReactor(gate_);
    start(*who, [finish, reactor](grpc::Status status) { finish(reactor, std::move(status)); });
    return reactor;
  }

  // The status of a call refused (or a stream ended) because of shutdown.
  static grpc::Status Draining();
  // A steady clock, in nanoseconds.
  static int64_t NowNanos();

  DrainGate* gate() const { return gate_; }
  Metrics* metrics() const { return metrics_; }
  MethodMetrics* method(Rpc rpc) const { return methods_[static_cast<int>(rpc)]; }

 private:
  template <typename Handler>
  grpc::Status Admit(const absl::StatusOr<Authorized>& who, Handler& handler) {
    DrainGuard guard(gate_);
    if (!guard.admitted()) return Draining();
    if (!who.ok()) return ToGrpcStatus(who.status());
    return handler(*who);
  }
  grpc::Status Finish(Rpc rpc, absl::string_view request_id, grpc::Status status);

  DrainGate* gate_;
  Metrics* metrics_;
  const AuthHolder* auth_ = nullptr;
  std::array<MethodMetrics*, kRpcCount> methods_{};
};

// The unary methods are served on gRPC's callback API. Check and BatchCheck
// run inline on gRPC's threads: they wait for nothing but memory (the
// subject index) or, with the index off or loading, RocksDB reads, and so
// skip a hand-off to another thread (docs/performance.md, "Reads on the
// callback API"). The writes are validated inline and handed to the
// store's commit pipeline, which answers them when they are synced
// (Registry's asynchronous writes); no thread waits for them. GetSubject
// and ListHistory wait for RocksDB and run on a fixed pool of worker
// threads. The streams stay synchronous.
// What many calls together may hold (docs/reliability.md, "Admission").
struct AdmissionLimits {
  // GetSubject, GetSubjectSummary and ListHistory threads, and calls
  // waiting for one, at most.
  int worker_threads = 16;
  size_t max_queued_reads = 1024;
  // StreamCheck and WatchChanges streams open at once (each holds a thread
  // of the synchronous server).
  int max_streams = 64;
  // A WatchChanges stream whose client has read nothing for this long (a
  // write blocked by flow control) is ended.
  absl::Duration watch_idle_timeout = absl::Seconds(60);
};

// consent.v1.ConsentRegistry over Registry: each handler authorizes its
// caller (the RPC's role, rpc.h), admits the call, hands it to Registry
// and translates the outcome (ToGrpcStatus), counting metrics and logging
// writes. Unary calls on gRPC's callback API: checks inline, writes
// answered by the store's commit pipeline, reads that may wait on disk on
// a worker pool. Streams on gRPC's synchronous API, bounded by
// AdmissionLimits. Thread safe; outlives no call (the server drains them
// before destroying it).
class RegistryService final
    : public v1::ConsentRegistry::WithCallbackMethod_SetPreference<
          v1::ConsentRegistry::WithCallbackMethod_BatchSetPreferences<
              v1::ConsentRegistry::WithCallbackMethod_UpdateSubject<
                  v1::ConsentRegistry::WithCallbackMethod_SetContentExclusion<
                      v1::ConsentRegistry::WithCallbackMethod_DeleteSubject<
                          v1::ConsentRegistry::WithCallbackMethod_GetSubject<
                              v1::ConsentRegistry::WithCallbackMethod_Check<
                                  v1::ConsentRegistry::WithRawCallbackMethod_BatchCheck<
                                      v1::ConsentRegistry::WithCallbackMethod_ListHistory<
                                          v1::ConsentRegistry::WithCallbackMethod_RecordNotice<
                                              v1::ConsentRegistry::
                                                  WithCallbackMethod_BatchRecordNotices<
                                                      v1::ConsentRegistry::
                                                          WithCallbackMethod_GetSubjectSummary<
                                                              v1::ConsentRegistry::
                                                                  Service>>>>>>>>>>>> {
 public:
  // Calls are admitted through `calls`' gate: once it drains they get
  // UNAVAILABLE; past `limits`, RESOURCE_EXHAUSTED. `clock` times idle
  // watchers; it must outlive the service.
  RegistryService(Registry* registry, CallAccounting* calls, const AdmissionLimits& limits,
                  const Clock* clock);
  ~RegistryService() override;

  grpc::ServerUnaryReactor* SetPreference(grpc::CallbackServerContext* context,
                                          const v1::SetPreferenceRequest* request,
                                          v1::SetPreferenceResponse* response) override;
  grpc::ServerUnaryReactor* BatchSetPreferences(grpc::CallbackServerContext* context,
                                                const v1::BatchSetPreferencesRequest* request,
                                                v1::BatchSetPreferencesResponse* response) override;
  grpc::ServerUnaryReactor* UpdateSubject(grpc::CallbackServerContext* context,
                                          const v1::UpdateSubjectRequest* request,
                                          v1::UpdateSubjectResponse* response) override;
  grpc::ServerUnaryReactor* SetContentExclusion(grpc::CallbackServerContext* context,
                                                const v1::SetContentExclusionRequest* request,
                                                v1::SetContentExclusionResponse* response) override;
  grpc::ServerUnaryReactor* DeleteSubject(grpc::CallbackServerContext* context,
                                          const v1::DeleteSubjectRequest* request,
                                          v1::DeleteSubjectResponse* response) override;
  grpc::ServerUnaryReactor* GetSubject(grpc::CallbackServerContext* context,
                                       const v1::GetSubjectRequest* request,
                                       v1::GetSubjectResponse* response) override;
  grpc::ServerUnaryReactor* RecordNotice(grpc::CallbackServerContext* context,
                                         const v1::RecordNoticeRequest* request,
                                         v1::RecordNoticeResponse* response) override;
  grpc::ServerUnaryReactor* BatchRecordNotices(grpc::CallbackServerContext* context,
                                               const v1::BatchRecordNoticesRequest* request,
                                               v1::BatchRecordNoticesResponse* response) override;
  grpc::ServerUnaryReactor* GetSubjectSummary(grpc::CallbackServerContext* context,
                                              const v1::GetSubjectSummaryRequest* request,
                                              v1::GetSubjectSummaryResponse* response) override;
  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const v1::CheckRequest* request,
                                  v1::CheckResponse* response) override;
  // Raw: the request parsed here onto an arena, the response written by
  // hand (wire.h: EncodedDecisions).
  grpc::ServerUnaryReactor* BatchCheck(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  // Raw, like BatchCheck (wire.h: RawCheckStream); the constructor
  // registers it as StreamCheck's handler.
  grpc::Status RawStreamCheck(grpc::ServerContext* context, RawCheckStream* stream);
  grpc::ServerUnaryReactor* ListHistory(grpc::CallbackServerContext* context,
                                        const v1::ListHistoryRequest* request,
                                        v1::ListHistoryResponse* response) override;
  grpc::Status WatchChanges(grpc::ServerContext* context, const v1::WatchChangesRequest* request,
                            grpc::ServerWriter<v1::WatchChangesResponse>* writer) override;
  // Counts against the streams' limit, like StreamCheck.
  grpc::Status ImportSubjects(grpc::ServerContext* context,
                              grpc::ServerReader<v1::ImportSubjectsRequest>* reader,
                              v1::ImportSubjectsResponse* response) override;

  // Cancels every open StreamCheck stream (shutdown: an idle stream would
  // otherwise wait in Read until the grace period ends).
  void CancelStreams();

 private:
  // consent_writes_total, and a line per write naming its caller (history's
  // caller: the auth file's name, or the peer address) at info; at debug
  // the line also has the user id (the only place one is logged).
  void AccountWrite(Rpc rpc, WriteKind kind, int count, absl::string_view caller,
                    absl::string_view request_id, absl::string_view user_id,
                    const grpc::Status& status, int64_t revision);

  // How one kind of write is served (ServeWrite).
  template <typename Request, typename Response>
  struct WriteCall {
    Rpc rpc;
    WriteKind kind;
    void (Registry::*write)(const Request&, const CallContext&, Response*, Registry::WriteDone);
    int items;                  // items written (preferences, notices):
                                // consent_writes_total and, for a batch,
                                // consent_batch_items
    absl::string_view user_id;  // for the debug line ("" for a batch)
  };
  // A write: admitted and timed (CallAccounting::ServeAsync), handed to the
  // registry, accounted (AccountWrite) and answered when it is done.
  template <typename Request, typename Response>
  grpc::ServerUnaryReactor* ServeWrite(grpc::CallbackServerContext* context,
                                       const WriteCall<Request, Response>& call,
                                       const Request* request, Response* response);

  // Serves the call (CallAccounting::ServeFrom) on a worker thread and
  // finishes it with the handler's status. The caller is authorized first,
  // on gRPC's thread: a refused call takes no place in the queue. The time
  // it waits for a worker counts in its handling time. A full queue answers
  // RESOURCE_EXHAUSTED.
  template <typename Handler>
  grpc::ServerUnaryReactor* OnWorker(grpc::CallbackServerContext* context, Rpc rpc,
                                     absl::string_view request_id, Handler handler) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    const int64_t arrival = CallAccounting::NowNanos();
    absl::StatusOr<Authorized> who = calls_->Authorize(*context, rpc);
    if (!who.ok()) {
      reactor->Finish(calls_->ServeFrom(arrival, rpc, request_id, who, handler));
      return reactor;
    }
    if (!workers_.TrySchedule([this, reactor, rpc, request_id, handler, arrival, who]() {
          reactor->Finish(calls_->ServeFrom(arrival, rpc, request_id, who, handler));
        })) {
      Rejected(Rejection::kWorkerQueue);
      const grpc::Status full(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          absl::StrCat(limits_.max_queued_reads,
                       " GetSubject, GetSubjectSummary and ListHistory calls are waiting "
                       "already (--max_queued_reads); retry later"));
      reactor->Finish(calls_->ServeFrom(arrival, rpc, request_id, who,
                                        [&full](const Authorized&) { return full; }));
    }
    return reactor;
  }

  // Counts a stream against --max_streams; false (and counted as
  // rejected) when that many are open. LeaveStream when it ends.
  bool EnterStream();
  void LeaveStream() { open_streams_.fetch_sub(1); }
  grpc::Status TooManyStreams() const;
  void Rejected(Rejection reason) {
    if (calls_->metrics() != nullptr) calls_->metrics()->CountRejected(reason);
  }

  // A WatchChanges stream, for the idle-watcher watchdog.
  struct Watcher {
    grpc::ServerContext* context;
    // When the write now blocked began (the clock's time, in Unix
    // nanoseconds), or 0 when no write is in progress.
    std::atomic<int64_t> writing_since{0};
    std::atomic<bool> timed_out{false};
  };
  // Ends (TryCancel) the watchers whose write has been blocked for
  // watch_idle_timeout; runs on its own thread until the service goes.
  void WatchIdleWatchers();

  Registry* registry_;
  CallAccounting* calls_;
  const AdmissionLimits limits_;
  const Clock* clock_;
  // BatchRecordNotices' request and response on an arena: a 1,000-item
  // bulk load parses 4,000 strings (docs/performance.md).
  ArenaMessageAllocator<v1::BatchRecordNoticesRequest, v1::BatchRecordNoticesResponse>
      notices_allocator_;
  WorkerPool workers_;
  std::atomic<int> open_streams_{0};
  absl::Mutex streams_mu_;
  absl::flat_hash_set<grpc::ServerContext*> streams_ ABSL_GUARDED_BY(streams_mu_);
  absl::flat_hash_set<Watcher*> watchers_ ABSL_GUARDED_BY(streams_mu_);
  bool stopping_ ABSL_GUARDED_BY(streams_mu_) = false;
  std::thread watchdog_;
};

// Loads the policy file again (ReloadPolicy and SIGHUP): on success swaps it
// in and returns it; on failure the active policy stays and the error says
// why.
class PolicyReloader {
 public:
  // `metrics` may be null.
  PolicyReloader(std::string path, Registry* registry, Metrics* metrics)
      : path_(std::move(path)), registry_(registry), metrics_(metrics) {}
  // kFailedPrecondition (with the reason) when the file is rejected.
  absl::StatusOr<PolicyChange> Reload();

 private:
  const std::string path_;
  Registry* registry_;
  Metrics* metrics_;
};

// consent.v1.ConsentAdmin: policy, backups, the audit chain and the auth
// file, for callers with the admin role (GetPolicy also for checkers and
// auditors, VerifyAuditLog also for auditors). Thread safe.
class AdminService final : public v1::ConsentAdmin::Service {
 public:
  AdminService(Registry* registry, PolicyHolder* policies, PolicyReloader* reloader,
               CallAccounting* calls)
      : registry_(registry), policies_(policies), reloader_(reloader), calls_(calls) {}

  grpc::Status GetPolicy(grpc::ServerContext* context, const v1::GetPolicyRequest* request,
                         v1::GetPolicyResponse* response) override;
  grpc::Status ReloadPolicy(grpc::ServerContext* context, const v1::ReloadPolicyRequest* request,
                            v1::ReloadPolicyResponse* response) override;
  grpc::Status CreateBackup(grpc::ServerContext* context, const v1::CreateBackupRequest* request,
                            v1::CreateBackupResponse* response) override;
  grpc::Status VerifyAuditLog(grpc::ServerContext* context,
                              const v1::VerifyAuditLogRequest* request,
                              v1::VerifyAuditLogResponse* response) override;
  grpc::Status ReloadAuth(grpc::ServerContext* context, const v1::ReloadAuthRequest* request,
                          v1::ReloadAuthResponse* response) override;
  grpc::Status ExportSnapshot(grpc::ServerContext* context,
                              const v1::ExportSnapshotRequest* request,
                              grpc::ServerWriter<v1::ExportSnapshotResponse>* writer) override;

  // The auth file ReloadAuth reloads; null (the default) without one. Set
  // before serving.
  void set_auth(AuthHolder* auth) { auth_ = auth; }

 private:
  Registry* registry_;
  PolicyHolder* policies_;
  PolicyReloader* reloader_;
  CallAccounting* calls_;
  AuthHolder* auth_ = nullptr;
};

}  // namespace consent

#endif  // CONSENT_SERVER_REGISTRY_SERVICE_H_
