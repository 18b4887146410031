// The credential flags the command-line tools share (consentctl,
// consent-bench): --tls_ca_file, --tls_cert_file, --tls_key_file,
// --tls_server_name and --token_file, defined once here
// (docs/security.md).
#ifndef CONSENT_CLIENT_CREDENTIAL_FLAGS_H_
#define CONSENT_CLIENT_CREDENTIAL_FLAGS_H_

#include <string>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "client/consent_client.h"

ABSL_DECLARE_FLAG(std::string, tls_ca_file);
ABSL_DECLARE_FLAG(std::string, tls_cert_file);
ABSL_DECLARE_FLAG(std::string, tls_key_file);
ABSL_DECLARE_FLAG(std::string, tls_server_name);
ABSL_DECLARE_FLAG(std::string, token_file);

namespace consent {

// The credentials the flags give, the token read from --token_file
// (ReadTokenFile's errors). No token when the flag is empty.
absl::StatusOr<ClientCredentials> CredentialsFromFlags();

}  // namespace consent

#endif  // CONSENT_CLIENT_CREDENTIAL_FLAGS_H_
