#include "server/registry_service.h"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <memory>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "core/validation.h"
#include "server/errors.h"
#include "server/log.h"
#include "server/wire.h"

namespace consent {
namespace {

// Who history records: the authenticated caller's name, or, without
// authentication, the peer's address.
CallContext ContextOf(const Authorized& who, const grpc::ServerContextBase& context) {
  if (who.caller() != nullptr) return CallContext{who.caller()->name};
  return CallContext{context.peer()};
}

// `status` with its message between `prefix` and `suffix`, its details
// (a BadRequest naming the fields) kept.
absl::Status Reworded(const absl::Status& status, absl::string_view prefix,
                      absl::string_view suffix) {
  absl::Status reworded(status.code(), absl::StrCat(prefix, status.message(), suffix));
  status.ForEachPayload([&](absl::string_view type_url, const absl::Cord& payload) {
    reworded.SetPayload(type_url, payload);
  });
  return reworded;
}

// The call's deadline, for work that can stop early.
CallControl DeadlineOf(const grpc::ServerContextBase* context) {
  CallControl control;
  const auto deadline = context->deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    control.deadline = absl::FromChrono(deadline);
  }
  return control;
}

// The deadline and the cancellation of a callback-API call: there
// IsCancelled reads a flag.
CallControl ControlOf(grpc::CallbackServerContext* context) {
  CallControl control = DeadlineOf(context);
  control.cancelled = [context] { return context->IsCancelled(); };
  return control;
}

}  // namespace

CallAccounting::CallAccounting(DrainGate* gate, Metrics* metrics) : gate_(gate), metrics_(metrics) {
  if (metrics_ == nullptr) return;
  for (int i = 0; i < static_cast<int>(Rpc::kCount); ++i) {
    const RpcInfo& info = InfoOf(i);
    methods_[i] = metrics_->Method(info.service, info.method, info.type, info.batch);
  }
}

grpc::Status CallAccounting::Draining() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "consentd is shutting down; retry on another instance");
}

int64_t CallAccounting::NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

grpc::Status CallAccounting::Finish(Rpc rpc, absl::string_view request_id, grpc::Status status) {
  const grpc::StatusCode code = status.error_code();
  if (code == grpc::StatusCode::INTERNAL || code == grpc::StatusCode::DATA_LOSS ||
      code == grpc::StatusCode::UNKNOWN) {
    LogFields fields = {{"method", InfoOf(rpc).method},
                        {"code", std::string(GrpcCodeLabel(code))},
                        {"error", status.error_message()}};
    if (!request_id.empty()) fields.emplace_back("request_id", std::string(request_id));
    LogError("call failed", fields);
  }
  return status;
}

void RegistryService::AccountWrite(Rpc rpc, WriteKind kind, int count, absl::string_view caller,
                                   absl::string_view request_id, absl::string_view user_id,
                                   const grpc::Status& status, int64_t revision) {
  if (calls_->metrics() != nullptr) {
    calls_->metrics()->CountWrites(kind, status.error_code(), count);
    // The store's only RESOURCE_EXHAUSTED: its commit queue is full.
    if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      Rejected(Rejection::kCommitQueue);
    }
  }
  if (!LogEnabled(LogLevel::kInfo)) return;
  LogFields fields = {{"method", InfoOf(rpc).method},
                      {"caller", std::string(caller)},
                      {"code", std::string(GrpcCodeLabel(status.error_code()))}};
  if (!request_id.empty()) fields.emplace_back("request_id", std::string(request_id));
  if (status.ok()) {
    fields.emplace_back("revision", absl::StrCat(revision));
  } else {
    fields.emplace_back("error", status.error_message());
  }
  // The user id is personal data: at debug level only.
  if (!user_id.empty() && LogEnabled(LogLevel::kDebug)) {
    fields.emplace_back("user_id", std::string(user_id));
    LogDebug("write", fields);
  } else {
    LogInfo("write", fields);
  }
}

template <typename Request, typename Response>
grpc::ServerUnaryReactor* RegistryService::ServeWrite(grpc::CallbackServerContext* context,
                                                      const WriteCall<Request, Response>& call,
                                                      const Request* request, Response* response) {
  // The registry is called through a local pointer, never as
  // (registry_->*call.write) inside the lambda: GCC 12's -fsanitize=vptr
  // mis-instruments a pointer-to-member call on an object reached through
  // `this` inside a non-generic lambda of a polymorphic class. It reports
  // "member access within null pointer (or address X) which does not point
  // to an object of type RegistryService" for a valid object, and with
  // recovery on the instrumented call even crashes; clang, and GCC without
  // vptr, are fine. That is why this function's first form (commit 3ff949c,
  // a [&] lambda) failed every write under UBSan; the generic lambda below
  // only escapes it by luck. Reproduced with a 60-line program
  // (docs/architecture.md, "UBSan and pointer-to-member calls"); CI's
  // sanitizer run serves every write through here.
  Registry* const registry = registry_;
  return calls_->ServeAsync(
      context, call.rpc, request->request_id(), [=](const Authorized& who, auto finish) {
        MethodMetrics* method = calls_->method(call.rpc);
        if (method != nullptr && InfoOf(call.rpc).batch) method->ObserveItems(call.items);
        // The caller's identity, for the write's history: kept until it is done.
        auto caller = std::make_shared<const CallContext>(ContextOf(who, *context));
        (registry->*call.write)(*request, *caller, response, [=, caller = caller](absl::Status s) {
          grpc::Status status = ToGrpcStatus(s);
          AccountWrite(call.rpc, call.kind, call.items, caller->caller, request->request_id(),
                       call.user_id, status, response->revision());
          finish(std::move(status));
        });
      });
}

grpc::ServerUnaryReactor* RegistryService::SetPreference(grpc::CallbackServerContext* context,
                                                         const v1::SetPreferenceRequest* request,
                                                         v1::SetPreferenceResponse* response) {
  return ServeWrite(context,
                    WriteCall<v1::SetPreferenceRequest, v1::SetPreferenceResponse>{
                        Rpc::kSetPreference, WriteKind::kPreference, &Registry::SetPreference, 1,
                        request->user_id()},
                    request, response);
}

grpc::ServerUnaryReactor* RegistryService::BatchSetPreferences(
    grpc::CallbackServerContext* context, const v1::BatchSetPreferencesRequest* request,
    v1::BatchSetPreferencesResponse* response) {
  return ServeWrite(context,
                    WriteCall<v1::BatchSetPreferencesRequest, v1::BatchSetPreferencesResponse>{
                        Rpc::kBatchSetPreferences, WriteKind::kPreference,
                        &Registry::BatchSetPreferences, request->requests_size(), ""},
                    request, response);
}

grpc::ServerUnaryReactor* RegistryService::UpdateSubject(grpc::CallbackServerContext* context,
                                                         const v1::UpdateSubjectRequest* request,
                                                         v1::UpdateSubjectResponse* response) {
  return ServeWrite(context,
                    WriteCall<v1::UpdateSubjectRequest, v1::UpdateSubjectResponse>{
                        Rpc::kUpdateSubject, WriteKind::kAttributes, &Registry::UpdateSubject, 1,
                        request->user_id()},
                    request, response);
}

grpc::ServerUnaryReactor* RegistryService::SetContentExclusion(
    grpc::CallbackServerContext* context, const v1::SetContentExclusionRequest* request,
    v1::SetContentExclusionResponse* response) {
  return ServeWrite(context,
                    WriteCall<v1::SetContentExclusionRequest, v1::SetContentExclusionResponse>{
                        Rpc::kSetContentExclusion, WriteKind::kExclusion,
                        &Registry::SetContentExclusion, 1, request->user_id()},
                    request, response);
}

grpc::ServerUnaryReactor* RegistryService::DeleteSubject(grpc::CallbackServerContext* context,
                                                         const v1::DeleteSubjectRequest* request,
                                                         v1::DeleteSubjectResponse* response) {
  return ServeWrite(context,
                    WriteCall<v1::DeleteSubjectRequest, v1::DeleteSubjectResponse>{
                        Rpc::kDeleteSubject, WriteKind::kDeletion, &Registry::DeleteSubject, 1,
                        request->user_id()},
                    request, response);
}

grpc::ServerUnaryReactor* RegistryService::RecordNotice(grpc::CallbackServerContext* context,
                                                        const v1::RecordNoticeRequest* request,
                                                        v1::RecordNoticeResponse* response) {
  return ServeWrite(
      context,
      WriteCall<v1::RecordNoticeRequest, v1::RecordNoticeResponse>{
          Rpc::kRecordNotice, WriteKind::kNotice, &Registry::RecordNotice, 1, request->user_id()},
      request, response);
}

grpc::ServerUnaryReactor* RegistryService::BatchRecordNotices(
    grpc::CallbackServerContext* context, const v1::BatchRecordNoticesRequest* request,
    v1::BatchRecordNoticesResponse* response) {
  return ServeWrite(context,
                    WriteCall<v1::BatchRecordNoticesRequest, v1::BatchRecordNoticesResponse>{
                        Rpc::kBatchRecordNotices, WriteKind::kNotice, &Registry::BatchRecordNotices,
                        request->requests_size(), ""},
                    request, response);
}

grpc::ServerUnaryReactor* RegistryService::GetSubjectSummary(
    grpc::CallbackServerContext* context, const v1::GetSubjectSummaryRequest* request,
    v1::GetSubjectSummaryResponse* response) {
  return OnWorker(context, Rpc::kGetSubjectSummary, "", [=](const Authorized&) {
    return ToGrpcStatus(registry_->GetSubjectSummary(*request, response));
  });
}

grpc::ServerUnaryReactor* RegistryService::GetSubject(grpc::CallbackServerContext* context,
                                                      const v1::GetSubjectRequest* request,
                                                      v1::GetSubjectResponse* response) {
  return OnWorker(context, Rpc::kGetSubject, "", [=](const Authorized&) {
    return ToGrpcStatus(registry_->GetSubject(*request, response));
  });
}

grpc::ServerUnaryReactor* RegistryService::Check(grpc::CallbackServerContext* context,
                                                 const v1::CheckRequest* request,
                                                 v1::CheckResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(calls_->Serve(*context, Rpc::kCheck, "", [&](const Authorized&) {
    absl::Status status = registry_->Check(*request, response);
    if (status.ok() && calls_->metrics() != nullptr) {
      calls_->metrics()->CountDecision(request->purpose(), response->decision().reason());
    }
    return ToGrpcStatus(status);
  }));
  return reactor;
}

grpc::ServerUnaryReactor* RegistryService::BatchCheck(grpc::CallbackServerContext* context,
                                                      const grpc::ByteBuffer* request,
                                                      grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(calls_->Serve(*context, Rpc::kBatchCheck, "", [&](const Authorized&) {
    // The request on an arena: a 1,000-item call costs a few blocks, not
    // thousands of allocations.
    google::protobuf::Arena arena(BatchArenaOptions());
    const v1::BatchCheckRequest* message = ParseBatchCheck(*request, &arena);
    if (message == nullptr) return BadBatchCheckRequest();
    EncodedDecisions decisions;
    absl::Status status = registry_->BatchCheck(*message, &decisions, ControlOf(context));
    if (calls_->metrics() != nullptr) {
      calls_->method(Rpc::kBatchCheck)->ObserveItems(message->items_size());
      if (status.ok()) calls_->metrics()->CountDecisions(message->purpose(), decisions.tally());
    }
    if (status.ok()) SetResponseBytes(decisions.bytes(), response);
    return ToGrpcStatus(status);
  }));
  return reactor;
}

grpc::Status RegistryService::RawStreamCheck(grpc::ServerContext* context, RawCheckStream* stream) {
  return calls_->Serve(*context, Rpc::kStreamCheck, "", [&](const Authorized&) {
    if (!EnterStream()) return TooManyStreams();
    auto leave = absl::MakeCleanup([this] { LeaveStream(); });
    DrainGate* gate = calls_->gate();
    Metrics* metrics = calls_->metrics();
    // Registered so shutdown can cancel a stream idling in Read.
    {
      absl::MutexLock lock(&streams_mu_);
      streams_.insert(context);
    }
    auto unregister = absl::MakeCleanup([&] {
      absl::MutexLock lock(&streams_mu_);
      streams_.erase(context);
    });
    StreamArena messages;
    grpc::ByteBuffer in, out;
    int64_t index = 0;
    // One request in memory at a time: Write blocks while the client does
    // not read, so the server stops reading requests too (flow control).
    while (stream->Read(&in)) {
      if (gate->draining()) return CallAccounting::Draining();
      const v1::BatchCheckRequest* request = ParseBatchCheck(in, messages.Next());
      if (request == nullptr) return BadStreamCheckMessage(index);
      // The deadline only: on the synchronous API IsCancelled polls the
      // completion queue, blocking the handler in the poller (StreamCheck
      // ran 10% slower asking every 256 items). A cancelled stream stops at
      // its next Read or Write, within one message.
      EncodedDecisions decisions;
      absl::Status status = registry_->BatchCheck(*request, &decisions, DeadlineOf(context));
      if (metrics != nullptr) {
        calls_->method(Rpc::kStreamCheck)->ObserveItems(request->items_size());
        if (status.ok()) metrics->CountDecisions(request->purpose(), decisions.tally());
      }
      if (!status.ok()) {
        // The stream ends at the first bad message, saying which one; the
        // details (a BadRequest naming the fields) go with it.
        return ToGrpcStatus(Reworded(status, absl::StrCat("message ", index, ": "), ""));
      }
      SetResponseBytes(decisions.bytes(), &out);
      if (!stream->Write(out)) break;  // the client went away
      ++index;
    }
    // Cancelled by shutdown: the client retries elsewhere.
    if (gate->draining()) return CallAccounting::Draining();
    if (context->IsCancelled()) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled");
    }
    return grpc::Status::OK;
  });
}

grpc::Status RegistryService::ImportSubjects(grpc::ServerContext* context,
                                             grpc::ServerReader<v1::ImportSubjectsRequest>* reader,
                                             v1::ImportSubjectsResponse* response) {
  return calls_->Serve(*context, Rpc::kImportSubjects, "", [&](const Authorized& who) {
    if (!EnterStream()) return TooManyStreams();
    auto leave = absl::MakeCleanup([this] { LeaveStream(); });
    {
      absl::MutexLock lock(&streams_mu_);
      streams_.insert(context);
    }
    auto unregister = absl::MakeCleanup([&] {
      absl::MutexLock lock(&streams_mu_);
      streams_.erase(context);
    });
    auto message = std::make_unique<v1::ImportSubjectsRequest>();
    if (!reader->Read(message.get())) {
      return ToGrpcStatus(
          FieldError("import_id", "no message: the first message names the import"));
    }
    Metrics* metrics = calls_->metrics();
    const CallContext caller = ContextOf(who, *context);
    auto call = registry_->BeginImport(
        message->import_id(), caller,
        [metrics](int64_t imported, int64_t rejected, const absl::Status& status) {
          if (metrics == nullptr) return;
          if (!status.ok()) {
            metrics->CountWrites(WriteKind::kImport, static_cast<grpc::StatusCode>(status.code()),
                                 1);
            return;
          }
          metrics->CountWrites(WriteKind::kImport, grpc::StatusCode::OK, imported);
          metrics->CountWrites(WriteKind::kImport, grpc::StatusCode::INVALID_ARGUMENT, rejected);
        });
    if (!call.ok()) return ToGrpcStatus(call.status());
    absl::Status status;
    int64_t index = 0;
    for (;;) {
      if (metrics != nullptr && message->records_size() > 0) {
        calls_->method(Rpc::kImportSubjects)->ObserveItems(message->records_size());
      }
      status = (*call)->Add(std::move(message));
      if (!status.ok()) {
        status = Reworded(status, absl::StrCat("message ", index, ": "), "");
        break;
      }
      message = std::make_unique<v1::ImportSubjectsRequest>();
      if (!reader->Read(message.get())) break;
      if (calls_->gate()->draining()) break;
      ++index;
    }
    absl::Status finished = (*call)->Finish(response);
    if (status.ok()) status = finished;
    AccountWrite(Rpc::kImportSubjects, WriteKind::kImport, 0, caller.caller, "", "",
                 ToGrpcStatus(status), response->revision());
    const std::string progress =
        absl::StrCat("; import \"", response->import_id(), "\" is acknowledged through offset ",
                     response->acknowledged_offset());
    if (calls_->gate()->draining()) {
      grpc::Status draining = CallAccounting::Draining();
      return grpc::Status(draining.error_code(), draining.error_message() + progress);
    }
    if (!status.ok()) {
      return ToGrpcStatus(Reworded(status, "", progress));
    }
    if (context->IsCancelled()) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "import cancelled" + progress);
    }
    return grpc::Status::OK;
  });
}

RegistryService::RegistryService(Registry* registry, CallAccounting* calls,
                                 const AdmissionLimits& limits, const Clock* clock)
    : registry_(registry),
      calls_(calls),
      limits_(limits),
      clock_(clock),
      workers_(limits.worker_threads, "consent-worker", limits.max_queued_reads) {
  SetMessageAllocatorFor_BatchRecordNotices(&notices_allocator_);
  MarkMethodStreamed(
      StreamCheckMethodIndex(),
      NewRawStreamCheckHandler(this, [this](grpc::ServerContext* context, RawCheckStream* stream) {
        return RawStreamCheck(context, stream);
      }));
  watchdog_ = std::thread([this] { WatchIdleWatchers(); });
  pthread_setname_np(watchdog_.native_handle(), "consent-watchdog");
}

RegistryService::~RegistryService() {
  {
    absl::MutexLock lock(&streams_mu_);
    stopping_ = true;
  }
  watchdog_.join();
}

bool RegistryService::EnterStream() {
  if (open_streams_.fetch_add(1) < limits_.max_streams) return true;
  open_streams_.fetch_sub(1);
  Rejected(Rejection::kStreams);
  return false;
}

grpc::Status RegistryService::TooManyStreams() const {
  return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                      absl::StrCat(limits_.max_streams,
                                   " StreamCheck and WatchChanges streams are open already "
                                   "(--max_streams); retry later, or use BatchCheck"));
}

void RegistryService::WatchIdleWatchers() {
  // Looks often enough that a watcher is ended within a quarter of the
  // timeout (at least every second) after it expires.
  const absl::Duration period =
      std::min(absl::Seconds(1), std::max(absl::Milliseconds(10), limits_.watch_idle_timeout / 4));
  absl::MutexLock lock(&streams_mu_);
  auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(streams_mu_) { return stopping_; };
  while (!streams_mu_.AwaitWithTimeout(absl::Condition(&stopping), period)) {
    const int64_t now = absl::ToUnixNanos(clock_->Now());
    for (Watcher* watcher : watchers_) {
      const int64_t since = watcher->writing_since.load();
      if (since == 0 || watcher->timed_out.load() ||
          now - since < absl::ToInt64Nanoseconds(limits_.watch_idle_timeout)) {
        continue;
      }
      watcher->timed_out.store(true);
      Rejected(Rejection::kIdleWatcher);
      LogWarning("ending a WatchChanges stream whose client has read nothing",
                 {{"peer", watcher->context->peer()},
                  {"watch_idle_timeout", absl::FormatDuration(limits_.watch_idle_timeout)}});
      watcher->context->TryCancel();
    }
  }
}

void RegistryService::CancelStreams() {
  absl::MutexLock lock(&streams_mu_);
  for (grpc::ServerContext* context : streams_) context->TryCancel();
}

grpc::ServerUnaryReactor* RegistryService::ListHistory(grpc::CallbackServerContext* context,
                                                       const v1::ListHistoryRequest* request,
                                                       v1::ListHistoryResponse* response) {
  return OnWorker(context, Rpc::kListHistory, "", [=](const Authorized&) {
    return ToGrpcStatus(registry_->ListHistory(*request, response));
  });
}

grpc::Status RegistryService::WatchChanges(grpc::ServerContext* context,
                                           const v1::WatchChangesRequest* request,
                                           grpc::ServerWriter<v1::WatchChangesResponse>* writer) {
  return calls_->Serve(*context, Rpc::kWatchChanges, "", [&](const Authorized& who) {
    if (!EnterStream()) return TooManyStreams();
    auto leave = absl::MakeCleanup([this] { LeaveStream(); });
    Watcher watcher{context};
    {
      absl::MutexLock lock(&streams_mu_);
      watchers_.insert(&watcher);
    }
    auto unregister = absl::MakeCleanup([&] {
      absl::MutexLock lock(&streams_mu_);
      watchers_.erase(&watcher);
    });
    // Callers without the auditor role see what changed, for which user
    // and purpose, but no attribute values (birth date, jurisdiction).
    const bool redact = !who.HasRole(v1::ROLE_AUDITOR);
    v1::WatchChangesResponse redacted;
    // Write blocks while the client's flow-control window is full, so a slow
    // watcher holds at most one read batch in memory; one that reads
    // nothing for watch_idle_timeout is ended by the watchdog.
    grpc::Status status = ToGrpcStatus(registry_->WatchChanges(
        *request,
        [&](const v1::WatchChangesResponse& message) {
          const v1::WatchChangesResponse* out = &message;
          if (redact && message.has_event() && message.event().has_attributes()) {
            redacted = message;
            redacted.mutable_event()->clear_attributes();
            out = &redacted;
          }
          watcher.writing_since.store(absl::ToUnixNanos(clock_->Now()));
          const bool written = writer->Write(*out);
          watcher.writing_since.store(0);
          return written;
        },
        [this, context] { return context->IsCancelled() || calls_->gate()->draining(); }));
    if (watcher.timed_out.load()) {
      // The client cannot read this (the stream is cancelled); the metric
      // and the log line say it.
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat("the watcher read nothing for ",
                                       absl::FormatDuration(limits_.watch_idle_timeout),
                                       " (--watch_idle_timeout); resume from the last revision "
                                       "received"));
    }
    return status;
  });
}

absl::StatusOr<PolicyChange> PolicyReloader::Reload() {
  auto next = CompiledPolicy::FromFile(path_);
  absl::StatusOr<PolicyChange> change =
      next.ok() ? registry_->ActivatePolicy(*std::move(next)) : next.status();
  if (metrics_ != nullptr) metrics_->CountPolicyReload(change.ok());
  if (!change.ok()) {
    LogWarning("policy reload rejected, the active policy stays",
               {{"policy", path_}, {"error", std::string(change.status().message())}});
    return absl::FailedPreconditionError(change.status().message());
  }
  LogInfo(change->changed ? "policy reloaded" : "policy reload: file unchanged",
          {{"version", change->version}, {"previous_version", change->previous_version}});
  return change;
}

grpc::Status AdminService::GetPolicy(grpc::ServerContext* context, const v1::GetPolicyRequest*,
                                     v1::GetPolicyResponse* response) {
  return calls_->Serve(*context, Rpc::kGetPolicy, "", [&](const Authorized&) {
    const auto policy = policies_->Get();
    response->set_version(policy->version());
    response->set_text(policy->text());
    *response->mutable_policy() = policy->proto();
    return grpc::Status::OK;
  });
}

grpc::Status AdminService::ReloadPolicy(grpc::ServerContext* context,
                                        const v1::ReloadPolicyRequest*,
                                        v1::ReloadPolicyResponse* response) {
  return calls_->Serve(*context, Rpc::kReloadPolicy, "", [&](const Authorized&) {
    auto versions = reloader_->Reload();
    if (!versions.ok()) return ToGrpcStatus(versions.status());
    response->set_version(versions->version);
    response->set_previous_version(versions->previous_version);
    return grpc::Status::OK;
  });
}

grpc::Status AdminService::ReloadAuth(grpc::ServerContext* context, const v1::ReloadAuthRequest*,
                                      v1::ReloadAuthResponse* response) {
  return calls_->Serve(*context, Rpc::kReloadAuth, "", [&](const Authorized&) {
    if (auth_ == nullptr) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "consentd runs without --auth_file: there is nothing to reload");
    }
    if (absl::Status s = auth_->Reload(); !s.ok()) return ToGrpcStatus(s);
    response->set_caller_count(static_cast<int32_t>(auth_->caller_count()));
    return grpc::Status::OK;
  });
}

grpc::Status AdminService::CreateBackup(grpc::ServerContext* context,
                                        const v1::CreateBackupRequest* request,
                                        v1::CreateBackupResponse* response) {
  return calls_->Serve(*context, Rpc::kCreateBackup, "", [&](const Authorized&) {
    absl::Status status = registry_->CreateBackup(*request, response);
    if (status.ok()) {
      LogInfo("backup written", {{"directory", response->directory()},
                                 {"revision", absl::StrCat(response->revision())}});
    }
    return ToGrpcStatus(status);
  });
}

grpc::Status AdminService::ExportSnapshot(grpc::ServerContext* context,
                                          const v1::ExportSnapshotRequest* request,
                                          grpc::ServerWriter<v1::ExportSnapshotResponse>* writer) {
  return calls_->Serve(*context, Rpc::kExportSnapshot, "", [&](const Authorized&) {
    int64_t revision = 0, subjects = 0, bytes = 0;
    absl::Status status = registry_->ExportSnapshot(
        *request,
        [&](const v1::ExportSnapshotResponse& message) {
          revision = message.revision();
          subjects = message.subjects();
          bytes = message.size_bytes();
          return writer->Write(message);
        },
        [this, context] { return context->IsCancelled() || calls_->gate()->draining(); });
    if (status.ok()) {
      LogInfo("snapshot exported", {{"revision", absl::StrCat(revision)},
                                    {"subjects", absl::StrCat(subjects)},
                                    {"bytes", absl::StrCat(bytes)},
                                    {"pseudonymized", request->pseudonymize() ? "true" : "false"}});
    }
    return ToGrpcStatus(status);
  });
}

grpc::Status AdminService::VerifyAuditLog(grpc::ServerContext* context,
                                          const v1::VerifyAuditLogRequest* request,
                                          v1::VerifyAuditLogResponse* response) {
  return calls_->Serve(*context, Rpc::kVerifyAuditLog, "", [&](const Authorized&) {
    return ToGrpcStatus(registry_->VerifyAuditLog(*request, response));
  });
}

}  // namespace consent
