// Authentication and authorization of every call over TLS: a gRPC
// AuthMetadataProcessor that identifies the caller (bearer token or
// verified client certificate), checks the role the RPC requires, and
// leaves the caller's name and roles on the call's AuthContext for the
// handlers (history records the name; WatchChanges redacts for callers
// without the auditor role).
//
// It runs before any handler, so a refused caller learns nothing about
// users or field validity. It is non-blocking: gRPC runs it inline on the
// thread that received the call, with no hop to a thread pool.
#ifndef CONSENT_SERVER_AUTHENTICATOR_H_
#define CONSENT_SERVER_AUTHENTICATOR_H_

#include <grpcpp/security/auth_metadata_processor.h>
#include <grpcpp/server_context.h>

#include <array>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/auth.h"
#include "server/metrics.h"

namespace consent {

// The auth file in force, swapped atomically on reload. Thread safe.
class AuthHolder {
 public:
  // `path`: the --auth_file. `metrics` (may be null) gets the per-caller
  // call counters of each file loaded.
  AuthHolder(std::string path, Metrics* metrics);

  // Loads the file; on error the one in force stays and the error (naming
  // the file and the bad entry) is returned.
  absl::Status Reload();

  struct Active;
  std::shared_ptr<const Active> Get() const { return std::atomic_load(&active_); }
  const std::string& path() const { return path_; }

 private:
  const std::string path_;
  Metrics* const metrics_;
  absl::Mutex reload_mu_;  // one reload at a time
  std::shared_ptr<const Active> active_;
};

// A loaded file with the call counters of its callers.
struct AuthHolder::Active {
  std::shared_ptr<const AuthConfigSnapshot> config;
  // counters[caller index][method index] (kPathRoles order), or empty
  // without metrics.
  std::vector<std::vector<CallerCallCounter*>> counters;
};

class CallerAuthProcessor final : public grpc::AuthMetadataProcessor {
 public:
  // Neither is owned; both outlive the server. `metrics` may be null.
  CallerAuthProcessor(const AuthHolder* holder, Metrics* metrics);

  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

 private:
  const AuthHolder* holder_;
  Metrics* metrics_;
};

// The authenticated caller of a call, as the processor left it, or nullopt
// when the server runs without authentication (loopback without TLS or auth
// file).
std::optional<AuthCaller> CallerOf(const grpc::ServerContextBase& context);

}  // namespace consent

#endif  // CONSENT_SERVER_AUTHENTICATOR_H_
