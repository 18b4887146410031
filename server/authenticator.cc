#include "server/authenticator.h"

#include <grpc/grpc_security_constants.h>

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/log.h"

namespace consent {
namespace {

constexpr absl::string_view kBearer = "Bearer ";

absl::string_view View(const grpc::string_ref& ref) { return {ref.data(), ref.size()}; }

bool IsHealth(absl::string_view path) { return absl::StartsWith(path, "/grpc.health.v1.Health/"); }

// The identity of the verified client certificate, if the peer presented
// one: its first URI SAN, else its first DNS SAN, else its subject CN.
std::optional<std::string> CertificateIdentity(const grpc::AuthContext& context) {
  for (const char* property :
       {GRPC_PEER_URI_PROPERTY_NAME, GRPC_PEER_DNS_PROPERTY_NAME, GRPC_X509_CN_PROPERTY_NAME}) {
    std::vector<grpc::string_ref> values = context.FindPropertyValues(property);
    if (!values.empty()) return std::string(View(values.front()));
  }
  return std::nullopt;
}

}  // namespace

AuthHolder::AuthHolder(std::string path, Metrics* metrics)
    : path_(std::move(path)), metrics_(metrics) {}

absl::Status AuthHolder::Reload() {
  absl::MutexLock lock(&reload_mu_);
  auto config = AuthConfigSnapshot::Load(path_);
  if (!config.ok()) {
    LogWarning("auth file rejected: the callers in force stay",
               {{"error", std::string(config.status().message())}});
    return config.status();
  }
  auto active = std::make_shared<Active>();
  active->config = *std::move(config);
  if (metrics_ != nullptr) {
    for (const std::string& name : active->config->CallerNames()) {
      std::vector<CallerCallCounter*> row;
      for (int m = 0; m < AuthMethodCount(); ++m) {
        row.push_back(metrics_->CallerCalls(name, AuthMethodName(m)));
      }
      active->counters.push_back(std::move(row));
    }
  }
  const size_t callers = active->config->caller_count();
  std::atomic_store(&active_, std::shared_ptr<const Active>(std::move(active)));
  LogInfo("auth file loaded", {{"path", path_}, {"callers", absl::StrCat(callers)}});
  return absl::OkStatus();
}

CallerAuthProcessor::CallerAuthProcessor(const AuthHolder* holder, Metrics* metrics)
    : holder_(holder), metrics_(metrics) {}

AuthHolder::Identified AuthHolder::Identify(const Active& active,
                                            std::optional<absl::string_view> authorization,
                                            const grpc::AuthContext* context) {
  Identified out;
  if (authorization.has_value()) {
    if (!absl::StartsWith(*authorization, kBearer) || authorization->size() == kBearer.size()) {
      out.failure = AuthFailure::kUnknownToken;
      out.message = "the authorization metadata is not \"Bearer <token>\"";
      return out;
    }
    out.caller = active.config->ByToken(authorization->substr(kBearer.size()));
    if (out.caller == nullptr) {
      out.failure = AuthFailure::kUnknownToken;
      out.message = "the bearer token is not known to this server";
    }
    return out;
  }
  std::optional<std::string> identity;
  if (context != nullptr) identity = CertificateIdentity(*context);
  if (!identity.has_value()) {
    out.failure = AuthFailure::kNoCredentials;
    out.message = "no credentials: send a client certificate or \"authorization: Bearer <token>\"";
    return out;
  }
  out.caller = active.config->ByCertificate(*identity);
  if (out.caller == nullptr) {
    // The identity is the caller's own certificate's: no secret in it.
    out.failure = AuthFailure::kUnknownCertificate;
    out.message = absl::StrCat("the client certificate's identity \"", *identity,
                               "\" is not a caller of this server");
  }
  return out;
}

std::optional<AuthCaller> AuthHolder::CallerOf(const grpc::ServerContextBase& context) const {
  const std::shared_ptr<const Active> active = Get();
  std::optional<absl::string_view> authorization;
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    authorization = View(it->second);
  }
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  Identified who = Identify(*active, authorization, auth.get());
  if (who.caller == nullptr) return std::nullopt;
  return *who.caller;
}

grpc::Status CallerAuthProcessor::Process(const InputMetadata& auth_metadata,
                                          grpc::AuthContext* context,
                                          OutputMetadata* /*consumed_auth_metadata*/,
                                          OutputMetadata* /*response_metadata*/) {
  absl::string_view path;
  std::optional<grpc::string_ref> authorization;
  for (const auto& [key, value] : auth_metadata) {
    const absl::string_view name = View(key);
    if (name == ":path") {
      path = View(value);
    } else if (name == "authorization") {
      // Left in the call's metadata for AuthHolder::CallerOf; nothing logs
      // client metadata.
      authorization = value;
    }
  }
  if (IsHealth(path)) return grpc::Status::OK;  // probes need no credentials

  const std::shared_ptr<const AuthHolder::Active> active = holder_->Get();
  std::optional<absl::string_view> header;
  if (authorization.has_value()) header = View(*authorization);
  const AuthHolder::Identified who = AuthHolder::Identify(*active, header, context);
  if (who.caller == nullptr) {
    if (metrics_ != nullptr) metrics_->CountAuthFailure(who.failure);
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, who.message);
  }
  const AuthCaller* caller = who.caller;
  const MethodRoles required = RolesForPath(path);
  if (required.roles != 0 && (caller->roles & required.roles) == 0) {
    if (metrics_ != nullptr) metrics_->CountAuthFailure(AuthFailure::kMissingRole);
    return grpc::Status(
        grpc::StatusCode::PERMISSION_DENIED,
        absl::StrCat("caller \"", caller->name, "\" (", RoleNames(caller->roles), ") may not call ",
                     required.method, ": it needs one of ", RoleNames(required.roles)));
  }
  if (required.index >= 0 && !active->counters.empty()) {
    active->counters[caller->index][static_cast<size_t>(required.index)]->Add();
  }
  // Nothing is added to `context`: it is the connection's, shared by all
  // its calls (handlers identify the caller again: AuthHolder::CallerOf).
  return grpc::Status::OK;
}

}  // namespace consent
