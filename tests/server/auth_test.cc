// Callers over TLS: the auth file, tokens and client certificates, roles,
// reload, certificate rotation, reflection, and the start-up refusals.
// Certificates are made at test time with the openssl command line: a CA,
// consentd's certificate, a client of that CA, a client of another CA, and
// consentd's next certificate from that other CA. tests/server/auth_matrix_test.cc
// has every RPC × role × kind of credentials.
#include "server/auth.h"

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/consent_client.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "server/server.h"
#include "tests/test_certs.h"
#include "tests/test_util.h"

namespace consent {
namespace {

using ::consent::testing::TempDir;
using ::consent::testing::TestCertificates;
using ::testing::HasSubstr;

// printf %s TOKEN | sha256sum, for the tokens below.
std::string Sha256Hex(const std::string& text) {
  auto result = testing::RunCommand({"/usr/bin/sha256sum"}, text);
  return result.out.substr(0, 64);
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
    certs_ = new TestCertificates();
    certs_->MakeCa("test");
    certs_->MakeCa("other");
    certs_->MakeCert("test", "server", testing::ServerExtensions());
    certs_->MakeCert("test", "pipeline",
                     testing::ClientExtensions("URI:spiffe://example.org/pipeline"));
    certs_->MakeCert("other", "stranger",
                     testing::ClientExtensions("URI:spiffe://example.org/pipeline"));
    // consentd's next certificate, from another CA: rotation.
    certs_->MakeCert("other", "server-next", testing::ServerExtensions());
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
    options_.tls.cert_file = certs_->Path("server.pem");
    options_.tls.key_file = certs_->Path("server.key");
    options_.tls.client_ca_file = certs_->Path("test-ca.pem");
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
    credentials.tls_ca_file = certs_->Path("test-ca.pem");
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
    credentials.tls_cert_file = certs_->Path(name + ".pem");
    credentials.tls_key_file = certs_->Path(name + ".key");
    return credentials;
  }
  // A channel to the server that trusts its CA and sends no credentials.
  std::shared_ptr<grpc::Channel> TlsChannel() const {
    auto credentials = MakeChannelCredentials(Tls());
    if (!credentials.ok()) {
      ADD_FAILURE() << credentials.status();
      return nullptr;
    }
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("localhost");
    return grpc::CreateCustomChannel(server_->listen_address(), *credentials, args);
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

  static TestCertificates* certs_;
  TempDir dir_;
  ServerOptions options_;
  std::unique_ptr<ConsentServer> server_;
};

TestCertificates* AuthTest::certs_ = nullptr;

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
  auto channel = TlsChannel();
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
  options.tls.key_file = certs_->Path("pipeline.key");  // not the server certificate's key
  auto mismatched = ConsentServer::Start(options);
  EXPECT_EQ(mismatched.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mismatched.status().message(), HasSubstr("is not the key of the certificate"));
}

TEST_F(AuthTest, RequiredClientCertificatesRefuseTokenOnlyConnections) {
  options_.tls.client_auth = ClientAuth::kRequire;
  Start();
  // No certificate: the handshake fails, whatever the token.
  EXPECT_EQ(
      Connect(WithToken(kCheckerToken))->Check(testing::PublicPostCheck("gina")).status().code(),
      absl::StatusCode::kUnavailable);
  auto pipeline = Connect(WithCertificate("pipeline"));
  auto check = pipeline->Check(testing::PublicPostCheck("gina"));
  EXPECT_TRUE(check.ok()) << check.status();
}

// A health call over a new connection that trusts only `ca`: whether the
// handshake with consentd's certificate of the moment succeeds.
grpc::Status HealthOverNewConnection(const std::string& address, const std::string& ca) {
  ClientCredentials credentials;
  credentials.tls_ca_file = ca;
  auto channel_credentials = MakeChannelCredentials(credentials);
  if (!channel_credentials.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, "credentials");
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  // Its own connection, not one shared with (or backing off like) an
  // earlier channel to the same address.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto health = grpc::health::v1::Health::NewStub(
      grpc::CreateCustomChannel(address, *channel_credentials, args));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  return health->Check(&context, request, &response);
}

TEST_F(AuthTest, ServerCertificateRotatesWhileServing) {
  // consentd's own copies, replaced below the way a Kubernetes Secret
  // volume is: the new pair written beside, then renamed into place.
  testing::WriteFile(dir_.Sub("tls.crt"), testing::ReadFile(certs_->Path("server.pem")));
  testing::WriteFile(dir_.Sub("tls.key"), testing::ReadFile(certs_->Path("server.key")));
  options_.tls.cert_file = dir_.Sub("tls.crt");
  options_.tls.key_file = dir_.Sub("tls.key");
  options_.tls.refresh_interval = absl::Seconds(1);
  Start();
  auto before = Connect(WithToken(kCheckerToken));
  ASSERT_TRUE(before->Check(testing::PublicPostCheck("hana")).ok());
  const std::string address = server_->listen_address();
  EXPECT_EQ(HealthOverNewConnection(address, certs_->Path("other-ca.pem")).error_code(),
            grpc::StatusCode::UNAVAILABLE);

  testing::WriteFile(dir_.Sub("tls.key.new"), testing::ReadFile(certs_->Path("server-next.key")));
  testing::WriteFile(dir_.Sub("tls.crt.new"), testing::ReadFile(certs_->Path("server-next.pem")));
  ASSERT_EQ(std::rename(dir_.Sub("tls.key.new").c_str(), dir_.Sub("tls.key").c_str()), 0);
  ASSERT_EQ(std::rename(dir_.Sub("tls.crt.new").c_str(), dir_.Sub("tls.crt").c_str()), 0);
  // gRPC reads the files again every refresh interval (1 s here) on its own
  // clock: wait for the new certificate to be served, 30 s at most.
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  grpc::Status next;
  while (!(next = HealthOverNewConnection(address, certs_->Path("other-ca.pem"))).ok() &&
         absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(next.ok()) << "the renewed certificate was not served: " << next.error_message();
  // New connections get the new certificate only; the connection opened
  // before the renewal goes on.
  EXPECT_EQ(HealthOverNewConnection(address, certs_->Path("test-ca.pem")).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  auto check = before->Check(testing::PublicPostCheck("hana"));
  EXPECT_TRUE(check.ok()) << check.status();
}

// Reflection over `channel` with `token`: the services listed, and the
// files sent for the symbol consent.v1.ConsentRegistry.
struct Reflected {
  grpc::Status status;
  std::vector<std::string> services;
  std::vector<std::string> files;
};
Reflected Reflect(const std::shared_ptr<grpc::Channel>& channel, const std::string& token) {
  namespace reflection = grpc::reflection::v1alpha;
  auto stub = reflection::ServerReflection::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  auto stream = stub->ServerReflectionInfo(&context);
  reflection::ServerReflectionRequest list;
  list.set_list_services("");
  reflection::ServerReflectionRequest symbol;
  symbol.set_file_containing_symbol("consent.v1.ConsentRegistry");
  Reflected out;
  reflection::ServerReflectionResponse response;
  if (stream->Write(list) && stream->Read(&response)) {
    for (const auto& service : response.list_services_response().service()) {
      out.services.push_back(service.name());
    }
    if (stream->Write(symbol) && stream->Read(&response)) {
      for (const std::string& bytes : response.file_descriptor_response().file_descriptor_proto()) {
        google::protobuf::FileDescriptorProto file;
        EXPECT_TRUE(file.ParseFromString(bytes));
        out.files.push_back(file.name());
      }
    }
  }
  stream->WritesDone();
  out.status = stream->Finish();
  return out;
}

TEST_F(AuthTest, ReflectionAnswersAnyKnownCallerAndNobodyElse) {
  Start();
  auto channel = TlsChannel();
  const Reflected refused = Reflect(channel, "");
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(refused.services.empty());
  EXPECT_EQ(Reflect(channel, "not-a-known-token").status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // A writer holds no role reflection needs: any known caller may.
  const Reflected reflected = Reflect(channel, kWriterToken);
  ASSERT_TRUE(reflected.status.ok()) << reflected.status.error_message();
  EXPECT_THAT(reflected.services,
              ::testing::UnorderedElementsAre("consent.v1.ConsentRegistry",
                                              "consent.v1.ConsentAdmin", "grpc.health.v1.Health",
                                              "grpc.reflection.v1alpha.ServerReflection"));
  // The file first, then what it imports, directly or not.
  ASSERT_FALSE(reflected.files.empty());
  EXPECT_EQ(reflected.files[0], "consent/v1/registry.proto");
  EXPECT_THAT(reflected.files, ::testing::IsSupersetOf(
                                   {"consent/v1/types.proto", "google/protobuf/timestamp.proto"}));
}

TEST_F(AuthTest, ConsentctlTakesTheSameCredentials) {
  Start();
  testing::WriteFile(dir_.Sub("writer.token"), std::string(kWriterToken) + "\n");
  const std::vector<std::string> tls = {CONSENTCTL_PATH, "--target=" + server_->listen_address(),
                                        "--tls_ca_file=" + certs_->Path("test-ca.pem"),
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
  auto checked = with({"--tls_cert_file=" + certs_->Path("pipeline.pem"),
                       "--tls_key_file=" + certs_->Path("pipeline.key"), "check", "ai_training",
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
