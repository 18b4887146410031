#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "consent/v1/registry.pb.h"
#include "core/decision_engine.h"
#include "core/validation.h"
#include "google/protobuf/descriptor.h"
#include "google/rpc/error_details.pb.h"
#include "gtest/gtest.h"
#include "server/registry.h"
#include "server/wire.h"

namespace consent {
namespace {

// EncodedDecisions writes exactly the bytes protobuf writes for the same
// decisions: every reason (and numbers no reason has), revisions around
// each varint length, policy versions empty, short and longer than 127
// bytes (a two-byte length), and the response's revision after them.
TEST(EncodedDecisionsTest, WritesWhatProtobufWrites) {
  std::vector<int> reasons;
  for (int r = 0; r <= v1::DecisionReason_MAX; ++r) reasons.push_back(r);
  reasons.push_back(v1::DecisionReason_MAX + 1);
  reasons.push_back(300);
  const std::vector<int64_t> revisions = {
      0, 1, 127, 128, 16'383, 16'384, int64_t{1} << 40, std::numeric_limits<int64_t>::max()};
  const std::vector<std::string> versions = {"", "2026-11-27", std::string(200, 'v')};
  for (const std::string& version : versions) {
    for (int64_t response_revision : revisions) {
      EncodedDecisions encoded;
      v1::BatchCheckResponse expected;
      std::vector<int64_t> tally(v1::DecisionReason_ARRAYSIZE, 0);
      encoded.Reserve(static_cast<int>(reasons.size() * revisions.size()), version);
      for (int reason : reasons) {
        for (int64_t revision : revisions) {
          const auto r = static_cast<v1::DecisionReason>(reason);
          encoded.Add(Verdict{r, 0}, revision);
          v1::Decision* d = expected.add_decisions();
          d->set_allowed(IsAllowed(r));
          d->set_reason(r);
          d->set_policy_version(version);
          d->set_revision(revision);
          if (reason < v1::DecisionReason_ARRAYSIZE) ++tally[reason];
        }
      }
      encoded.Finish(response_revision);
      expected.set_revision(response_revision);
      EXPECT_EQ(encoded.bytes(), expected.SerializeAsString())
          << "version " << version << ", revision " << response_revision;
      // And protobuf reads them back as the same decisions.
      v1::BatchCheckResponse parsed;
      ASSERT_TRUE(parsed.ParseFromString(encoded.bytes()));
      EXPECT_EQ(parsed.SerializeAsString(), expected.SerializeAsString());
      EXPECT_EQ(std::vector<int64_t>(encoded.tally().begin(), encoded.tally().end()), tally);
    }
  }
}

// An invalid item's answer, between decisions: a Decision holding only
// its error, as protobuf writes it, counted at index 0 of the tally.
TEST(EncodedDecisionsTest, AnInvalidItemIsADecisionHoldingOnlyItsError) {
  Violations problems;
  problems.Add("items[1].user_id", "is required");
  const absl::Status problem = problems.ToStatus(/*max_shown=*/1);
  EncodedDecisions encoded;
  encoded.Reserve(3, "v1");
  encoded.Add(Verdict{v1::DECISION_REASON_ALLOWED_DEFAULT, 0}, 7);
  encoded.AddInvalid(problem);
  encoded.Add(Verdict{v1::DECISION_REASON_DENIED_OBJECTION, 0}, 9);
  encoded.Finish(9);

  v1::BatchCheckResponse expected;
  for (auto [reason, revision] : {std::pair{v1::DECISION_REASON_ALLOWED_DEFAULT, 7},
                                  std::pair{v1::DECISION_REASON_UNSPECIFIED, 0},
                                  std::pair{v1::DECISION_REASON_DENIED_OBJECTION, 9}}) {
    v1::Decision* d = expected.add_decisions();
    if (reason == v1::DECISION_REASON_UNSPECIFIED) continue;
    d->set_allowed(IsAllowed(reason));
    d->set_reason(reason);
    d->set_policy_version("v1");
    d->set_revision(revision);
  }
  google::rpc::Status* error = expected.mutable_decisions(1)->mutable_error();
  error->set_code(3);  // INVALID_ARGUMENT
  error->set_message("items[1].user_id: is required");
  google::rpc::BadRequest bad_request;
  auto* violation = bad_request.add_field_violations();
  violation->set_field("items[1].user_id");
  violation->set_description("is required");
  error->add_details()->PackFrom(bad_request);
  expected.set_revision(9);
  EXPECT_EQ(encoded.bytes(), expected.SerializeAsString());
  EXPECT_EQ(encoded.tally()[v1::DECISION_REASON_UNSPECIFIED], 1);
  EXPECT_EQ(encoded.tally()[v1::DECISION_REASON_ALLOWED_DEFAULT], 1);
}

TEST(EncodedDecisionsTest, NoDecisionsIsAnEmptyResponse) {
  EncodedDecisions encoded;
  encoded.Reserve(0, "v1");
  encoded.Finish(0);
  EXPECT_EQ(encoded.bytes(), "");
}

// A field's wire identity: what a parser reads and a writer writes.
std::vector<std::string> WireFields(const google::protobuf::Descriptor* message) {
  std::vector<std::string> fields;
  for (int i = 0; i < message->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* f = message->field(i);
    fields.push_back(absl::StrCat(f->number(), " ", f->name(), " ", f->type_name(), " ",
                                  f->is_repeated() ? "repeated" : "single", " ",
                                  f->message_type() ? f->message_type()->full_name() : ""));
  }
  return fields;
}

// StreamCheck parses each message as a BatchCheckRequest and answers with
// EncodedDecisions' bytes (wire.h, RawCheckStream): the stream's messages
// must stay the batch's, field for field.
TEST(EncodedDecisionsTest, StreamCheckMessagesAreBatchCheckMessages) {
  EXPECT_EQ(WireFields(v1::StreamCheckRequest::descriptor()),
            WireFields(v1::BatchCheckRequest::descriptor()));
  EXPECT_EQ(WireFields(v1::StreamCheckResponse::descriptor()),
            WireFields(v1::BatchCheckResponse::descriptor()));
  EXPECT_EQ(WireFields(v1::StreamCheckRequest::descriptor()).size(), 4u);
}

}  // namespace
}  // namespace consent
