// Authentication and authorization of every call over TLS: a gRPC
// AuthMetadataProcessor that identifies the caller (bearer token or
// verified client certificate) and checks the role the RPC requires. It
// changes nothing on the call: the AuthContext it is given belongs to the
// connection and is shared by all its calls (properties added there would
// pile up and race), so handlers that need the caller (history records its
// name; WatchChanges redacts for callers without the auditor role) identify
// it again with AuthHolder::CallerOf.
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

  // The caller of a call the processor let through, identified again from
  // its metadata and connection (the same token or certificate), or nullopt
  // when it no longer identifies one (the file was reloaded in between).
  std::optional<AuthCaller> CallerOf(const grpc::ServerContextBase& context) const;

  // Who `authorization` (the metadata value, if sent) or else the
  // connection's verified certificate identifies in `active`; on failure
  // caller is null, with the reason and a message for the caller.
  struct Identified {
    const AuthCaller* caller = nullptr;
    AuthFailure failure = AuthFailure::kNoCredentials;
    std::string message;
  };
  static Identified Identify(const Active& active, std::optional<absl::string_view> authorization,
                             const grpc::AuthContext* context);

 private:
  const std::string path_;
  Metrics* const metrics_;
  absl::Mutex reload_mu_;  // one reload at a time
  std::shared_ptr<const Active> active_;
};

// A loaded file with the call counters of its callers.
struct AuthHolder::Active {
  std::shared_ptr<const AuthConfigSnapshot> config;
  // counters[caller index][method index] (AuthMethodName's order), or empty
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

}  // namespace consent

#endif  // CONSENT_SERVER_AUTHENTICATOR_H_
