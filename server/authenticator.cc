#include "server/authenticator.h"

#include <grpc/grpc_security_constants.h>

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/log.h"

namespace consent {
namespace {

constexpr char kCallerProperty[] = "consent_caller";
constexpr char kRolesProperty[] = "consent_roles";
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

grpc::Status CallerAuthProcessor::Process(const InputMetadata& auth_metadata,
                                          grpc::AuthContext* context,
                                          OutputMetadata* consumed_auth_metadata,
                                          OutputMetadata* /*response_metadata*/) {
  absl::string_view path;
  std::optional<grpc::string_ref> authorization;
  for (const auto& [key, value] : auth_metadata) {
    const absl::string_view name = View(key);
    if (name == ":path") {
      path = View(value);
    } else if (name == "authorization") {
      authorization = value;
      // Consumed: the token goes no further (handlers, logs).
      consumed_auth_metadata->insert(std::make_pair(std::string(name), std::string(View(value))));
    }
  }
  if (IsHealth(path)) return grpc::Status::OK;  // probes need no credentials

  auto fail = [this](AuthFailure reason, grpc::StatusCode code, std::string message) {
    if (metrics_ != nullptr) metrics_->CountAuthFailure(reason);
    return grpc::Status(code, std::move(message));
  };
  const std::shared_ptr<const AuthHolder::Active> active = holder_->Get();
  const AuthCaller* caller = nullptr;
  if (authorization.has_value()) {
    const absl::string_view header = View(*authorization);
    if (!absl::StartsWith(header, kBearer) || header.size() == kBearer.size()) {
      return fail(AuthFailure::kUnknownToken, grpc::StatusCode::UNAUTHENTICATED,
                  "the authorization metadata is not \"Bearer <token>\"");
    }
    caller = active->config->ByToken(header.substr(kBearer.size()));
    if (caller == nullptr) {
      return fail(AuthFailure::kUnknownToken, grpc::StatusCode::UNAUTHENTICATED,
                  "the bearer token is not known to this server");
    }
  } else if (std::optional<std::string> identity = CertificateIdentity(*context)) {
    caller = active->config->ByCertificate(*identity);
    if (caller == nullptr) {
      // The identity is the caller's own certificate's: no secret in it.
      return fail(AuthFailure::kUnknownCertificate, grpc::StatusCode::UNAUTHENTICATED,
                  absl::StrCat("the client certificate's identity \"", *identity,
                               "\" is not a caller of this server"));
    }
  } else {
    return fail(AuthFailure::kNoCredentials, grpc::StatusCode::UNAUTHENTICATED,
                "no credentials: send a client certificate or \"authorization: Bearer <token>\"");
  }

  const MethodRoles required = RolesForPath(path);
  if (required.roles != 0 && (caller->roles & required.roles) == 0) {
    return fail(
        AuthFailure::kMissingRole, grpc::StatusCode::PERMISSION_DENIED,
        absl::StrCat("caller \"", caller->name, "\" (", RoleNames(caller->roles), ") may not call ",
                     required.method, ": it needs one of ", RoleNames(required.roles)));
  }
  if (required.index >= 0 && !active->counters.empty()) {
    active->counters[caller->index][static_cast<size_t>(required.index)]->Add();
  }
  context->AddProperty(kCallerProperty, caller->name);
  context->AddProperty(kRolesProperty, absl::StrCat(caller->roles));
  return grpc::Status::OK;
}

std::optional<AuthCaller> CallerOf(const grpc::ServerContextBase& context) {
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr) return std::nullopt;
  std::vector<grpc::string_ref> names = auth->FindPropertyValues(kCallerProperty);
  std::vector<grpc::string_ref> roles = auth->FindPropertyValues(kRolesProperty);
  if (names.empty() || roles.empty()) return std::nullopt;
  AuthCaller caller;
  caller.name = std::string(View(names.front()));
  if (!absl::SimpleAtoi(View(roles.front()), &caller.roles)) return std::nullopt;
  return caller;
}

}  // namespace consent
