// Every RPC (server reflection included) × every role × every kind of
// credentials, against a real consentd over TLS with client certificates
// optional: the exact status code of each cell.
//
// Each call sends a request that is valid as a message but asks for
// nothing (all fields unset; WatchChanges a purpose filter that is not a
// purpose), so a caller that is let through gets the handler's own answer —
// INVALID_ARGUMENT from validation, or the RPC's result — and never a
// long-running stream. Calls go through gRPC's generic stub, as a
// bidirectional stream with one message, which on the wire is every kind of
// call.
#include <gmock/gmock.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/consent_client.h"
#include "consent/v1/registry.pb.h"
#include "server/server.h"
#include "tests/in_process_server.h"
#include "tests/test_certs.h"
#include "tests/test_util.h"

namespace consent {
namespace {

using ::consent::testing::TestCertificates;
using Code = grpc::StatusCode;

enum Role { kChecker, kWriter, kAuditor, kAdmin };
constexpr Role kRoles[] = {kChecker, kWriter, kAuditor, kAdmin};
const char* RoleName(Role role) {
  static const char* const kNames[] = {"checker", "writer", "auditor", "admin"};
  return kNames[role];
}

enum class Credentials {
  kNone,          // TLS, nothing else
  kUnknownToken,  // a token the auth file does not list
  kForeignCa,     // the role's certificate identity, signed by another CA
  kExpired,       // the role's certificate, expired
  kValidToken,    // the role's token
  kValidCertificate,
};
constexpr Credentials kKinds[] = {Credentials::kNone,       Credentials::kUnknownToken,
                                  Credentials::kForeignCa,  Credentials::kExpired,
                                  Credentials::kValidToken, Credentials::kValidCertificate};
const char* KindName(Credentials kind) {
  switch (kind) {
    case Credentials::kNone:
      return "none";
    case Credentials::kUnknownToken:
      return "unknown token";
    case Credentials::kForeignCa:
      return "wrong CA";
    case Credentials::kExpired:
      return "expired certificate";
    case Credentials::kValidToken:
      return "valid token";
    case Credentials::kValidCertificate:
      return "valid certificate";
  }
  return "?";
}

// Each role's caller: its token and its certificate's identity (a URI SAN,
// a DNS SAN, or no SAN, so the subject CN names it).
struct RoleCaller {
  const char* name;
  const char* role_enum;
  const char* token;
  const char* subject_alt_name;
  const char* identity;
};
const RoleCaller kCallers[] = {
    {"pipeline", "ROLE_CHECKER", "checker-token-1c2d", "URI:spiffe://example.org/pipeline",
     "spiffe://example.org/pipeline"},
    {"settings", "ROLE_WRITER", "writer-token-9a8b", "DNS:settings.example.org",
     "settings.example.org"},
    {"privacy", "ROLE_AUDITOR", "auditor-token-7e6f", "", "privacy"},
    {"sre", "ROLE_ADMIN", "admin-token-5d4c", "URI:spiffe://example.org/sre",
     "spiffe://example.org/sre"},
};

// An RPC, who may call it, and what a permitted caller gets for the
// request described at the top.
struct Method {
  const char* path;
  std::vector<Role> roles;
  Code permitted;
  std::string request;  // serialized
};

std::vector<Method> Methods() {
  v1::WatchChangesRequest watch;
  watch.set_purpose("Not A Purpose");
  const std::string empty;
  const Code invalid = Code::INVALID_ARGUMENT;
  return {
      {"SetPreference", {kWriter}, invalid, empty},
      {"BatchSetPreferences", {kWriter}, invalid, empty},
      {"UpdateSubject", {kWriter}, invalid, empty},
      {"SetContentExclusion", {kWriter}, invalid, empty},
      {"DeleteSubject", {kWriter}, invalid, empty},
      {"GetSubject", {kWriter, kAuditor}, invalid, empty},
      {"Check", {kChecker}, invalid, empty},
      {"BatchCheck", {kChecker}, invalid, empty},
      {"StreamCheck", {kChecker}, invalid, empty},
      {"ListHistory", {kAuditor}, invalid, empty},
      {"WatchChanges", {kChecker, kAuditor}, invalid, watch.SerializeAsString()},
      {"RecordNotice", {kWriter}, invalid, empty},
      {"BatchRecordNotices", {kWriter}, invalid, empty},
      {"GetSubjectSummary", {kWriter, kAuditor}, invalid, empty},
      {"ImportSubjects", {kWriter}, invalid, empty},  // no import_id
      {"GetPolicy", {kChecker, kAuditor, kAdmin}, Code::OK, empty},
      // Reloads the same file.
      {"ReloadPolicy", {kAdmin}, Code::OK, empty},
      {"CreateBackup", {kAdmin}, invalid, empty},  // no directory named
      {"VerifyAuditLog", {kAuditor, kAdmin}, Code::OK, empty},
      {"ReloadAuth", {kAdmin}, Code::OK, empty},
      // The server has no --snapshot_signing_key_file.
      {"ExportSnapshot", {kAdmin}, Code::FAILED_PRECONDITION, empty},
      // Any known caller; an empty request gets an error_response, and the
      // stream ends OK.
      {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
       {kChecker, kWriter, kAuditor, kAdmin},
       Code::OK,
       empty},
  };
}

std::string FullPath(const std::string& name) {
  if (name[0] == '/') return name;
  const bool admin = name == "GetPolicy" || name == "ReloadPolicy" || name == "CreateBackup" ||
                     name == "VerifyAuditLog" || name == "ReloadAuth" || name == "ExportSnapshot";
  return absl::StrCat(admin ? "/consent.v1.ConsentAdmin/" : "/consent.v1.ConsentRegistry/", name);
}

// One call of `path` as a bidirectional stream: `request`, then half-close,
// then every response read; the final status.
grpc::Status Call(const std::shared_ptr<grpc::Channel>& channel, const std::string& path,
                  const std::string& request, const std::string& token) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue queue;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  auto wait = [&queue](void* tag) {
    void* got = nullptr;
    bool ok = false;
    EXPECT_TRUE(queue.Next(&got, &ok));
    EXPECT_EQ(got, tag);
    return ok;
  };
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      stub.PrepareCall(&context, path, &queue);
  call->StartCall(reinterpret_cast<void*>(1));
  if (wait(reinterpret_cast<void*>(1))) {
    grpc::Slice slice(request);
    grpc::ByteBuffer message(&slice, 1);
    call->Write(message, reinterpret_cast<void*>(2));
    if (wait(reinterpret_cast<void*>(2))) {
      call->WritesDone(reinterpret_cast<void*>(3));
      wait(reinterpret_cast<void*>(3));
    }
    grpc::ByteBuffer response;
    for (;;) {
      call->Read(&response, reinterpret_cast<void*>(4));
      if (!wait(reinterpret_cast<void*>(4))) break;
    }
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  wait(reinterpret_cast<void*>(5));
  queue.Shutdown();
  void* tag;
  bool ok;
  while (queue.Next(&tag, &ok)) {
  }
  return status;
}

TEST(AuthMatrixTest, EveryRpcRoleAndCredentialGetsItsExactCode) {
  TestCertificates certs;
  certs.MakeCa("test");
  certs.MakeCa("other");
  certs.MakeCert("test", "server", testing::ServerExtensions());
  std::string auth_file;
  for (const RoleCaller& caller : kCallers) {
    const std::string extensions = testing::ClientExtensions(caller.subject_alt_name);
    // The CN is the caller's name: for "privacy" (no SAN) it is the identity.
    certs.MakeCert("test", caller.name, extensions);
    certs.MakeCert("other", absl::StrCat(caller.name, "-foreign"), extensions);
    certs.MakeCert("test", absl::StrCat(caller.name, "-expired"), extensions, /*expired=*/true);
    const std::string digest =
        testing::RunCommand({"/usr/bin/sha256sum"}, caller.token).out.substr(0, 64);
    absl::StrAppend(&auth_file, "callers { name: \"", caller.name, "\" roles: ", caller.role_enum,
                    " token_sha256: \"", digest, "\" certificate_identities: \"", caller.identity,
                    "\" }\n");
  }
  // The foreign and expired certificates carry the CN <name>-foreign and
  // <name>-expired: for "privacy", whose identity is its CN, the auth file
  // lists those too, so that only the verification can refuse them.
  absl::StrAppend(&auth_file,
                  "callers { name: \"privacy-alias\" roles: ROLE_AUDITOR certificate_identities: "
                  "[\"privacy-foreign\", \"privacy-expired\"] }\n");
  ASSERT_FALSE(::testing::Test::HasFailure());
  testing::TempDir dir;
  testing::WriteFile(dir.Sub("auth.textproto"), auth_file);

  ServerOptions options = testing::InProcessOptions(dir.Sub("data"));
  options.tls.cert_file = certs.Path("server.pem");
  options.tls.key_file = certs.Path("server.key");
  options.tls.client_ca_file = certs.Path("test-ca.pem");
  options.tls.client_auth = ClientAuth::kOptional;
  options.auth_file = dir.Sub("auth.textproto");
  auto server = ConsentServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();

  const std::vector<Method> methods = Methods();
  int cells = 0;
  std::vector<std::string> wrong;
  for (Role role : kRoles) {
    const RoleCaller& caller = kCallers[role];
    for (Credentials kind : kKinds) {
      ClientCredentials credentials;
      credentials.tls_ca_file = certs.Path("test-ca.pem");
      credentials.tls_server_name = "localhost";
      std::string token;
      std::string certificate;
      switch (kind) {
        case Credentials::kNone:
          break;
        case Credentials::kUnknownToken:
          token = "a-token-nobody-has";
          break;
        case Credentials::kForeignCa:
          certificate = absl::StrCat(caller.name, "-foreign");
          break;
        case Credentials::kExpired:
          certificate = absl::StrCat(caller.name, "-expired");
          break;
        case Credentials::kValidToken:
          token = caller.token;
          break;
        case Credentials::kValidCertificate:
          certificate = caller.name;
          break;
      }
      if (!certificate.empty()) {
        credentials.tls_cert_file = certs.Path(certificate + ".pem");
        credentials.tls_key_file = certs.Path(certificate + ".key");
      }
      auto channel_credentials = MakeChannelCredentials(credentials);
      ASSERT_TRUE(channel_credentials.ok()) << channel_credentials.status();
      grpc::ChannelArguments args;
      args.SetSslTargetNameOverride("localhost");
      auto channel =
          grpc::CreateCustomChannel((*server)->listen_address(), *channel_credentials, args);
      for (const Method& method : methods) {
        Code expected = method.permitted;
        switch (kind) {
          case Credentials::kNone:
          case Credentials::kUnknownToken:
            expected = Code::UNAUTHENTICATED;
            break;
          case Credentials::kForeignCa:
          case Credentials::kExpired:
            expected = Code::UNAVAILABLE;  // the TLS handshake fails
            break;
          case Credentials::kValidToken:
          case Credentials::kValidCertificate:
            if (std::find(method.roles.begin(), method.roles.end(), role) == method.roles.end()) {
              expected = Code::PERMISSION_DENIED;
            }
            break;
        }
        const grpc::Status status = Call(channel, FullPath(method.path), method.request, token);
        ++cells;
        if (status.error_code() != expected) {
          wrong.push_back(absl::StrCat(method.path, " × ", RoleName(role), " × ", KindName(kind),
                                       ": got ", status.error_code(), " (", status.error_message(),
                                       "), want ", expected));
        }
      }
    }
  }
  EXPECT_EQ(cells, 22 * 4 * 6);
  EXPECT_TRUE(wrong.empty()) << wrong.size() << " cells wrong:\n" << absl::StrJoin(wrong, "\n");
}

}  // namespace
}  // namespace consent
