#include "server/registry_service.h"

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "server/errors.h"
#include "server/log.h"

namespace consent {
namespace {

CallContext ContextOf(const grpc::ServerContext* context) { return CallContext{context->peer()}; }

const grpc::Status kDraining(grpc::StatusCode::UNAVAILABLE,
                             "consentd is shutting down; retry on another instance");

// Runs `handler` if the gate admits the call.
template <typename Handler>
grpc::Status Admitted(DrainGate* gate, Handler&& handler) {
  DrainGuard guard(gate);
  if (!guard.admitted()) return kDraining;
  return handler();
}

grpc::Status NotYet(absl::string_view feature) {
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      absl::StrCat(feature, " is not implemented by this server yet"));
}

}  // namespace

grpc::Status RegistryService::SetPreference(grpc::ServerContext* context,
                                            const v1::SetPreferenceRequest* request,
                                            v1::SetPreferenceResponse* response) {
  return Admitted(gate_, [&] {
    return ToGrpcStatus(registry_->SetPreference(*request, ContextOf(context), response));
  });
}

grpc::Status RegistryService::BatchSetPreferences(grpc::ServerContext* context,
                                                  const v1::BatchSetPreferencesRequest* request,
                                                  v1::BatchSetPreferencesResponse* response) {
  return Admitted(gate_, [&] {
    return ToGrpcStatus(registry_->BatchSetPreferences(*request, ContextOf(context), response));
  });
}

grpc::Status RegistryService::UpdateSubject(grpc::ServerContext* context,
                                            const v1::UpdateSubjectRequest* request,
                                            v1::UpdateSubjectResponse* response) {
  return Admitted(gate_, [&] {
    return ToGrpcStatus(registry_->UpdateSubject(*request, ContextOf(context), response));
  });
}

grpc::Status RegistryService::SetContentExclusion(grpc::ServerContext* context,
                                                  const v1::SetContentExclusionRequest* request,
                                                  v1::SetContentExclusionResponse* response) {
  return Admitted(gate_, [&] {
    return ToGrpcStatus(registry_->SetContentExclusion(*request, ContextOf(context), response));
  });
}

grpc::Status RegistryService::DeleteSubject(grpc::ServerContext* context,
                                            const v1::DeleteSubjectRequest* request,
                                            v1::DeleteSubjectResponse* response) {
  return Admitted(gate_, [&] {
    return ToGrpcStatus(registry_->DeleteSubject(*request, ContextOf(context), response));
  });
}

grpc::Status RegistryService::GetSubject(grpc::ServerContext*, const v1::GetSubjectRequest* request,
                                         v1::GetSubjectResponse* response) {
  return Admitted(gate_, [&] { return ToGrpcStatus(registry_->GetSubject(*request, response)); });
}

grpc::Status RegistryService::Check(grpc::ServerContext*, const v1::CheckRequest* request,
                                    v1::CheckResponse* response) {
  return Admitted(gate_, [&] { return ToGrpcStatus(registry_->Check(*request, response)); });
}

grpc::Status RegistryService::BatchCheck(grpc::ServerContext*, const v1::BatchCheckRequest* request,
                                         v1::BatchCheckResponse* response) {
  return Admitted(gate_, [&] { return ToGrpcStatus(registry_->BatchCheck(*request, response)); });
}

grpc::Status RegistryService::StreamCheck(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::StreamCheckResponse, v1::StreamCheckRequest>* stream) {
  return Admitted(gate_, [&] {
    // Registered so shutdown can cancel a stream idling in Read.
    {
      absl::MutexLock lock(&streams_mu_);
      streams_.insert(context);
    }
    auto unregister = absl::MakeCleanup([&] {
      absl::MutexLock lock(&streams_mu_);
      streams_.erase(context);
    });
    v1::StreamCheckRequest request;
    v1::StreamCheckResponse response;
    int64_t index = 0;
    // One request in memory at a time: Write blocks while the client does
    // not read, so the server stops reading requests too (flow control).
    while (stream->Read(&request)) {
      if (gate_->draining()) return kDraining;
      response.Clear();
      absl::Status status = registry_->StreamCheck(request, &response);
      if (!status.ok()) {
        // The stream ends at the first bad message, saying which one.
        return ToGrpcStatus(
            absl::Status(status.code(), absl::StrCat("message ", index, ": ", status.message())));
      }
      if (!stream->Write(response)) break;  // the client went away
      ++index;
    }
    if (gate_->draining()) return kDraining;  // cancelled by shutdown: retry elsewhere
    if (context->IsCancelled()) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled");
    }
    return grpc::Status::OK;
  });
}

void RegistryService::CancelStreams() {
  absl::MutexLock lock(&streams_mu_);
  for (grpc::ServerContext* context : streams_) context->TryCancel();
}

grpc::Status RegistryService::ListHistory(grpc::ServerContext*,
                                          const v1::ListHistoryRequest* request,
                                          v1::ListHistoryResponse* response) {
  return Admitted(gate_, [&] { return ToGrpcStatus(registry_->ListHistory(*request, response)); });
}

grpc::Status RegistryService::WatchChanges(grpc::ServerContext* context,
                                           const v1::WatchChangesRequest* request,
                                           grpc::ServerWriter<v1::WatchChangesResponse>* writer) {
  return Admitted(gate_, [&] {
    // Write blocks while the client's flow-control window is full, so a slow
    // watcher holds at most one read batch in memory.
    return ToGrpcStatus(registry_->WatchChanges(
        *request,
        [writer](const v1::WatchChangesResponse& message) { return writer->Write(message); },
        [this, context] { return context->IsCancelled() || gate_->draining(); }));
  });
}

absl::StatusOr<PolicyChange> PolicyReloader::Reload() {
  auto next = CompiledPolicy::FromFile(path_);
  absl::StatusOr<PolicyChange> change =
      next.ok() ? registry_->ActivatePolicy(*std::move(next)) : next.status();
  if (!change.ok()) {
    LogWarning(absl::StrCat("policy reload rejected, the active policy stays: ",
                            change.status().message()));
    return absl::FailedPreconditionError(change.status().message());
  }
  LogInfo(change->changed ? absl::StrCat("policy reloaded: version ", change->version, " (was ",
                                         change->previous_version, ")")
                          : absl::StrCat("policy reload: file unchanged, version ", change->version,
                                         " stays active"));
  return change;
}

grpc::Status AdminService::GetPolicy(grpc::ServerContext*, const v1::GetPolicyRequest*,
                                     v1::GetPolicyResponse* response) {
  return Admitted(gate_, [&] {
    const auto policy = policies_->Get();
    response->set_version(policy->version());
    response->set_text(policy->text());
    *response->mutable_policy() = policy->proto();
    return grpc::Status::OK;
  });
}

grpc::Status AdminService::ReloadPolicy(grpc::ServerContext*, const v1::ReloadPolicyRequest*,
                                        v1::ReloadPolicyResponse* response) {
  return Admitted(gate_, [&] {
    auto versions = reloader_->Reload();
    if (!versions.ok()) return ToGrpcStatus(versions.status());
    response->set_version(versions->version);
    response->set_previous_version(versions->previous_version);
    return grpc::Status::OK;
  });
}

grpc::Status AdminService::CreateBackup(grpc::ServerContext*, const v1::CreateBackupRequest*,
                                        v1::CreateBackupResponse*) {
  return NotYet("CreateBackup");
}

grpc::Status AdminService::VerifyAuditLog(grpc::ServerContext*,
                                          const v1::VerifyAuditLogRequest* request,
                                          v1::VerifyAuditLogResponse* response) {
  return Admitted(gate_,
                  [&] { return ToGrpcStatus(registry_->VerifyAuditLog(*request, response)); });
}

}  // namespace consent
