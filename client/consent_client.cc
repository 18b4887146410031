#include "client/consent_client.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace consent {

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  absl::Status out(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  google::rpc::Status details;
  if (!status.error_details().empty() && details.ParseFromString(status.error_details())) {
    for (const auto& any : details.details()) {
      out.SetPayload(any.type_url(), absl::Cord(any.value()));
    }
  }
  return out;
}

absl::Status ItemError(const v1::Decision& decision) {
  if (!decision.has_error()) return absl::OkStatus();
  const google::rpc::Status& error = decision.error();
  // A decision's error is never OK: a code of 0 would be a server's bug,
  // read as INVALID_ARGUMENT rather than as a decision.
  const auto code = error.code() == 0 ? absl::StatusCode::kInvalidArgument
                                      : static_cast<absl::StatusCode>(error.code());
  absl::Status out(code, error.message());
  for (const auto& any : error.details()) out.SetPayload(any.type_url(), absl::Cord(any.value()));
  return out;
}

std::vector<std::string> FieldViolations(const absl::Status& status) {
  std::vector<std::string> out;
  auto payload = status.GetPayload("type.googleapis.com/google.rpc.BadRequest");
  google::rpc::BadRequest bad_request;
  if (payload && bad_request.ParseFromString(std::string(*payload))) {
    for (const auto& v : bad_request.field_violations()) {
      out.push_back(absl::StrCat(v.field(), ": ", v.description()));
    }
  }
  return out;
}

namespace {

absl::StatusOr<std::string> ReadWhole(const std::string& path, absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", what, " ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

grpc::ChannelArguments ChannelArgs(const ClientCredentials* credentials) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  if (credentials != nullptr && !credentials->tls_server_name.empty()) {
    args.SetSslTargetNameOverride(credentials->tls_server_name);
  }
  return args;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const ClientCredentials& credentials) {
  if (!credentials.tls()) {
    if (!credentials.token.empty() || !credentials.tls_cert_file.empty() ||
        !credentials.tls_key_file.empty()) {
      return absl::InvalidArgumentError(
          "a token or client certificate needs TLS: give the CA of the server's certificate "
          "(tls_ca_file); a token is never sent in the clear");
    }
    return grpc::InsecureChannelCredentials();
  }
  if (credentials.tls_cert_file.empty() != credentials.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "a client certificate and its key go together: give both tls_cert_file and "
        "tls_key_file");
  }
  grpc::SslCredentialsOptions ssl;
  auto ca = ReadWhole(credentials.tls_ca_file, "CA file");
  if (!ca.ok()) return ca.status();
  ssl.pem_root_certs = *std::move(ca);
  if (!credentials.tls_cert_file.empty()) {
    auto cert = ReadWhole(credentials.tls_cert_file, "client certificate");
    if (!cert.ok()) return cert.status();
    auto key = ReadWhole(credentials.tls_key_file, "client key");
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *std::move(cert);
    ssl.pem_private_key = *std::move(key);
  }
  std::shared_ptr<grpc::ChannelCredentials> channel = grpc::SslCredentials(ssl);
  if (!credentials.token.empty()) {
    channel =
        grpc::CompositeChannelCredentials(channel, grpc::AccessTokenCredentials(credentials.token));
  }
  return channel;
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  auto text = ReadWhole(path, "token file");
  if (!text.ok()) return text.status();
  return std::string(absl::StripTrailingAsciiWhitespace(*text));
}

std::unique_ptr<Client> Client::Connect(const std::string& target, ClientOptions options) {
  return std::make_unique<Client>(
      grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), ChannelArgs(nullptr)),
      std::move(options));
}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const std::string& target,
                                                        const ClientCredentials& credentials,
                                                        ClientOptions options) {
  auto channel_credentials = MakeChannelCredentials(credentials);
  if (!channel_credentials.ok()) return channel_credentials.status();
  return std::make_unique<Client>(
      grpc::CreateCustomChannel(target, *channel_credentials, ChannelArgs(&credentials)),
      std::move(options));
}

Client::Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : channel_(std::move(channel)),
      registry_(v1::ConsentRegistry::NewStub(channel_)),
      admin_(v1::ConsentAdmin::NewStub(channel_)),
      health_(grpc::health::v1::Health::NewStub(channel_)),
      options_(std::move(options)) {}

template <typename Attempt>
auto Client::Retrying(int attempts, Attempt&& attempt) -> decltype(attempt()) {
  absl::BitGen random;
  absl::Duration backoff = options_.initial_backoff;
  for (int n = 1;; ++n) {
    auto result = attempt();
    if (result.ok() || result.status().code() != absl::StatusCode::kUnavailable || n >= attempts) {
      return result;
    }
    // Full backoff with +-20% jitter, so clients restarted together spread out.
    options_.sleep(backoff * absl::Uniform(random, 0.8, 1.2));
    backoff = std::min(backoff * options_.backoff_multiplier, options_.max_backoff);
  }
}

template <typename Stub, typename Request, typename Response>
absl::StatusOr<Response> Client::Call(Stub* stub,
                                      grpc::Status (Stub::*method)(grpc::ClientContext*,
                                                                   const Request&, Response*),
                                      const Request& request, bool idempotent) {
  return Retrying(idempotent ? std::max(1, options_.max_attempts) : 1,
                  [&]() -> absl::StatusOr<Response> {
                    grpc::ClientContext context;
                    context.set_deadline(std::chrono::system_clock::now() +
                                         absl::ToChronoNanoseconds(options_.timeout));
                    Response response;
                    grpc::Status status = (stub->*method)(&context, request, &response);
                    if (!status.ok()) return FromGrpcStatus(status);
                    return response;
                  });
}

absl::StatusOr<v1::SetPreferenceResponse> Client::SetPreference(
    const v1::SetPreferenceRequest& request) {
  return Call(registry_.get(), &v1::ConsentRegistry::Stub::SetPreference, request,
              !request.request_id().empty());
}

absl::StatusOr<v1::BatchSetPreferencesResponse> Client::BatchSetPreferences(
    const v1::BatchSetPreferencesRequest& request) {
  return Call(registry_.get(), &v1::ConsentRegistry::Stub::BatchSetPreferences, request,
              !request.request_id().empty());
}

absl::StatusOr<v1::RecordNoticeResponse> Client::RecordNotice(
    const v1::RecordNoticeRequest& request) {
  return Call(registry_.get(), &v1::ConsentRegistry::Stub::RecordNotice, request,
              !request.request_id().empty());
}

absl::StatusOr<v1::BatchRecordNoticesResponse> Client::BatchRecordNotices(
    const v1::BatchRecordNoticesRequest& request) {
  return Call(registry_.get(), &v1::ConsentRegistry::Stub::BatchRecordNotices, request,
              !request.request_id().empty());
}

absl::StatusOr<v1::GetSubjectSummaryResponse> Client::GetSubjectSummary(
    const v1::GetSubjectSummaryRequest& request) {
  return Call(registry_.get(), &v1::ConsentRegistry::Stub::GetSubjectSummary, request, true);
}

absl::StatusOr<v1::UpdateSubjectResponse> Client::UpdateSubject(
    const v1::UpdateSubjectRequest& request) {
  return Call(registry_.get(), &v1::ConsentRegistry::Stub::UpdateSubject, request,
              !request.request_id().empty());
}

absl::StatusOr<v1::SetContentExclusionResponse> Client::SetContentExclusion(
    const v1::SetContentExclusionRequest& request) {
  return Call(registry_.get(), &v1::ConsentRegistry::Stub::SetContentExclusion, request,
              !request.request_id().empty());
}

absl::StatusOr<v1::DeleteSubjectResponse> Client::DeleteSubject(
    const v1::DeleteSubjectRequest& request) {
  return Call(registry_.get(), &v1::ConsentRegistry::Stub::DeleteSubject, request,
              !request.request_id().empty());
}

absl::StatusOr<v1::GetSubjectResponse> Client::GetSubject(const v1::GetSubjectRequest& request) {
  return Call(registry_.get(), &v1::ConsentRegistry::Stub::GetSubject, request, true);
}

absl::StatusOr<v1::CheckResponse> Client::Check(const v1::CheckRequest& request) {
  return Call(registry_.get(), &v1::ConsentRegistry::Stub::Check, request, true);
}

absl::StatusOr<v1::BatchCheckResponse> Client::BatchCheck(const v1::BatchCheckRequest& request) {
  return Call(registry_.get(), &v1::ConsentRegistry::Stub::BatchCheck, request, true);
}

absl::StatusOr<v1::ListHistoryResponse> Client::ListHistory(const v1::ListHistoryRequest& request) {
  return Call(registry_.get(), &v1::ConsentRegistry::Stub::ListHistory, request, true);
}

absl::StatusOr<v1::VerifyAuditLogResponse> Client::VerifyAuditLog(
    const v1::VerifyAuditLogRequest& request) {
  return Call(admin_.get(), &v1::ConsentAdmin::Stub::VerifyAuditLog, request, true);
}

absl::StatusOr<v1::ImportSubjectsResponse> Client::ImportSubjects(
    const std::string& import_id, const std::function<bool(v1::ImportSubjectsRequest*)>& next) {
  grpc::ClientContext context;
  v1::ImportSubjectsResponse response;
  auto writer = registry_->ImportSubjects(&context, &response);
  v1::ImportSubjectsRequest message;
  message.set_import_id(import_id);
  bool more = true;
  // The first message goes even without records: it names the import.
  for (bool first = true; more; first = false) {
    message.clear_records();
    if (!first) more = next(&message);
    if ((first || message.records_size() > 0) && !writer->Write(message)) break;  // failed
  }
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<int64_t> Client::ImportProgress(const std::string& import_id) {
  return Retrying(std::max(1, options_.max_attempts), [&]() -> absl::StatusOr<int64_t> {
    auto response = ImportSubjects(import_id, [](v1::ImportSubjectsRequest*) { return false; });
    if (!response.ok()) return response.status();
    return response->acknowledged_offset();
  });
}

absl::Status Client::Watch(const v1::WatchChangesRequest& request,
                           const std::function<bool(const v1::WatchChangesResponse&)>& on_message) {
  v1::WatchChangesRequest next = request;
  absl::BitGen random;
  absl::Duration backoff = options_.initial_backoff;
  int failures = 0;
  while (true) {
    grpc::ClientContext context;
    auto reader = registry_->WatchChanges(&context, next);
    v1::WatchChangesResponse message;
    bool progressed = false;
    while (reader->Read(&message)) {
      progressed = true;
      if (message.has_event()) next.set_start_revision(message.event().revision() + 1);
      if (message.has_checkpoint()) next.set_start_revision(message.checkpoint().revision() + 1);
      if (!on_message(message)) {
        context.TryCancel();
        reader->Finish().IgnoreError();
        return absl::OkStatus();
      }
    }
    grpc::Status status = reader->Finish();
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE) return FromGrpcStatus(status);
    failures = progressed ? 1 : failures + 1;
    if (progressed) backoff = options_.initial_backoff;
    if (failures >= std::max(1, options_.max_attempts)) return FromGrpcStatus(status);
    options_.sleep(backoff * absl::Uniform(random, 0.8, 1.2));
    backoff = std::min(backoff * options_.backoff_multiplier, options_.max_backoff);
  }
}

absl::Status Client::ExportSnapshot(
    const v1::ExportSnapshotRequest& request,
    const std::function<bool(const v1::ExportSnapshotResponse&)>& on_message) {
  grpc::ClientContext context;
  auto reader = admin_->ExportSnapshot(&context, request);
  v1::ExportSnapshotResponse message;
  while (reader->Read(&message)) {
    if (!on_message(message)) {
      context.TryCancel();
      reader->Finish().IgnoreError();
      return absl::CancelledError("snapshot export stopped");
    }
  }
  return FromGrpcStatus(reader->Finish());
}

absl::StatusOr<v1::GetPolicyResponse> Client::GetPolicy() {
  return Call(admin_.get(), &v1::ConsentAdmin::Stub::GetPolicy, v1::GetPolicyRequest(), true);
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> Client::Health(
    const std::string& service) {
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  auto response = Call(health_.get(), &grpc::health::v1::Health::Stub::Check, request, true);
  if (!response.ok()) return response.status();
  return response->status();
}

absl::StatusOr<v1::CreateBackupResponse> Client::CreateBackup(const std::string& directory) {
  v1::CreateBackupRequest request;
  request.set_directory(directory);
  return Call(admin_.get(), &v1::ConsentAdmin::Stub::CreateBackup, request, false);
}

absl::StatusOr<v1::ReloadPolicyResponse> Client::ReloadPolicy() {
  return Call(admin_.get(), &v1::ConsentAdmin::Stub::ReloadPolicy, v1::ReloadPolicyRequest(), true);
}

absl::StatusOr<v1::ReloadAuthResponse> Client::ReloadAuth() {
  return Call(admin_.get(), &v1::ConsentAdmin::Stub::ReloadAuth, v1::ReloadAuthRequest(), true);
}

bool Client::IsAllowed(const v1::CheckRequest& request, v1::Decision* decision,
                       absl::Status* error) {
  auto response = Check(request);
  if (error != nullptr) *error = response.status();
  if (!response.ok()) return false;
  if (decision != nullptr) *decision = response->decision();
  return response->decision().allowed();
}

}  // namespace consent
