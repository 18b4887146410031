#include "client/credential_flags.h"

#include <string>
#include <utility>

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, tls_ca_file, "",
          "CA certificate (PEM) of consentd's certificate: connect with TLS.");
ABSL_FLAG(std::string, tls_cert_file, "", "Client certificate (PEM) for mTLS.");
ABSL_FLAG(std::string, tls_key_file, "", "The client certificate's key (PEM).");
ABSL_FLAG(std::string, tls_server_name, "",
          "Name consentd's certificate must carry, when it is not the target's host.");
ABSL_FLAG(std::string, token_file, "",
          "File holding a bearer token (trailing newline ignored); sent only over TLS. "
          "consentctl reads the environment variable CONSENT_TOKEN when this is empty.");

namespace consent {

absl::StatusOr<ClientCredentials> CredentialsFromFlags() {
  ClientCredentials credentials;
  credentials.tls_ca_file = absl::GetFlag(FLAGS_tls_ca_file);
  credentials.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  credentials.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  credentials.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  if (const std::string path = absl::GetFlag(FLAGS_token_file); !path.empty()) {
    absl::StatusOr<std::string> token = ReadTokenFile(path);
    if (!token.ok()) return token.status();
    credentials.token = *std::move(token);
  }
  return credentials;
}

}  // namespace consent
