// Callers and roles: the auth file (consent.v1.AuthConfig) and the lookup of
// a caller by bearer token or verified client certificate. The roles each
// RPC requires are in server/rpc.h.
#ifndef CONSENT_SERVER_AUTH_H_
#define CONSENT_SERVER_AUTH_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "consent/v1/auth.pb.h"

namespace consent {

// A set of roles, one bit per consent.v1.Role value.
using RoleSet = uint32_t;
constexpr RoleSet RoleBit(v1::Role role) { return RoleSet{1} << static_cast<int>(role); }

// "checker,writer": the roles of `roles`, in enum order, for logs and errors.
std::string RoleNames(RoleSet roles);

// A caller of the auth file.
struct AuthCaller {
  std::string name;
  RoleSet roles = 0;
  size_t index = 0;  // in the file's order
};

// A loaded auth file. Immutable, so shared freely between threads.
class AuthConfigSnapshot {
 public:
  // Parses and checks `text` (consent.v1.AuthConfig in text format). Errors
  // are INVALID_ARGUMENT naming the caller and field: an empty or bad name, a
  // duplicate name, identity or digest, a digest that is not 64 lowercase hex
  // digits, no roles or ROLE_UNSPECIFIED, a caller without credentials.
  static absl::StatusOr<std::shared_ptr<const AuthConfigSnapshot>> Parse(absl::string_view text);
  // Reads `path` and parses it; NOT_FOUND, with the path, for a file that
  // cannot be read (missing or not readable).
  static absl::StatusOr<std::shared_ptr<const AuthConfigSnapshot>> Load(const std::string& path);

  // The caller whose token's SHA-256 digest is listed, or null. The digest
  // of `token` is compared with every listed digest in constant time, so the
  // time taken says nothing about how close a guess was.
  const AuthCaller* ByToken(absl::string_view token) const;
  // The caller listed with certificate identity `identity`, or null.
  const AuthCaller* ByCertificate(absl::string_view identity) const;

  size_t caller_count() const { return callers_.size(); }
  // Every caller's name, for metrics labels.
  std::vector<std::string> CallerNames() const;

 private:
  AuthConfigSnapshot() = default;

  std::vector<AuthCaller> callers_;
  // Each listed digest (32 bytes) and the index of its caller.
  std::vector<std::pair<std::array<uint8_t, 32>, size_t>> tokens_;
  absl::flat_hash_map<std::string, size_t> certificates_;
};

}  // namespace consent

#endif  // CONSENT_SERVER_AUTH_H_
