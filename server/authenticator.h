// Authentication and authorization of each call over TLS: who the caller is
// (bearer token or verified client certificate) and whether it holds a role
// the RPC requires. The handlers ask first, before they look at the
// request, so a refused caller learns nothing about users or field
// validity.
//
// Why in the handlers and not in a grpc::AuthMetadataProcessor: with a
// processor installed, gRPC 1.51 takes an asynchronous path for every call
// (even with a non-blocking processor that answers inline) that contends
// the transport's combiner and hands work to its executor thread: Check
// cost the server 6-11 microseconds more CPU per call. Asking in the
// handler (a SHA-256 of the token and a lookup) is under 3% of the
// server's CPU for Check (docs/performance.md, "TLS and tokens").
#ifndef CONSENT_SERVER_AUTHENTICATOR_H_
#define CONSENT_SERVER_AUTHENTICATOR_H_

#include <grpcpp/server_context.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/auth.h"
#include "server/metrics.h"
#include "server/rpc.h"

namespace consent {

class Authorized;

// The auth file in force, swapped atomically on reload. Thread safe.
class AuthHolder {
 public:
  // `path`: the --auth_file. `metrics` (may be null) counts refusals and
  // each caller's calls.
  AuthHolder(std::string path, Metrics* metrics);

  // Loads the file; on error the one in force stays and the error (naming
  // the file and the bad entry) is returned.
  absl::Status Reload();

  // The caller of `context`'s call if it holds one of the roles `rpc`
  // requires. Otherwise (counted in consent_auth_failures_total)
  // UNAUTHENTICATED without credentials or with ones this server does not
  // know, PERMISSION_DENIED for a known caller without the role. Messages
  // never quote a token.
  absl::StatusOr<Authorized> Authorize(const grpc::ServerContextBase& context, Rpc rpc) const;
  // The same for a call any known caller may make (server reflection); not
  // counted per caller.
  absl::StatusOr<Authorized> Authenticate(const grpc::ServerContextBase& context) const;

  size_t caller_count() const;

 private:
  // A loaded file with the call counters of its callers.
  struct Active {
    std::shared_ptr<const AuthConfigSnapshot> config;
    // counters[caller index][Rpc], or empty without metrics.
    std::vector<std::vector<CallerCallCounter*>> counters;
  };
  friend class Authorized;

  // Who `context` identifies in `active`: its `authorization` metadata, if
  // sent, else its connection's verified certificate.
  static absl::StatusOr<const AuthCaller*> Identify(const Active& active,
                                                    const grpc::ServerContextBase& context,
                                                    AuthFailure* failure);
  absl::StatusOr<Authorized> Check(const grpc::ServerContextBase& context,
                                   std::optional<Rpc> rpc) const;

  const std::string path_;
  Metrics* const metrics_;
  absl::Mutex reload_mu_;  // one reload at a time
  std::shared_ptr<const Active> active_;
};

// The caller of one call once authorized: a caller of the auth file, or
// nobody when the server runs without one (loopback, no authentication).
// Cheap to copy; keeps the auth file it came from alive.
class Authorized {
 public:
  // Without authentication: holds every role.
  Authorized() = default;

  // The auth file's caller, or null without authentication.
  const AuthCaller* caller() const { return caller_; }
  bool HasRole(v1::Role role) const {
    return caller_ == nullptr || (caller_->roles & RoleBit(role)) != 0;
  }

 private:
  friend class AuthHolder;
  Authorized(std::shared_ptr<const AuthHolder::Active> file, const AuthCaller* caller)
      : file_(std::move(file)), caller_(caller) {}

  std::shared_ptr<const AuthHolder::Active> file_;
  const AuthCaller* caller_ = nullptr;
};

}  // namespace consent

#endif  // CONSENT_SERVER_AUTHENTICATOR_H_
