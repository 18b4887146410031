// Replication end to end: a real three-node NATS cluster with JetStream and
// consentd replicas (the real binary, --replication=jetstream) on loopback,
// each with its own data directory.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/consent_client.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "gtest/gtest.h"
#include "tests/nats_cluster.h"
#include "tests/test_util.h"

namespace consent {
namespace {

using ::consent::testing::ConsentdProcess;
using ::consent::testing::NatsCluster;
using ::consent::testing::TempDir;
using ::testing::HasSubstr;

constexpr int64_t kMaxPayload = 8 << 20;

class ReplicationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto cluster = NatsCluster::Start(3, kMaxPayload);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    nats_ = *std::move(cluster);
  }

  // Starts replica `i` (again, after a stop) on its own data directory.
  void StartReplica(size_t i, std::vector<std::string> extra = {}) {
    if (replicas_.size() <= i) {
      replicas_.resize(i + 1);
      clients_.resize(i + 1);
    }
    ConsentdProcess::Options options;
    options.data_dir = dir_.Sub(absl::StrCat("replica-", i));
    options.extra_args = {"--replication=jetstream",
                          "--nats_url=" + absl::StrJoin(nats_->urls(), ","),
                          "--min_revision_wait=300ms"};
    options.extra_args.insert(options.extra_args.end(), extra.begin(), extra.end());
    auto process = ConsentdProcess::Start(options);
    ASSERT_TRUE(process.ok()) << process.status();
    replicas_[i] = *std::move(process);
    ClientOptions client_options;
    client_options.timeout = absl::Seconds(20);
    clients_[i] = Client::Connect(replicas_[i]->address(), client_options);
  }

  Client& client(size_t i) { return *clients_[i]; }

  // Every change event replica `i` holds, oldest first, as bytes.
  std::vector<std::string> AllEvents(size_t i) {
    std::vector<std::string> events;
    v1::WatchChangesRequest request;
    request.set_start_revision(1);
    absl::Status s = client(i).Watch(request, [&](const v1::WatchChangesResponse& message) {
      if (message.has_checkpoint()) return false;  // caught up
      events.push_back(message.event().SerializeAsString());
      return true;
    });
    EXPECT_TRUE(s.ok()) << s;
    return events;
  }

  TempDir dir_;
  std::unique_ptr<NatsCluster> nats_;
  std::vector<std::unique_ptr<ConsentdProcess>> replicas_;
  std::vector<std::unique_ptr<Client>> clients_;
};

TEST_F(ReplicationTest, AWriteOnOneReplicaIsReadOnTheOtherWithMinRevision) {
  StartReplica(0);
  StartReplica(1);
  auto adult = client(0).UpdateSubject(testing::UkAdult("alice"));
  ASSERT_TRUE(adult.ok()) << adult.status();
  auto objected =
      client(0).SetPreference(testing::PreferenceOf("alice", v1::PREFERENCE_STATE_OBJECTED));
  ASSERT_TRUE(objected.ok()) << objected.status();
  EXPECT_EQ(objected->revision(), adult->revision() + 1);
  EXPECT_EQ(objected->preference().state(), v1::PREFERENCE_STATE_OBJECTED);

  // On the other replica, a read that names the write's revision sees it.
  v1::CheckRequest check = testing::PublicPostCheck("alice");
  check.set_min_revision(objected->revision());
  auto decision = client(1).Check(check);
  ASSERT_TRUE(decision.ok()) << decision.status();
  EXPECT_FALSE(decision->decision().allowed());
  EXPECT_EQ(decision->decision().reason(), v1::DECISION_REASON_DENIED_OBJECTION);
  EXPECT_GE(decision->decision().revision(), objected->revision());

  // A revision no replica has reached: UNAVAILABLE after the wait, never a
  // stale answer.
  check.set_min_revision(objected->revision() + 1000);
  auto ahead = client(1).Check(check);
  EXPECT_EQ(ahead.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(ahead.status().message(),
              HasSubstr(absl::StrCat("min_revision ", objected->revision() + 1000,
                                     " is ahead of this replica's revision")));

  // The write rules hold across replicas: a stale expected_revision is
  // ABORTED, a request id replayed elsewhere answers the first result.
  v1::SetPreferenceRequest stale =
      testing::PreferenceOf("alice", v1::PREFERENCE_STATE_CONSENTED);
  stale.set_expected_revision(adult->revision());
  EXPECT_EQ(client(1).SetPreference(stale).status().code(), absl::StatusCode::kAborted);
  v1::SetPreferenceRequest form = testing::PreferenceOf("bob", v1::PREFERENCE_STATE_OBJECTED);
  form.set_request_id("form-1");
  auto first = client(0).SetPreference(form);
  ASSERT_TRUE(first.ok()) << first.status();
  auto replay = client(1).SetPreference(form);
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_EQ(replay->revision(), first->revision());
  EXPECT_EQ(replay->preference().SerializeAsString(), first->preference().SerializeAsString());
  form.set_purpose("ai_training.generative");  // the same id for another request
  auto conflict = client(1).SetPreference(form);
  EXPECT_EQ(conflict.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(conflict.status().message(), HasSubstr("request_id"));

  // Both replicas hold the same records and the same history, byte for byte.
  for (size_t i : {0, 1}) {
    v1::CheckRequest latest = testing::PublicPostCheck("bob");
    latest.set_min_revision(first->revision());
    ASSERT_TRUE(client(i).Check(latest).ok());
  }
  v1::GetSubjectRequest get;
  get.set_user_id("alice");
  auto on_0 = client(0).GetSubject(get);
  auto on_1 = client(1).GetSubject(get);
  ASSERT_TRUE(on_0.ok() && on_1.ok());
  EXPECT_EQ(on_0->subject().SerializeAsString(), on_1->subject().SerializeAsString());
  const std::vector<std::string> events = AllEvents(0);
  EXPECT_EQ(events.size(), 3u);  // alice's two writes and bob's one
  EXPECT_EQ(AllEvents(1), events);
  for (size_t i : {0, 1}) {
    auto verified = client(i).VerifyAuditLog(v1::VerifyAuditLogRequest());
    ASSERT_TRUE(verified.ok()) << verified.status();
    EXPECT_TRUE(verified->ok()) << verified->detail();
    EXPECT_EQ(verified->verified_count(), 3);
  }
}

}  // namespace
}  // namespace consent
