#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "consent/v1/registry.pb.h"
#include "core/decision_engine.h"
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

TEST(EncodedDecisionsTest, NoDecisionsIsAnEmptyResponse) {
  EncodedDecisions encoded;
  encoded.Reserve(0, "v1");
  encoded.Finish(0);
  EXPECT_EQ(encoded.bytes(), "");
}

}  // namespace
}  // namespace consent
