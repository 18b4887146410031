// Callers over TLS: the auth file, tokens and client certificates, roles,
// reload, and the start-up refusals. Certificates are made at test time with
// the openssl command line: a CA, consentd's certificate, a client of that
// CA, and a client of another CA.
#include "server/auth.h"

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "client/consent_client.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/server.h"
#include "tests/test_util.h"

namespace consent {
namespace {

using ::consent::testing::TempDir;
using ::testing::HasSubstr;

// printf %s TOKEN | sha256sum, for the tokens below.
std::string Sha256Hex(const std::string& text) {
  auto result = testing::RunCommand({"/usr/bin/sha256sum"}, text);
  return result.out.substr(0, 64);
}

void Run(const std::vector<std::string>& args) {
  auto result = testing::RunCommand(args);
  ASSERT_EQ(result.exit_code, 0) << args[1] << ": " << result.err;
}

// A CA in `dir`/<name>-ca.{pem,key}, and certificates it signs.
void MakeCa(const TempDir& dir, const std::string& name) {
  Run({"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
       "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", dir.Sub(name + "-ca.key"), "-out",
       dir.Sub(name + "-ca.pem"), "-days", "30", "-subj", "/CN=" + name + "-ca"});
}

void MakeCert(const TempDir& dir, const std::string& ca, const std::string& name,
              const std::string& extensions) {
  Run({"/usr/bin/openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
       "-nodes", "-keyout", dir.Sub(name + ".key"), "-out", dir.Sub(name + ".csr"), "-subj",
       "/CN=" + name});
  testing::WriteFile(dir.Sub(name + ".ext"), extensions);
  Run({"/usr/bin/openssl", "x509", "-req", "-in", dir.Sub(name + ".csr"), "-CA",
       dir.Sub(ca + "-ca.pem"), "-CAkey", dir.Sub(ca + "-ca.key"), "-CAcreateserial", "-out",
       dir.Sub(name + ".pem"), "-days", "30", "-extfile", dir.Sub(name + ".ext")});
}

constexpr char kCheckerToken[] = "checker-token-3f1e9a";
constexpr char kWriterToken[] = "writer-token-77c2d0";
constexpr char kAuditorToken[] = "auditor-token-a81b44";

std::string AuthFile(const std::string& writer_token) {
  return absl::StrCat(R"(
callers { name: "pipeline" roles: ROLE_CHECKER token_sha256: ")",
                      Sha256Hex(kCheckerToken),
                      R"("
          certificate_identities: "spiffe://example.org/pipeline" }
callers { name: "settings" roles: ROLE_WRITER token_sha256: ")",
                      Sha256Hex(writer_token), R"(" }
callers { name: "privacy" roles: [ROLE_AUDITOR, ROLE_ADMIN] token_sha256: ")",
                      Sha256Hex(kAuditorToken), R"(" }
)");
}

class AuthTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    certs_ = new TempDir();
    MakeCa(*certs_, "test");
    MakeCa(*certs_, "other");
    MakeCert(*certs_, "test", "server",
             "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    MakeCert(*certs_, "test", "pipeline",
             "subjectAltName=URI:spiffe://example.org/pipeline\nextendedKeyUsage=clientAuth\n");
    MakeCert(*certs_, "other", "stranger",
             "subjectAltName=URI:spiffe://example.org/pipeline\nextendedKeyUsage=clientAuth\n");
  }
  static void TearDownTestSuite() {
    delete certs_;
    certs_ = nullptr;
  }

  void SetUp() override {
    testing::WriteFile(dir_.Sub("auth.textproto"), AuthFile(kWriterToken));
    options_.listen = "127.0.0.1:0";
    options_.metrics_listen = "";
    options_.data_dir = dir_.Sub("data");
    options_.policy_path = testing::DefaultPolicyPath();
    options_.tls.cert_file = certs_->Sub("server.pem");
    options_.tls.key_file = certs_->Sub("server.key");
    options_.tls.client_ca_file = certs_->Sub("test-ca.pem");
    options_.tls.client_auth = ClientAuth::kOptional;
    options_.auth_file = dir_.Sub("auth.textproto");
  }

  void Start() {
    auto server = ConsentServer::Start(options_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  ClientCredentials Tls() const {
    ClientCredentials credentials;
    credentials.tls_ca_file = certs_->Sub("test-ca.pem");
    credentials.tls_server_name = "localhost";
    return credentials;
  }
  ClientCredentials WithToken(const std::string& token) const {
    ClientCredentials credentials = Tls();
    credentials.token = token;
    return credentials;
  }
  ClientCredentials WithCertificate(const std::string& name) const {
    ClientCredentials credentials = Tls();
    credentials.tls_cert_file = certs_->Sub(name + ".pem");
    credentials.tls_key_file = certs_->Sub(name + ".key");
    return credentials;
  }
  std::unique_ptr<Client> Connect(const ClientCredentials& credentials) {
    ClientOptions options;
    options.max_attempts = 1;
    options.timeout = absl::Seconds(5);
    auto client = Client::Connect(server_->listen_address(), credentials, options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  static v1::SetPreferenceRequest ObjectionOf(const std::string& user) {
    v1::SetPreferenceRequest request;
    request.set_user_id(user);
    request.set_purpose("ai_training");
    request.set_state(v1::PREFERENCE_STATE_OBJECTED);
    return request;
  }

  static TempDir* certs_;
  TempDir dir_;
  ServerOptions options_;
  std::unique_ptr<ConsentServer> server_;
};

TempDir* AuthTest::certs_ = nullptr;

TEST_F(AuthTest, EachCallNeedsAKnownCallerWithTheRole) {
  options_.metrics_listen = "127.0.0.1:0";
  Start();
  // No credentials, and an unknown token: UNAUTHENTICATED, before the
  // request is even looked at (an invalid user id changes nothing).
  for (const std::string& token : {std::string(), std::string("not-a-known-token")}) {
    auto client = Connect(WithToken(token));
    auto check = client->Check(testing::PublicPostCheck(std::string("\x01") + "bad id"));
    EXPECT_EQ(check.status().code(), absl::StatusCode::kUnauthenticated) << token;
  }
  // A UK adult: ai_training is allowed by default (legitimate interest).
  auto settings = Connect(WithToken(kWriterToken));
  ASSERT_TRUE(settings->UpdateSubject(testing::UkAdult("alice")).ok());
  // A checker may check, not write.
  auto pipeline = Connect(WithToken(kCheckerToken));
  auto check = pipeline->Check(testing::PublicPostCheck("alice"));
  ASSERT_TRUE(check.ok()) << check.status();
  EXPECT_EQ(check->decision().reason(), v1::DECISION_REASON_ALLOWED_DEFAULT);
  auto write = pipeline->SetPreference(ObjectionOf("alice"));
  EXPECT_EQ(write.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(write.status().message(),
              HasSubstr("caller \"pipeline\" (checker) may not call SetPreference: it needs one "
                        "of writer"));
  // A writer may write, not check; history records its name as the caller.
  auto written = settings->SetPreference(ObjectionOf("alice"));
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(settings->Check(testing::PublicPostCheck("alice")).status().code(),
            absl::StatusCode::kPermissionDenied);
  auto privacy = Connect(WithToken(kAuditorToken));
  v1::ListHistoryRequest history;
  history.set_user_id("alice");
  auto events = privacy->ListHistory(history);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->events_size(), 2);
  EXPECT_EQ(events->events(0).caller(), "settings");
  EXPECT_EQ(events->events(1).caller(), "settings");
  // The objection is in force for the checker.
  check = pipeline->Check(testing::PublicPostCheck("alice"));
  ASSERT_TRUE(check.ok()) << check.status();
  EXPECT_EQ(check->decision().reason(), v1::DECISION_REASON_DENIED_OBJECTION);

  auto metrics = testing::HttpGet(server_->metrics_address(), "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  auto sample = [&metrics](const std::string& series) {
    auto value = testing::SampleValue(*metrics, series);
    return value.ok() ? *value : -1;
  };
  EXPECT_EQ(sample("consent_auth_failures_total{reason=\"no_credentials\"}"), 1);
  EXPECT_EQ(sample("consent_auth_failures_total{reason=\"unknown_token\"}"), 1);
  EXPECT_EQ(sample("consent_auth_failures_total{reason=\"missing_role\"}"), 2);
  EXPECT_EQ(sample("consent_calls_by_caller_total{caller=\"settings\",method=\"SetPreference\"}"),
            1);
  EXPECT_EQ(sample("consent_calls_by_caller_total{caller=\"pipeline\",method=\"Check\"}"), 2);
  // Tokens never reach the exposition.
  EXPECT_EQ(metrics->find(kWriterToken), std::string::npos);
}

TEST_F(AuthTest, WatchersWithoutTheAuditorRoleSeeNoAttributeValues) {
  Start();
  v1::UpdateSubjectRequest update;
  update.set_user_id("erin");
  update.mutable_attributes()->set_jurisdiction("GB");
  update.mutable_update_mask()->add_paths("jurisdiction");
  ASSERT_TRUE(Connect(WithToken(kWriterToken))->UpdateSubject(update).ok());
  auto first_event = [this](const std::string& token) {
    v1::ChangeEvent event;
    v1::WatchChangesRequest request;
    request.set_start_revision(1);
    absl::Status status = Connect(WithToken(token))
                              ->Watch(request, [&event](const v1::WatchChangesResponse& message) {
                                if (!message.has_event()) return true;
                                event = message.event();
                                return false;
                              });
    EXPECT_TRUE(status.ok()) << status;
    return event;
  };
  const v1::ChangeEvent checked = first_event(kCheckerToken);
  EXPECT_EQ(checked.revision(), 1);
  EXPECT_EQ(checked.user_id(), "erin");
  EXPECT_EQ(checked.kind(), v1::CHANGE_KIND_SUBJECT_ATTRIBUTES);
  EXPECT_FALSE(checked.has_attributes());
  const v1::ChangeEvent audited = first_event(kAuditorToken);
  EXPECT_EQ(audited.attributes().after().jurisdiction(), "GB");
}

TEST_F(AuthTest, ClientCertificatesIdentifyCallersAndAForeignCaIsRefused) {
  Start();
  auto pipeline = Connect(WithCertificate("pipeline"));
  auto check = pipeline->Check(testing::PublicPostCheck("bob"));
  ASSERT_TRUE(check.ok()) << check.status();
  EXPECT_EQ(pipeline->SetPreference(ObjectionOf("bob")).status().code(),
            absl::StatusCode::kPermissionDenied);
  // Same identity, signed by another CA: the handshake fails.
  auto stranger = Connect(WithCertificate("stranger"));
  EXPECT_EQ(stranger->Check(testing::PublicPostCheck("bob")).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(AuthTest, HealthNeedsNoCredentials) {
  Start();
  auto credentials = MakeChannelCredentials(Tls());
  ASSERT_TRUE(credentials.ok());
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  auto channel = grpc::CreateCustomChannel(server_->listen_address(), *credentials, args);
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  request.set_service("consent.v1.ConsentRegistry");
  ASSERT_TRUE(health->Check(&context, request, &response).ok());
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_F(AuthTest, ReloadTakesNewTokensDropsRemovedOnesAndKeepsTheOldFileOnError) {
  Start();
  const std::string new_token = "writer-token-rotated-5be3";
  testing::WriteFile(options_.auth_file, AuthFile(new_token));
  auto admin = Connect(WithToken(kAuditorToken));  // privacy is an admin too
  auto reloaded = admin->ReloadAuth();
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(reloaded->caller_count(), 3);
  EXPECT_EQ(Connect(WithToken(kWriterToken))->SetPreference(ObjectionOf("carol")).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(Connect(WithToken(new_token))->SetPreference(ObjectionOf("carol")).ok());

  testing::WriteFile(options_.auth_file, "callers { name: \"x\" roles: ROLE_WRITER }");
  auto rejected = admin->ReloadAuth();
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(rejected.status().message(),
              HasSubstr("callers[0] (x): no certificate_identities and no token_sha256"));
  EXPECT_TRUE(Connect(WithToken(new_token))->SetPreference(ObjectionOf("carol")).ok());
  // Only admins reload.
  EXPECT_EQ(Connect(WithToken(new_token))->ReloadAuth().status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(AuthTest, StartRefusesUnsafeSettings) {
  ServerOptions options = options_;
  options.tls = TlsOptions();
  auto no_tls = ConsentServer::Start(options);
  EXPECT_EQ(no_tls.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(no_tls.status().message(), HasSubstr("--auth_file needs TLS"));

  options = options_;
  options.auth_file = "";
  options.listen = "0.0.0.0:0";
  auto open = ConsentServer::Start(options);
  EXPECT_EQ(open.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(open.status().message(), HasSubstr("is not a loopback address"));

  options = options_;
  options.tls.key_file = certs_->Sub("pipeline.key");  // not the server certificate's key
  auto mismatched = ConsentServer::Start(options);
  EXPECT_EQ(mismatched.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mismatched.status().message(), HasSubstr("is not the key of the certificate"));
}

TEST_F(AuthTest, ConsentctlTakesTheSameCredentials) {
  Start();
  testing::WriteFile(dir_.Sub("writer.token"), std::string(kWriterToken) + "\n");
  const std::vector<std::string> tls = {CONSENTCTL_PATH, "--target=" + server_->listen_address(),
                                        "--tls_ca_file=" + certs_->Sub("test-ca.pem"),
                                        "--tls_server_name=localhost"};
  auto with = [&tls](std::vector<std::string> more) {
    std::vector<std::string> args = tls;
    args.insert(args.end(), more.begin(), more.end());
    return testing::RunCommand(args);
  };
  auto refused = with({"object", "dave", "ai_training"});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_THAT(refused.err, HasSubstr("UNAUTHENTICATED"));
  auto written =
      with({"--token_file=" + dir_.Sub("writer.token"), "object", "dave", "ai_training"});
  EXPECT_EQ(written.exit_code, 0) << written.err;
  auto checked = with({"--tls_cert_file=" + certs_->Sub("pipeline.pem"),
                       "--tls_key_file=" + certs_->Sub("pipeline.key"), "check", "ai_training",
                       "dave", "post-1", "--create_time=2024-05-01T12:00:00Z"});
  EXPECT_EQ(checked.exit_code, 0) << checked.err;
  // dave's age is unknown (rule 7 comes first); revision 1 is the objection.
  EXPECT_THAT(checked.out, HasSubstr("DENIED_MINOR"));
  EXPECT_THAT(checked.out, HasSubstr("revision 1)"));
  // A token never goes in the clear.
  auto plain = testing::RunCommand({CONSENTCTL_PATH, "--target=" + server_->listen_address(),
                                    "--token_file=" + dir_.Sub("writer.token"), "object", "dave",
                                    "ai_training"});
  EXPECT_NE(plain.exit_code, 0);
  EXPECT_THAT(plain.err, HasSubstr("a token or client certificate needs TLS"));
}

TEST(AuthConfigTest, BadFilesAreRefusedNamingTheCallerAndField) {
  const std::string digest(64, 'a');
  struct Case {
    std::string text;
    std::string error;
  };
  const Case cases[] = {
      {"callers { roles: ROLE_CHECKER token_sha256: \"" + digest + "\" }",
       "callers[0]: name must be 1-64 of [A-Za-z0-9._-]"},
      {"callers { name: \"a\" token_sha256: \"" + digest + "\" }", "callers[0] (a): roles: none"},
      {"callers { name: \"a\" roles: ROLE_CHECKER token_sha256: \"ABC\" }",
       "callers[0] (a): token_sha256: not 64 lowercase hex digits"},
      {"callers { name: \"a\" roles: ROLE_CHECKER token_sha256: \"" + digest +
           "\" } callers { name: \"a\" roles: ROLE_WRITER certificate_identities: \"x\" }",
       "callers[1] (a): the name is used by an earlier caller"},
      {"callers { name: \"a\" roles: ROLE_CHECKER token_sha256: \"" + digest +
           "\" } callers { name: \"b\" roles: ROLE_WRITER token_sha256: \"" + digest + "\" }",
       "callers[1] (b): token_sha256: a digest is listed twice"},
      {"callers { name: \"a\" roles: ROLE_UNSPECIFIED certificate_identities: \"x\" }",
       "callers[0] (a): roles: 0 is not a role"},
      {"callers { nme: \"a\" }", "not a consent.v1.AuthConfig: line 1:"},
  };
  for (const Case& c : cases) {
    auto config = AuthConfigSnapshot::Parse(c.text);
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_THAT(config.status().message(), HasSubstr(c.error)) << c.text;
  }
}

TEST(AuthConfigTest, TokensAndCertificatesFindTheirCaller) {
  auto config = AuthConfigSnapshot::Parse(
      absl::StrCat("callers { name: \"a\" roles: [ROLE_CHECKER, ROLE_AUDITOR] token_sha256: \"",
                   Sha256Hex("secret-a"), "\" certificate_identities: \"spiffe://x/a\" }"));
  ASSERT_TRUE(config.ok()) << config.status();
  const AuthCaller* caller = (*config)->ByToken("secret-a");
  ASSERT_NE(caller, nullptr);
  EXPECT_EQ(caller->name, "a");
  EXPECT_EQ(RoleNames(caller->roles), "checker,auditor");
  EXPECT_EQ((*config)->ByToken("secret-b"), nullptr);
  EXPECT_EQ((*config)->ByToken(""), nullptr);
  EXPECT_EQ((*config)->ByCertificate("spiffe://x/a"), caller);
  EXPECT_EQ((*config)->ByCertificate("spiffe://x/b"), nullptr);
}

}  // namespace
}  // namespace consent
