// What one request can cost the real consentd: the receive limit, a bound
// on repeated fields, and errors that stay small however bad the request.
#include <chrono>
#include <memory>
#include <string>

#include "client/consent_client.h"
#include "consent/v1/registry.grpc.pb.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace consent {
namespace {

using ::consent::testing::ConsentdProcess;
using ::consent::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class LimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ConsentdProcess::Options options;
    options.data_dir = dir_.Sub("data");
    auto process = ConsentdProcess::Start(options);
    ASSERT_TRUE(process.ok()) << process.status();
    server_ = *std::move(process);
    stub_ = v1::ConsentRegistry::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }

  static v1::Content Post() {
    v1::Content content;
    content.set_content_id("p1");
    content.set_content_type(v1::CONTENT_TYPE_POST);
    content.set_visibility(v1::VISIBILITY_PUBLIC);
    return content;
  }

  grpc::Status Check(const v1::CheckRequest& request) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    v1::CheckResponse response;
    return stub_->Check(&context, request, &response);
  }

  // The BadRequest of an error's details.
  static google::rpc::BadRequest BadRequestOf(const grpc::Status& status) {
    google::rpc::Status details;
    google::rpc::BadRequest bad_request;
    EXPECT_TRUE(details.ParseFromString(status.error_details()));
    EXPECT_EQ(details.details_size(), 1);
    if (details.details_size() == 1) {
      EXPECT_TRUE(details.details(0).UnpackTo(&bad_request));
    }
    return bad_request;
  }

  TempDir dir_;
  std::unique_ptr<ConsentdProcess> server_;
  std::unique_ptr<v1::ConsentRegistry::Stub> stub_;
};

// A request over the receive limit (8 MiB by default) is refused by gRPC
// before it is parsed.
TEST_F(LimitsTest, RequestOverTheReceiveLimitIsRefused) {
  v1::CheckRequest request;
  request.set_purpose("ai_training");
  request.set_user_id("alice");
  *request.mutable_content() = Post();
  request.mutable_content()->set_content_id(std::string(100, 'c'));
  request.set_user_id(std::string(9 << 20, 'u'));
  const grpc::Status status = Check(request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
}

// 4,000,000 invalid sensitive categories (a 4 MB request): one violation,
// not four million, and no lasting memory. Before the bound, such a
// request took consentd from 30 MB to a 4.6 GB peak.
TEST_F(LimitsTest, RepeatedFieldsAreBoundedBeforeTheirItemsAreChecked) {
  const int64_t rss_before = testing::ResidentBytes(server_->pid());
  v1::CheckRequest request;
  request.set_purpose("ai_training");
  request.set_user_id("alice");
  *request.mutable_content() = Post();
  for (int i = 0; i < 4'000'000; ++i)
    request.mutable_content()->add_sensitive_categories(static_cast<v1::SensitiveCategory>(99));
  ASSERT_LT(request.ByteSizeLong(), size_t{8} << 20);
  const grpc::Status status = Check(request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(),
            "content.sensitive_categories: 4000000 categories; at most 9 (one of each) allowed");
  ASSERT_EQ(BadRequestOf(status).field_violations_size(), 1);
  const int64_t rss_after = testing::ResidentBytes(server_->pid());
  if (!testing::kAddressSanitizer) {
    EXPECT_LT(rss_after - rss_before, int64_t{200} << 20);
  }
  // Nine distinct categories are fine.
  request.mutable_content()->clear_sensitive_categories();
  for (int c = 1; c <= 9; ++c)
    request.mutable_content()->add_sensitive_categories(static_cast<v1::SensitiveCategory>(c));
  EXPECT_TRUE(Check(request).ok());
}

// A write batch of 10,000 bad items fails as a whole: the first
// violations, then "and N more"; the message and its details under 4 KiB
// together (gRPC's default limit for the trailers that carry them is 8 KiB).
TEST_F(LimitsTest, ManyViolationsAreCountedNotListed) {
  v1::BatchRecordNoticesRequest request;
  for (int i = 0; i < 10'000; ++i) {
    v1::RecordNoticeRequest* item = request.add_requests();
    item->set_user_id(std::string(200, 'u'));  // too long
    item->set_notice_id("privacy-2026");
    item->set_notice_version("1");
    item->add_purposes("ai_training");
    item->set_channel(v1::NOTICE_CHANNEL_EMAIL);
  }
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  v1::BatchRecordNoticesResponse response;
  const grpc::Status status = stub_->BatchRecordNotices(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              ::testing::StartsWith("requests[0].user_id: is 200 bytes; at most 128 allowed; "
                                    "requests[1].user_id: is 200 bytes"));
  const google::rpc::BadRequest bad_request = BadRequestOf(status);
  const int shown = bad_request.field_violations_size();
  EXPECT_GT(shown, 10);
  EXPECT_LE(shown, 100);
  EXPECT_THAT(status.error_message(),
              ::testing::EndsWith(absl::StrCat("; and ", 10'000 - shown, " more")));
  EXPECT_LT(status.error_message().size() + status.error_details().size(), 4096u);
}

// A check batch of 10,000 bad items: each item's answer names its own
// first bad field and counts the rest, and the whole response stays inside
// a client's default 4 MiB receive limit, even when every item has the
// longest description (a create_time ahead of the server's clock).
TEST_F(LimitsTest, EveryBadItemOfABatchGetsItsOwnBoundedError) {
  v1::BatchCheckRequest request;
  request.set_purpose("ai_training");
  for (int i = 0; i < 10'000; ++i) {
    v1::CheckItem* item = request.add_items();
    *item->mutable_content() = Post();
    if (i % 2 == 0) {
      item->set_user_id(std::string(200, 'u'));
      item->mutable_content()->set_content_type(v1::CONTENT_TYPE_UNSPECIFIED);
    } else {
      item->set_user_id(absl::StrCat("user-", i));
      item->mutable_content()->mutable_create_time()->set_seconds(4'102'444'800);  // 2100-01-01
    }
  }
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  v1::BatchCheckResponse response;
  const grpc::Status status = stub_->BatchCheck(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.decisions_size(), 10'000);
  // The odd items' errors are the longer: all 10,000 of them would be
  // twice the odd half's bytes.
  size_t odd_bytes = 0;
  for (int i = 1; i < 10'000; i += 2) odd_bytes += response.decisions(i).ByteSizeLong() + 3;
  EXPECT_LT(2 * odd_bytes, 4u << 20) << 2 * odd_bytes;
  for (int i : {0, 9'998, 9'999}) {
    const v1::Decision& decision = response.decisions(i);
    EXPECT_FALSE(decision.allowed());
    EXPECT_EQ(decision.reason(), v1::DECISION_REASON_UNSPECIFIED);
    EXPECT_EQ(decision.policy_version(), "");
    EXPECT_EQ(decision.error().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
    const std::string field =
        absl::StrCat("items[", i, "].", i % 2 == 0 ? "user_id" : "content.create_time");
    EXPECT_THAT(decision.error().message(), ::testing::StartsWith(absl::StrCat(field, ": is 2")));
    if (i % 2 == 0) {
      EXPECT_EQ(decision.error().message(),
                absl::StrCat(field, ": is 200 bytes; at most 128 allowed; and 1 more"));
    }
    ASSERT_EQ(decision.error().details_size(), 1);
    google::rpc::BadRequest bad_request;
    ASSERT_TRUE(decision.error().details(0).UnpackTo(&bad_request));
    ASSERT_EQ(bad_request.field_violations_size(), 1);
    EXPECT_EQ(bad_request.field_violations(0).field(), field);
  }
}

TEST_F(LimitsTest, UpdateMaskIsBounded) {
  v1::UpdateSubjectRequest request;
  request.set_user_id("alice");
  for (int i = 0; i < 500'000; ++i) request.mutable_update_mask()->add_paths("jurisdiction");
  grpc::ClientContext context;
  v1::UpdateSubjectResponse response;
  const grpc::Status status = stub_->UpdateSubject(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(),
            "update_mask.paths: 500000 paths; at most 3 (jurisdiction, birth_date, "
            "account_state) allowed");
}

TEST(LimitsFlagTest, ReceiveLimitOutOfRangeStopsStartUp) {
  TempDir dir;
  auto [code, err] = ConsentdProcess::RunToExit(
      {"--max_receive_message_bytes=100", "--data_dir=" + dir.Sub("data"), "--metrics_listen="});
  EXPECT_EQ(code, 1);
  EXPECT_THAT(err, HasSubstr("--max_receive_message_bytes must be between 4096 and 67108864"));
}

}  // namespace
}  // namespace consent
