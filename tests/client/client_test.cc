// Client behaviour that needs no server: retries and fail-closed answers
// against an address where nothing listens.
#include <string>

#include "client/consent_client.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace consent {
namespace {

// A loopback port with nothing listening.
std::string DeadTarget() {
  return "127.0.0.1:" + std::to_string(testing::FreeLoopbackPort().value());
}

struct Recorder {
  std::vector<absl::Duration> sleeps;
  ClientOptions Options() {
    ClientOptions options;
    options.timeout = absl::Seconds(5);
    options.max_attempts = 4;
    options.initial_backoff = absl::Milliseconds(100);
    options.max_backoff = absl::Milliseconds(250);
    options.sleep = [this](absl::Duration d) { sleeps.push_back(d); };
    return options;
  }
};

v1::CheckRequest ACheck() {
  v1::CheckRequest request;
  request.set_purpose("ai_training");
  request.set_user_id("alice");
  request.mutable_content()->set_content_id("p1");
  request.mutable_content()->set_content_type(v1::CONTENT_TYPE_POST);
  request.mutable_content()->set_visibility(v1::VISIBILITY_PUBLIC);
  return request;
}

TEST(ClientTest, ReadsRetryWithGrowingCappedBackoff) {
  Recorder recorder;
  auto client = Client::Connect(DeadTarget(), recorder.Options());
  auto response = client->Check(ACheck());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kUnavailable);
  ASSERT_EQ(recorder.sleeps.size(), 3u);
  // 100 ms, 200 ms, then capped at 250 ms; each with +-20% jitter.
  const double want_ms[] = {100, 200, 250};
  for (int i = 0; i < 3; ++i) {
    const double ms = absl::ToDoubleMilliseconds(recorder.sleeps[i]);
    EXPECT_GE(ms, want_ms[i] * 0.8) << i;
    EXPECT_LE(ms, want_ms[i] * 1.2) << i;
  }
}

TEST(ClientTest, WritesWithoutRequestIdAreTriedOnce) {
  Recorder recorder;
  auto client = Client::Connect(DeadTarget(), recorder.Options());
  v1::SetPreferenceRequest request;
  request.set_user_id("alice");
  request.set_purpose("ai_training");
  request.set_state(v1::PREFERENCE_STATE_OBJECTED);
  EXPECT_EQ(client->SetPreference(request).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(recorder.sleeps.empty());
  request.set_request_id("req-1");
  EXPECT_EQ(client->SetPreference(request).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(recorder.sleeps.size(), 3u);
}

TEST(ClientTest, IsAllowedFailsClosed) {
  Recorder recorder;
  auto client = Client::Connect(DeadTarget(), recorder.Options());
  absl::Status error;
  v1::Decision decision;
  EXPECT_FALSE(client->IsAllowed(ACheck(), &decision, &error));
  EXPECT_EQ(error.code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(decision.allowed());
}

TEST(ClientTest, FromGrpcStatusKeepsBadRequestDetails) {
  google::rpc::BadRequest bad_request;
  auto* v = bad_request.add_field_violations();
  v->set_field("user_id");
  v->set_description("is required");
  google::rpc::Status details;
  details.set_code(3);
  details.add_details()->PackFrom(bad_request);
  absl::Status status = FromGrpcStatus(grpc::Status(
      grpc::StatusCode::INVALID_ARGUMENT, "user_id: is required", details.SerializeAsString()));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "user_id: is required");
  EXPECT_THAT(FieldViolations(status), ::testing::ElementsAre("user_id: is required"));
}

}  // namespace
}  // namespace consent
