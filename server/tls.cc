#include "server/tls.h"

#include <grpc/grpc_security_constants.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"

namespace consent {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

absl::Status FlagError(absl::string_view flag, absl::string_view path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, " ", path, ": ", what));
}

// The first certificate of a PEM file, or an error naming the flag.
absl::Status ReadCertificate(absl::string_view flag, const std::string& path,
                             std::unique_ptr<X509, X509Free>* out) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new_file(path.c_str(), "r"));
  if (bio == nullptr) return FlagError(flag, path, "cannot be read");
  out->reset(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (*out == nullptr) return FlagError(flag, path, "holds no PEM certificate");
  return absl::OkStatus();
}

}  // namespace

bool ParseClientAuth(const std::string& text, ClientAuth* out) {
  if (text == "none") {
    *out = ClientAuth::kNone;
  } else if (text == "optional") {
    *out = ClientAuth::kOptional;
  } else if (text == "require") {
    *out = ClientAuth::kRequire;
  } else {
    return false;
  }
  return true;
}

absl::Status CheckTlsOptions(const TlsOptions& options) {
  if (!options.enabled()) {
    if (!options.client_ca_file.empty() || options.client_auth != ClientAuth::kNone) {
      return absl::InvalidArgumentError(
          "--tls_client_ca_file and --tls_client_auth need TLS: set --tls_cert_file and "
          "--tls_key_file");
    }
    return absl::OkStatus();
  }
  if (options.cert_file.empty() || options.key_file.empty()) {
    return absl::InvalidArgumentError("--tls_cert_file and --tls_key_file go together: set both");
  }
  if (options.client_auth == ClientAuth::kNone && !options.client_ca_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_client_ca_file is set but --tls_client_auth is none: set it to optional or "
        "require");
  }
  if (options.client_auth != ClientAuth::kNone && options.client_ca_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_client_auth asks for client certificates: set --tls_client_ca_file to the CA "
        "they are verified against");
  }
  if (options.refresh_interval < absl::Seconds(1)) {
    return absl::InvalidArgumentError("--tls_refresh_interval must be at least 1s");
  }
  std::unique_ptr<X509, X509Free> cert;
  if (absl::Status s = ReadCertificate("tls_cert_file", options.cert_file, &cert); !s.ok()) {
    return s;
  }
  std::unique_ptr<BIO, BioFree> key_bio(BIO_new_file(options.key_file.c_str(), "r"));
  if (key_bio == nullptr) return FlagError("tls_key_file", options.key_file, "cannot be read");
  std::unique_ptr<EVP_PKEY, KeyFree> key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  // The key's bytes are never part of a message.
  if (key == nullptr) {
    return FlagError("tls_key_file", options.key_file, "holds no unencrypted PEM private key");
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    return FlagError("tls_key_file", options.key_file,
                     absl::StrCat("is not the key of the certificate in ", options.cert_file));
  }
  if (!options.client_ca_file.empty()) {
    std::unique_ptr<X509, X509Free> ca;
    if (absl::Status s = ReadCertificate("tls_client_ca_file", options.client_ca_file, &ca);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

std::shared_ptr<grpc::ServerCredentials> MakeTlsServerCredentials(const TlsOptions& options) {
  const auto seconds = static_cast<unsigned int>(
      std::max<int64_t>(1, absl::ToInt64Seconds(options.refresh_interval)));
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      options.key_file, options.cert_file, options.client_ca_file, seconds);
  grpc::experimental::TlsServerCredentialsOptions tls(provider);
  tls.watch_identity_key_cert_pairs();
  switch (options.client_auth) {
    case ClientAuth::kNone:
      tls.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
      break;
    case ClientAuth::kOptional:
      tls.watch_root_certs();
      tls.set_cert_request_type(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
      break;
    case ClientAuth::kRequire:
      tls.watch_root_certs();
      tls.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
      break;
  }
  return grpc::experimental::TlsServerCredentials(tls);
}

}  // namespace consent
