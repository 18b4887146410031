#include "core/validation.h"

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"
#include "server/errors.h"

namespace consent {
namespace {

using ::testing::HasSubstr;

struct IdCase {
  std::string id;
  std::string problem;  // "" when valid
};

class IdTest : public ::testing::TestWithParam<IdCase> {};

TEST_P(IdTest, Classifies) { EXPECT_EQ(IdProblem(GetParam().id), GetParam().problem); }

INSTANTIATE_TEST_SUITE_P(
    Ids, IdTest,
    ::testing::Values(IdCase{"alice", ""}, IdCase{std::string(128, 'x'), ""},
                      // The ends of printable ASCII: space and '~'.
                      IdCase{" a~", ""}, IdCase{"\x1f", "contains a control character"},
                      IdCase{"ünïcødé-用户", ""}, IdCase{"", "is required"},
                      IdCase{std::string(129, 'x'), "is 129 bytes; at most 128 allowed"},
                      IdCase{"tab\there", "contains a control character"},
                      IdCase{std::string("nul\0x", 5), "contains a control character"},
                      IdCase{"del\x7f", "contains a control character"},
                      IdCase{"bad\xff", "is not valid UTF-8 or contains a control character"},
                      // Overlong encoding of '/'.
                      IdCase{"\xc0\xaf", "is not valid UTF-8 or contains a control character"},
                      // U+0085 (NEL), a C1 control character.
                      IdCase{"a\xc2\x85", "is not valid UTF-8 or contains a control character"},
                      // A lone surrogate (U+D800).
                      IdCase{"\xed\xa0\x80", "is not valid UTF-8 or contains a control character"},
                      // Truncated sequence.
                      IdCase{"\xe2\x82", "is not valid UTF-8 or contains a control character"}));

struct PurposeCase {
  std::string purpose;
  bool valid;
};

class PurposeTest : public ::testing::TestWithParam<PurposeCase> {};

TEST_P(PurposeTest, Classifies) {
  EXPECT_EQ(PurposeProblem(GetParam().purpose).empty(), GetParam().valid) << GetParam().purpose;
}

INSTANTIATE_TEST_SUITE_P(
    Purposes, PurposeTest,
    ::testing::Values(PurposeCase{"ai_training", true}, PurposeCase{"ai_training.generative", true},
                      PurposeCase{"a.b_2.c3", true}, PurposeCase{std::string(64, 'a'), true},
                      PurposeCase{std::string(65, 'a'), false}, PurposeCase{"", false},
                      PurposeCase{"AI_training", false}, PurposeCase{"ai-training", false},
                      PurposeCase{".ai", false}, PurposeCase{"ai.", false},
                      PurposeCase{"ai..x", false}, PurposeCase{"ai training", false}));

TEST(ValidationTest, Jurisdictions) {
  EXPECT_EQ(JurisdictionProblem("GB"), "");
  EXPECT_EQ(JurisdictionProblem("US-CA"), "");
  EXPECT_EQ(JurisdictionProblem("FR-75C"), "");
  for (const char* bad : {"gb", "G", "GBR", "US-", "US-CALI", "US_CA", ""}) {
    EXPECT_EQ(JurisdictionProblem(bad), "must be an ISO 3166 code such as GB or US-CA") << bad;
  }
}

TEST(ValidationTest, Dates) {
  v1::Date date;
  date.set_year(2000);
  date.set_month(2);
  date.set_day(29);
  EXPECT_EQ(DateProblem(date), "");
  date.set_year(1900);
  EXPECT_EQ(DateProblem(date), "is not a calendar date");
  date.set_month(13);
  date.set_day(1);
  EXPECT_EQ(DateProblem(date), "is not a calendar date");
  date.set_year(1899);
  date.set_month(1);
  EXPECT_EQ(DateProblem(date), "year must be 1900 to 9999");
}

TEST(ValidationTest, ContentNamesEachBadField) {
  v1::Content content;
  content.add_sensitive_categories(v1::SENSITIVE_CATEGORY_HEALTH);
  content.add_sensitive_categories(static_cast<v1::SensitiveCategory>(99));
  Violations v;
  int named = 0;  // the name is built only for violations
  ValidateContent(
      content,
      [&named] {
        ++named;
        return std::string("items[7].content");
      },
      &v);
  EXPECT_EQ(named, 4);
  Violations none;
  content.set_content_id("post-1");
  content.set_content_type(v1::CONTENT_TYPE_POST);
  content.set_visibility(v1::VISIBILITY_PUBLIC);
  content.clear_sensitive_categories();
  ValidateContent(
      content,
      [&named] {
        ++named;
        return std::string("content");
      },
      &none);
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(named, 4);
  absl::Status status = v.ToStatus();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "items[7].content.content_id: is required; "
            "items[7].content.content_type: is required; "
            "items[7].content.visibility: is required; "
            "items[7].content.sensitive_categories[1]: is not a known sensitive category");
}

TEST(ValidationTest, StatusCarriesBadRequestThroughToGrpc) {
  absl::Status status = FieldError("user_id", "is required");
  grpc::Status grpc_status = ToGrpcStatus(status);
  EXPECT_EQ(grpc_status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(grpc_status.error_message(), "user_id: is required");
  google::rpc::Status details;
  ASSERT_TRUE(details.ParseFromString(grpc_status.error_details()));
  ASSERT_EQ(details.details_size(), 1);
  EXPECT_EQ(details.details(0).type_url(), "type.googleapis.com/google.rpc.BadRequest");
  google::rpc::BadRequest bad_request;
  ASSERT_TRUE(details.details(0).UnpackTo(&bad_request));
  ASSERT_EQ(bad_request.field_violations_size(), 1);
  EXPECT_EQ(bad_request.field_violations(0).field(), "user_id");
  EXPECT_EQ(bad_request.field_violations(0).description(), "is required");
}

// However many violations and however long their text, the error stays
// under kMaxErrorBytes on the wire and says how many it left out.
TEST(ValidationTest, ErrorsAreBoundedWhateverTheRequest) {
  Violations v;
  for (int i = 0; i < 1'000'000; ++i) {
    v.Add(absl::StrCat("items[", i, "].user_id"), "is required");
  }
  grpc::Status status = ToGrpcStatus(v.ToStatus());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  google::rpc::Status details;
  ASSERT_TRUE(details.ParseFromString(status.error_details()));
  google::rpc::BadRequest bad_request;
  ASSERT_TRUE(details.details(0).UnpackTo(&bad_request));
  const int shown = bad_request.field_violations_size();
  EXPECT_GT(shown, 20);
  EXPECT_LE(shown, static_cast<int>(kMaxReportedViolations));
  EXPECT_THAT(status.error_message(),
              ::testing::EndsWith(absl::StrCat("; and ", 1'000'000 - shown, " more")));
  EXPECT_LT(status.error_message().size() + status.error_details().size(), kMaxErrorBytes);

  // One violation with a 1 MB field name and description: cut, marked.
  Violations huge;
  huge.Add(std::string(1 << 20, 'f'), std::string(1 << 20, 'd'));
  status = ToGrpcStatus(huge.ToStatus());
  EXPECT_EQ(status.error_message(),
            std::string(157, 'f') + "...: " + std::string(317, 'd') + "...");
  EXPECT_LT(status.error_message().size() + status.error_details().size(), kMaxErrorBytes);
}

TEST(ValidationTest, StatusWithoutDetailsMapsCodeAndMessage) {
  grpc::Status s = ToGrpcStatus(absl::AbortedError("stale"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(s.error_message(), "stale");
  EXPECT_TRUE(s.error_details().empty());
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

}  // namespace
}  // namespace consent
