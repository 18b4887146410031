// C++ client of consentd. Every call has a deadline; idempotent calls are
// retried with exponential backoff and jitter while the server is
// UNAVAILABLE. Errors come back as absl::Status with the server's code,
// message and google.rpc details (as payloads keyed by type URL).
#ifndef CONSENT_CLIENT_CONSENT_CLIENT_H_
#define CONSENT_CLIENT_CONSENT_CLIENT_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "consent/v1/admin.grpc.pb.h"
#include "consent/v1/registry.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"

namespace consent {

struct ClientOptions {
  // Deadline of each attempt.
  absl::Duration timeout = absl::Seconds(10);
  // Attempts of an idempotent call in all (1 disables retries).
  int max_attempts = 4;
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(2);
  double backoff_multiplier = 2.0;
  // Waits between attempts; tests replace it to observe the backoff
  // without sleeping.
  std::function<void(absl::Duration)> sleep = [](absl::Duration d) { absl::SleepFor(d); };
};

// How a client proves who it is and checks the server (docs/security.md).
struct ClientCredentials {
  // PEM file of the CA that signed consentd's certificate; set for TLS.
  std::string tls_ca_file;
  // Client certificate and its key (PEM files), for mTLS; both or neither.
  std::string tls_cert_file;
  std::string tls_key_file;
  // Bearer token, sent as "authorization: Bearer <token>"; needs TLS.
  std::string token;
  // The name the server's certificate must carry, when it differs from
  // the target's host (a target given as an IP address, say).
  std::string tls_server_name;

  bool tls() const { return !tls_ca_file.empty(); }
};

// Channel credentials for `credentials`: plaintext when no TLS is asked
// for. INVALID_ARGUMENT for a token or client certificate without TLS (a
// token never travels in the clear) or a certificate without its key;
// NOT_FOUND for a file that cannot be read.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const ClientCredentials& credentials);

// The bearer token held in file `path`, without trailing whitespace (a
// newline, say); NOT_FOUND "cannot read token file <path>".
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// Thread safe; one Client can serve many threads (calls share the channel).
//
// Retries: reads (GetSubject, Check, BatchCheck, ListHistory, GetPolicy,
// VerifyAuditLog) and the reloads (ReloadPolicy, ReloadAuth: a second one
// loads the same file) always; writes only when they carry a request_id,
// since the server treats a replayed request_id as the same write;
// CreateBackup never. Watch reconnects on UNAVAILABLE from the revision
// after the last one seen.
class Client {
 public:
  // A client over an insecure channel to `target` ("127.0.0.1:50051").
  static std::unique_ptr<Client> Connect(const std::string& target, ClientOptions options = {});
  // A client with `credentials` (MakeChannelCredentials's errors).
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const std::string& target,
                                                         const ClientCredentials& credentials,
                                                         ClientOptions options = {});
  Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options);

  absl::StatusOr<v1::SetPreferenceResponse> SetPreference(const v1::SetPreferenceRequest& request);
  absl::StatusOr<v1::BatchSetPreferencesResponse> BatchSetPreferences(
      const v1::BatchSetPreferencesRequest& request);
  absl::StatusOr<v1::UpdateSubjectResponse> UpdateSubject(const v1::UpdateSubjectRequest& request);
  absl::StatusOr<v1::SetContentExclusionResponse> SetContentExclusion(
      const v1::SetContentExclusionRequest& request);
  absl::StatusOr<v1::DeleteSubjectResponse> DeleteSubject(const v1::DeleteSubjectRequest& request);
  absl::StatusOr<v1::GetSubjectResponse> GetSubject(const v1::GetSubjectRequest& request);
  absl::StatusOr<v1::RecordNoticeResponse> RecordNotice(const v1::RecordNoticeRequest& request);
  absl::StatusOr<v1::BatchRecordNoticesResponse> BatchRecordNotices(
      const v1::BatchRecordNoticesRequest& request);
  absl::StatusOr<v1::GetSubjectSummaryResponse> GetSubjectSummary(
      const v1::GetSubjectSummaryRequest& request);
  absl::StatusOr<v1::CheckResponse> Check(const v1::CheckRequest& request);
  // A bad request as a whole (purpose, item count, as_of, min_revision)
  // fails the call; an item whose own fields are invalid gets a decision
  // holding its error (ItemError) and the other items are decided.
  absl::StatusOr<v1::BatchCheckResponse> BatchCheck(const v1::BatchCheckRequest& request);
  absl::StatusOr<v1::ListHistoryResponse> ListHistory(const v1::ListHistoryRequest& request);
  absl::StatusOr<v1::VerifyAuditLogResponse> VerifyAuditLog(
      const v1::VerifyAuditLogRequest& request);

  // Follows the change feed from request.start_revision, calling
  // `on_message` for each event and checkpoint until it returns false
  // (then OK) or the feed fails for good. While the server is UNAVAILABLE
  // (restarting, draining), reconnects with backoff from the revision after
  // the last one seen, so no event is missed or repeated; gives up after
  // max_attempts failures in a row. No deadline: the feed is long-lived.
  absl::Status Watch(const v1::WatchChangesRequest& request,
                     const std::function<bool(const v1::WatchChangesResponse&)>& on_message);

  // One ImportSubjects call of import `import_id`: a first message holding
  // the id, then the messages `next` fills (records only; at most 1,000
  // each) until it returns false. No deadline (an import may take hours)
  // and no retry: after a failure, ImportProgress says where to resume.
  absl::StatusOr<v1::ImportSubjectsResponse> ImportSubjects(
      const std::string& import_id, const std::function<bool(v1::ImportSubjectsRequest*)>& next);
  // The offset through which import `import_id` is acknowledged
  // (ImportSubjectsResponse.acknowledged_offset; 0 for an import never
  // run): an ImportSubjects call of one message holding only the id.
  // Retried like a read.
  absl::StatusOr<int64_t> ImportProgress(const std::string& import_id);
  // One ExportSnapshot call: `on_message` gets each message in order until
  // it returns false (then kCancelled) or the last one. No deadline (a
  // large registry takes minutes) and no retry: the file would start over.
  absl::Status ExportSnapshot(
      const v1::ExportSnapshotRequest& request,
      const std::function<bool(const v1::ExportSnapshotResponse&)>& on_message);
  absl::StatusOr<v1::GetPolicyResponse> GetPolicy();
  absl::StatusOr<v1::ReloadPolicyResponse> ReloadPolicy();
  absl::StatusOr<v1::ReloadAuthResponse> ReloadAuth();
  // The gRPC health status of `service` ("" for the server as a whole,
  // "consent.v1.ConsentRegistry" for writes): SERVING or NOT_SERVING, or
  // NOT_FOUND for a service the server does not know. Health needs no
  // credentials on the server's side; the channel's TLS still applies.
  // Retried like a read.
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> Health(
      const std::string& service);

  // Not retried: a second attempt would find the directory already there.
  absl::StatusOr<v1::CreateBackupResponse> CreateBackup(const std::string& directory);

  // Fail-closed: true only when the registry answered "allowed". Any error
  // (unreachable server, deadline, bad request) is "not allowed"; `error`,
  // when given, receives it, and `decision` the registry's answer.
  bool IsAllowed(const v1::CheckRequest& request, v1::Decision* decision = nullptr,
                 absl::Status* error = nullptr);

 private:
  // Calls `attempt` (returning an absl::StatusOr) until it succeeds, fails
  // with other than kUnavailable, or has been called `attempts` times,
  // waiting with exponential backoff and jitter between calls.
  template <typename Attempt>
  auto Retrying(int attempts, Attempt&& attempt) -> decltype(attempt());

  template <typename Stub, typename Request, typename Response>
  absl::StatusOr<Response> Call(Stub* stub,
                                grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                                             Response*),
                                const Request& request, bool idempotent);

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ConsentRegistry::Stub> registry_;
  std::unique_ptr<v1::ConsentAdmin::Stub> admin_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
  ClientOptions options_;
};

// grpc::Status to absl::Status, keeping google.rpc details as payloads.
absl::Status FromGrpcStatus(const grpc::Status& status);

// A BatchCheck (or StreamCheck) decision's item error as absl::Status,
// its google.rpc details as payloads (FieldViolations reads them): OK when
// the item was decided. An item with an error is never allowed.
absl::Status ItemError(const v1::Decision& decision);

// The google.rpc.BadRequest field violations of `status`, as
// "field: description" strings; empty when there are none.
std::vector<std::string> FieldViolations(const absl::Status& status);

}  // namespace consent

#endif  // CONSENT_CLIENT_CONSENT_CLIENT_H_
