// consentd's TLS: the server certificate and key, and optionally a CA that
// client certificates are verified against. The files are watched, so a
// renewed certificate (cert-manager rewrites them in place) is used for new
// connections without a restart.
#ifndef CONSENT_SERVER_TLS_H_
#define CONSENT_SERVER_TLS_H_

#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace consent {

// Whether client certificates are asked for, and what happens without one.
enum class ClientAuth {
  kNone,      // not asked for
  kOptional,  // asked for and verified when sent; callers without one use tokens
  kRequire,   // every connection must present one that verifies
};

// "none", "optional", "require"; false for anything else.
bool ParseClientAuth(const std::string& text, ClientAuth* out);

struct TlsOptions {
  // PEM files. Both or neither of cert and key; no TLS when both are empty.
  std::string cert_file;
  std::string key_file;
  // PEM file of the CA(s) client certificates must chain to. Required for
  // client_auth other than kNone, and only meaningful with it.
  std::string client_ca_file;
  ClientAuth client_auth = ClientAuth::kNone;
  // How often the files are read again for rotation.
  absl::Duration refresh_interval = absl::Minutes(1);

  bool enabled() const { return !cert_file.empty() || !key_file.empty(); }
};

// Checks the settings and the files as they are now, so that consentd fails
// at start rather than at each handshake: both of cert and key, each file
// readable PEM, the key matching the certificate, a CA file exactly when
// client certificates are asked for. INVALID_ARGUMENT naming the flag.
absl::Status CheckTlsOptions(const TlsOptions& options);

// Server credentials for `options` (enabled and checked): gRPC's TLS
// credentials with a FileWatcherCertificateProvider over the files.
std::shared_ptr<grpc::ServerCredentials> MakeTlsServerCredentials(const TlsOptions& options);

}  // namespace consent

#endif  // CONSENT_SERVER_TLS_H_
