// gRPC adapters: consent.v1.ConsentRegistry and consent.v1.ConsentAdmin over
// Registry and the policy holder. They translate statuses (errors.h) and
// nothing else.
#ifndef CONSENT_SERVER_REGISTRY_SERVICE_H_
#define CONSENT_SERVER_REGISTRY_SERVICE_H_

#include <functional>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "consent/v1/admin.grpc.pb.h"
#include "consent/v1/registry.grpc.pb.h"
#include "server/drain_gate.h"
#include "server/policy.h"
#include "server/registry.h"

namespace consent {

class RegistryService final : public v1::ConsentRegistry::Service {
 public:
  // Calls are admitted through `gate`: once it drains they get UNAVAILABLE.
  RegistryService(Registry* registry, DrainGate* gate) : registry_(registry), gate_(gate) {}

  grpc::Status SetPreference(grpc::ServerContext* context, const v1::SetPreferenceRequest* request,
                             v1::SetPreferenceResponse* response) override;
  grpc::Status BatchSetPreferences(grpc::ServerContext* context,
                                   const v1::BatchSetPreferencesRequest* request,
                                   v1::BatchSetPreferencesResponse* response) override;
  grpc::Status UpdateSubject(grpc::ServerContext* context, const v1::UpdateSubjectRequest* request,
                             v1::UpdateSubjectResponse* response) override;
  grpc::Status SetContentExclusion(grpc::ServerContext* context,
                                   const v1::SetContentExclusionRequest* request,
                                   v1::SetContentExclusionResponse* response) override;
  grpc::Status DeleteSubject(grpc::ServerContext* context, const v1::DeleteSubjectRequest* request,
                             v1::DeleteSubjectResponse* response) override;
  grpc::Status GetSubject(grpc::ServerContext* context, const v1::GetSubjectRequest* request,
                          v1::GetSubjectResponse* response) override;
  grpc::Status Check(grpc::ServerContext* context, const v1::CheckRequest* request,
                     v1::CheckResponse* response) override;
  grpc::Status BatchCheck(grpc::ServerContext* context, const v1::BatchCheckRequest* request,
                          v1::BatchCheckResponse* response) override;
  grpc::Status StreamCheck(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::StreamCheckResponse, v1::StreamCheckRequest>* stream) override;
  grpc::Status ListHistory(grpc::ServerContext* context, const v1::ListHistoryRequest* request,
                           v1::ListHistoryResponse* response) override;
  grpc::Status WatchChanges(grpc::ServerContext* context, const v1::WatchChangesRequest* request,
                            grpc::ServerWriter<v1::WatchChangesResponse>* writer) override;

  // Cancels every open StreamCheck stream (shutdown: an idle stream would
  // otherwise wait in Read until the grace period ends).
  void CancelStreams();

 private:
  Registry* registry_;
  DrainGate* gate_;
  absl::Mutex streams_mu_;
  absl::flat_hash_set<grpc::ServerContext*> streams_ ABSL_GUARDED_BY(streams_mu_);
};

// Loads the policy file again (ReloadPolicy and SIGHUP): on success swaps it
// in and returns it; on failure the active policy stays and the error says
// why.
class PolicyReloader {
 public:
  PolicyReloader(std::string path, Registry* registry)
      : path_(std::move(path)), registry_(registry) {}
  // kFailedPrecondition (with the reason) when the file is rejected.
  absl::StatusOr<PolicyChange> Reload();

 private:
  const std::string path_;
  Registry* registry_;
};

class AdminService final : public v1::ConsentAdmin::Service {
 public:
  AdminService(Registry* registry, PolicyHolder* policies, PolicyReloader* reloader,
               DrainGate* gate)
      : registry_(registry), policies_(policies), reloader_(reloader), gate_(gate) {}

  grpc::Status GetPolicy(grpc::ServerContext* context, const v1::GetPolicyRequest* request,
                         v1::GetPolicyResponse* response) override;
  grpc::Status ReloadPolicy(grpc::ServerContext* context, const v1::ReloadPolicyRequest* request,
                            v1::ReloadPolicyResponse* response) override;
  grpc::Status CreateBackup(grpc::ServerContext* context, const v1::CreateBackupRequest* request,
                            v1::CreateBackupResponse* response) override;
  grpc::Status VerifyAuditLog(grpc::ServerContext* context,
                              const v1::VerifyAuditLogRequest* request,
                              v1::VerifyAuditLogResponse* response) override;

 private:
  Registry* registry_;
  PolicyHolder* policies_;
  PolicyReloader* reloader_;
  DrainGate* gate_;
};

}  // namespace consent

#endif  // CONSENT_SERVER_REGISTRY_SERVICE_H_
