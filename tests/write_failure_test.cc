// A failed synced write seen from a gRPC caller of a real consentd server
// (in-process, on loopback, real RocksDB under a fault-injecting file
// system): the write is UNAVAILABLE with "outcome unknown", the health of
// consent.v1.ConsentRegistry is NOT_SERVING and the gauge says why while
// writes are refused, checks keep answering, and the retry with the same
// request_id gives the definitive answer once the store has reopened.
#include <chrono>
#include <memory>
#include <string>

#include "client/consent_client.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "storage/consent_store.h"
#include "tests/fault_file_system.h"
#include "tests/test_util.h"

namespace consent {
namespace {

using ::consent::testing::FaultFileSystem;
using ::consent::testing::TempDir;
using ::testing::HasSubstr;
using HealthStatus = grpc::health::v1::HealthCheckResponse;

class WriteFailureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "127.0.0.1:0";
    options.data_dir = dir_.Sub("data");
    options.policy_path = testing::DefaultPolicyPath();
    options.adjust_store_options = [this](storage::StoreOptions& store) {
      store.file_system = fs_;
      store.reopen_interval = absl::ZeroDuration();
    };
    auto server = ConsentServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = Client::Connect(server_->listen_address());
    ClientOptions once;
    once.max_attempts = 1;
    once_ = Client::Connect(server_->listen_address(), once);
    health_ = grpc::health::v1::Health::NewStub(
        grpc::CreateChannel(server_->listen_address(), grpc::InsecureChannelCredentials()));
  }

  HealthStatus::ServingStatus Health(const std::string& service) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    HealthStatus response;
    EXPECT_TRUE(health_->Check(&context, request, &response).ok()) << service;
    return response.status();
  }

  double Metric(const std::string& series) {
    auto body = testing::HttpGet(server_->metrics_address(), "/metrics");
    EXPECT_TRUE(body.ok()) << body.status();
    auto value = testing::SampleValue(body.ok() ? *body : "", series);
    EXPECT_TRUE(value.ok()) << series << ": " << value.status();
    return value.ok() ? *value : -1;
  }

  absl::StatusOr<v1::SetPreferenceResponse> Object(Client& client, const std::string& user,
                                                   const std::string& request_id) {
    v1::SetPreferenceRequest request;
    request.set_user_id(user);
    request.set_purpose("ai_training");
    request.set_state(v1::PREFERENCE_STATE_OBJECTED);
    request.set_request_id(request_id);
    return client.SetPreference(request);
  }

  v1::DecisionReason Reason(const std::string& user) {
    v1::CheckRequest request;
    request.set_purpose("ai_training");
    request.set_user_id(user);
    v1::Content* content = request.mutable_content();
    content->set_content_id("p1");
    content->set_content_type(v1::CONTENT_TYPE_POST);
    content->set_visibility(v1::VISIBILITY_PUBLIC);
    content->mutable_create_time()->set_seconds(1'700'000'000);
    auto response = client_->Check(request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? response->decision().reason() : v1::DECISION_REASON_UNSPECIFIED;
  }

  TempDir dir_;
  std::shared_ptr<FaultFileSystem> fs_ = std::make_shared<FaultFileSystem>();
  std::unique_ptr<ConsentServer> server_;
  std::unique_ptr<Client> client_;  // retries UNAVAILABLE writes that carry a request_id
  std::unique_ptr<Client> once_;    // no retries
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

TEST_F(WriteFailureTest, CallersSeeOutcomeUnknownThenTheDefinitiveAnswer) {
  v1::UpdateSubjectRequest adult;
  adult.set_user_id("alice");
  adult.mutable_attributes()->set_jurisdiction("GB");
  adult.mutable_attributes()->mutable_birth_date()->set_year(1990);
  adult.mutable_attributes()->mutable_birth_date()->set_month(1);
  adult.mutable_attributes()->mutable_birth_date()->set_day(1);
  adult.mutable_update_mask()->add_paths("jurisdiction");
  adult.mutable_update_mask()->add_paths("birth_date");
  ASSERT_TRUE(client_->UpdateSubject(adult).ok());
  EXPECT_EQ(Health("consent.v1.ConsentRegistry"), HealthStatus::SERVING);
  EXPECT_EQ(Metric("consent_store_writes_refused"), 0);

  // The sync fails after the append: the objection is on disk, unacknowledged.
  fs_->FailWal(FaultFileSystem::WalFault::kSync);
  auto failed = Object(*once_, "alice", "form-1");
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(failed.status().message(), HasSubstr("the outcome of this write is unknown"));
  EXPECT_THAT(failed.status().message(), HasSubstr("a retry with the same request_id"));
  EXPECT_EQ(Health("consent.v1.ConsentRegistry"), HealthStatus::NOT_SERVING);
  EXPECT_EQ(Health(""), HealthStatus::SERVING);  // the process is alive; checks answer
  EXPECT_EQ(Metric("consent_store_writes_refused"), 1);
  EXPECT_EQ(Metric("consent_store_write_failures_total"), 1);
  // Checks answer from what was acknowledged.
  EXPECT_EQ(Reason("alice"), v1::DECISION_REASON_ALLOWED_DEFAULT);

  // The next write reopens the store, which finds the objection on disk
  // and answers the retry as its replay, with its revision. (The
  // client's own retries do the same: it retries UNAVAILABLE writes that
  // carry a request_id.)
  fs_->Heal();
  auto retry = Object(*client_, "alice", "form-1");
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->revision(), 2);
  EXPECT_EQ(retry->preference().state(), v1::PREFERENCE_STATE_OBJECTED);
  EXPECT_EQ(Reason("alice"), v1::DECISION_REASON_DENIED_OBJECTION);
  EXPECT_EQ(Health("consent.v1.ConsentRegistry"), HealthStatus::SERVING);
  EXPECT_EQ(Metric("consent_store_writes_refused"), 0);
  EXPECT_EQ(Metric("consent_store_reopens_total"), 1);
  auto next = Object(*once_, "bob", "form-2");
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->revision(), 3);
}

}  // namespace
}  // namespace consent
