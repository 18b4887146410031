// Certificates for the TLS tests, made with the openssl command line in a
// temporary directory: CAs, and certificates they sign, current or expired.
#ifndef CONSENT_TESTS_TEST_CERTS_H_
#define CONSENT_TESTS_TEST_CERTS_H_

#include <string>

#include "tests/test_util.h"

namespace consent::testing {

class TestCertificates {
 public:
  // A self-signed CA: Path(name + "-ca.pem") and its key, name + "-ca.key".
  // Fails the test (ADD_FAILURE) when openssl does.
  void MakeCa(const std::string& name);
  // A certificate for `name` signed by CA `ca`: Path(name + ".pem") and
  // Path(name + ".key"), P-256, subject CN=`name`, the openssl extension
  // lines `extensions` (subjectAltName=..., extendedKeyUsage=...). Valid
  // for 30 days from now, or, when `expired`, for January 2020 only.
  void MakeCert(const std::string& ca, const std::string& name, const std::string& extensions,
                bool expired = false);

  std::string Path(const std::string& file) const { return dir_.Sub(file); }

 private:
  TempDir dir_;
};

// "subjectAltName=...\nextendedKeyUsage=serverAuth" for consentd on
// loopback (localhost, 127.0.0.1), and the same for a client with the
// given subjectAltName value ("URI:spiffe://...", "DNS:..."; empty for
// none: the subject CN names it).
std::string ServerExtensions();
std::string ClientExtensions(const std::string& subject_alt_name);

}  // namespace consent::testing

#endif  // CONSENT_TESTS_TEST_CERTS_H_
