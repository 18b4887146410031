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
      for (int rpc = 0; rpc < kRpcCount; ++rpc) {
        row.push_back(metrics_->CallerCalls(name, InfoOf(rpc).method));
      }
      active->counters.push_back(std::move(row));
    }
  }
  const size_t callers = active->config->caller_count();
  std::atomic_store(&active_, std::shared_ptr<const Active>(std::move(active)));
  LogInfo("auth file loaded", {{"path", path_}, {"callers", absl::StrCat(callers)}});
  return absl::OkStatus();
}

size_t AuthHolder::caller_count() const {
  return std::atomic_load(&active_)->config->caller_count();
}

absl::StatusOr<const AuthCaller*> AuthHolder::Identify(const Active& active,
                                                       const grpc::ServerContextBase& context,
                                                       AuthFailure* failure) {
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    const absl::string_view authorization = View(it->second);
    *failure = AuthFailure::kUnknownToken;
    if (!absl::StartsWith(authorization, kBearer) || authorization.size() == kBearer.size()) {
      return absl::UnauthenticatedError("the authorization metadata is not \"Bearer <token>\"");
    }
    const AuthCaller* caller = active.config->ByToken(authorization.substr(kBearer.size()));
    if (caller == nullptr) {
      return absl::UnauthenticatedError("the bearer token is not known to this server");
    }
    return caller;
  }
  std::optional<std::string> identity;
  if (const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context()) {
    identity = CertificateIdentity(*auth);
  }
  if (!identity.has_value()) {
    *failure = AuthFailure::kNoCredentials;
    return absl::UnauthenticatedError(
        "no credentials: send a client certificate or \"authorization: Bearer <token>\"");
  }
  const AuthCaller* caller = active.config->ByCertificate(*identity);
  if (caller == nullptr) {
    // The identity is the caller's own certificate's: no secret in it.
    *failure = AuthFailure::kUnknownCertificate;
    return absl::UnauthenticatedError(absl::StrCat("the client certificate's identity \"",
                                                   *identity, "\" is not a caller of this server"));
  }
  return caller;
}

absl::StatusOr<Authorized> AuthHolder::Check(const grpc::ServerContextBase& context,
                                             std::optional<Rpc> rpc) const {
  std::shared_ptr<const Active> active = std::atomic_load(&active_);
  AuthFailure failure = AuthFailure::kNoCredentials;
  absl::StatusOr<const AuthCaller*> caller = Identify(*active, context, &failure);
  if (!caller.ok()) {
    if (metrics_ != nullptr) metrics_->CountAuthFailure(failure);
    return caller.status();
  }
  if (rpc.has_value()) {
    const RpcInfo& info = InfoOf(*rpc);
    if (((*caller)->roles & info.roles) == 0) {
      if (metrics_ != nullptr) metrics_->CountAuthFailure(AuthFailure::kMissingRole);
      return absl::PermissionDeniedError(absl::StrCat(
          "caller \"", (*caller)->name, "\" (", RoleNames((*caller)->roles), ") may not call ",
          info.method, ": it needs one of ", RoleNames(info.roles)));
    }
    if (!active->counters.empty()) {
      active->counters[(*caller)->index][static_cast<size_t>(*rpc)]->Add();
    }
  }
  return Authorized(std::move(active), *caller);
}

absl::StatusOr<Authorized> AuthHolder::Authorize(const grpc::ServerContextBase& context,
                                                 Rpc rpc) const {
  return Check(context, rpc);
}

absl::StatusOr<Authorized> AuthHolder::Authenticate(const grpc::ServerContextBase& context) const {
  return Check(context, std::nullopt);
}

}  // namespace consent
