#include "tests/test_certs.h"

#include <gtest/gtest.h>

#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"

namespace consent::testing {
namespace {

void Run(const std::vector<std::string>& args) {
  CommandResult result = RunCommand(args);
  if (result.exit_code != 0) ADD_FAILURE() << "openssl " << args[1] << ": " << result.err;
}

const std::vector<std::string> kEcKey = {"-newkey", "ec", "-pkeyopt",
                                         "ec_paramgen_curve:prime256v1", "-nodes"};

}  // namespace

void TestCertificates::MakeCa(const std::string& name) {
  std::vector<std::string> args = {"/usr/bin/openssl", "req", "-x509"};
  args.insert(args.end(), kEcKey.begin(), kEcKey.end());
  args.insert(args.end(), {"-keyout", Path(name + "-ca.key"), "-out", Path(name + "-ca.pem"),
                           "-days", "30", "-subj", "/CN=" + name + "-ca"});
  Run(args);
}

void TestCertificates::MakeCert(const std::string& ca, const std::string& name,
                                const std::string& extensions, bool expired) {
  std::vector<std::string> request = {"/usr/bin/openssl", "req"};
  request.insert(request.end(), kEcKey.begin(), kEcKey.end());
  request.insert(request.end(), {"-keyout", Path(name + ".key"), "-out", Path(name + ".csr"),
                                 "-subj", "/CN=" + name});
  Run(request);
  WriteFile(Path(name + ".ext"), extensions);
  if (!expired) {
    Run({"/usr/bin/openssl", "x509", "-req", "-in", Path(name + ".csr"), "-CA",
         Path(ca + "-ca.pem"), "-CAkey", Path(ca + "-ca.key"), "-CAcreateserial", "-out",
         Path(name + ".pem"), "-days", "30", "-extfile", Path(name + ".ext")});
    return;
  }
  // `openssl x509` starts a certificate now; `openssl ca` takes any dates
  // but wants a configuration and a database of what it signed.
  const std::string db = Path(ca + "-ca.db");
  if (!std::ifstream(db + "/index.txt").good()) {
    RunCommand({"/usr/bin/mkdir", "-p", db});
    WriteFile(db + "/index.txt", "");
    WriteFile(db + "/serial", "1000\n");
    WriteFile(db + "/ca.cnf", absl::StrCat("[ca]\ndefault_ca = test\n[test]\ndir = ", db,
                                           "\ndatabase = $dir/index.txt\nnew_certs_dir = $dir\n"
                                           "serial = $dir/serial\ndefault_md = sha256\n"
                                           "policy = any\nunique_subject = no\n"
                                           "[any]\ncommonName = supplied\n"));
  }
  Run({"/usr/bin/openssl",
       "ca",
       "-batch",
       "-notext",
       "-config",
       db + "/ca.cnf",
       "-cert",
       Path(ca + "-ca.pem"),
       "-keyfile",
       Path(ca + "-ca.key"),
       "-in",
       Path(name + ".csr"),
       "-out",
       Path(name + ".pem"),
       "-startdate",
       "20200101000000Z",
       "-enddate",
       "20200201000000Z",
       "-extfile",
       Path(name + ".ext")});
}

std::string ServerExtensions() {
  return "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";
}

std::string ClientExtensions(const std::string& subject_alt_name) {
  std::string lines = "extendedKeyUsage=clientAuth\n";
  if (!subject_alt_name.empty()) lines += "subjectAltName=" + subject_alt_name + "\n";
  return lines;
}

}  // namespace consent::testing
