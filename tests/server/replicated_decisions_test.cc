// The randomized reference-model test (reference_model.h) against two
// consentd replicas in this process, sharing a command log in a real
// three-node NATS cluster and one fake clock: each write goes to either
// replica, and the decisions of both must agree with the model.
#include <algorithm>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/consent_client.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/fake_clock.h"
#include "tests/in_process_server.h"
#include "tests/nats_cluster.h"
#include "tests/server/reference_model.h"
#include "tests/test_util.h"

namespace consent {
namespace {

const absl::Time kStart =
    absl::FromCivil(absl::CivilSecond(2026, 1, 1, 0, 0, 0), absl::UTCTimeZone());

// Two replicas in this process over a real three-node NATS cluster.
struct TwoReplicas {
  std::unique_ptr<testing::NatsCluster> nats;
  testing::TempDir dir;
  std::vector<std::unique_ptr<ConsentServer>> servers;
  std::vector<std::unique_ptr<Client>> clients;

  void Start(const Clock* clock) {
    auto cluster = testing::NatsCluster::Start(3, 8 << 20);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    nats = *std::move(cluster);
    for (int i = 0; i < 2; ++i) {
      ServerOptions options = testing::InProcessOptions(dir.Sub(absl::StrCat("replica-", i)));
      options.replication.log.urls = nats->urls();
      // Events reads the feed until its first checkpoint.
      options.watch_checkpoint_interval = absl::Milliseconds(100);
      auto server = ConsentServer::Start(options, clock);
      ASSERT_TRUE(server.ok()) << server.status();
      servers.push_back(*std::move(server));
      clients.push_back(Client::Connect(servers.back()->listen_address()));
    }
  }
  // Every change event replica `i` holds, oldest first, as bytes.
  std::vector<std::string> Events(int i) {
    std::vector<std::string> events;
    v1::WatchChangesRequest request;
    request.set_start_revision(1);
    absl::Status s = clients[i]->Watch(request, [&](const v1::WatchChangesResponse& message) {
      if (message.has_checkpoint()) return false;
      events.push_back(message.event().SerializeAsString());
      return true;
    });
    EXPECT_TRUE(s.ok()) << s;
    return events;
  }
  ~TwoReplicas() {
    for (auto& server : servers) EXPECT_TRUE(server->Shutdown().ok());
  }
};

TEST(ReplicatedDecisionsTest, TwoReplicasAgreeWithTheReferenceModel) {
  FakeClock clock(kStart);
  TwoReplicas replicas;
  ASSERT_NO_FATAL_FAILURE(replicas.Start(&clock));
  testing::RunAgainstReferenceModel(
      clock, kStart, {replicas.clients[0].get(), replicas.clients[1].get()}, 3000, 20261205);
}

// An import on one replica while the other takes writes for the same
// users: the import's steps and the writes interleave in the log, and
// both replicas apply them alike (also run under ThreadSanitizer).
TEST(ReplicatedDecisionsTest, AnImportAndWritesOnTwoReplicasApplyAlike) {
  FakeClock clock(kStart);
  TwoReplicas replicas;
  ASSERT_NO_FATAL_FAILURE(replicas.Start(&clock));
  constexpr int kRecords = 3000;
  constexpr int kWrites = 200;
  int64_t last_write = 0;
  std::thread writer([&] {
    for (int i = 0; i < kWrites; ++i) {
      auto written = replicas.clients[1]->SetPreference(testing::PreferenceOf(
          absl::StrCat("user-", i * 15), v1::PREFERENCE_STATE_CONSENTED, "ai_training"));
      ASSERT_TRUE(written.ok()) << written.status();
      last_write = written->revision();
    }
  });
  int sent = 0;
  auto imported =
      replicas.clients[0]->ImportSubjects("load", [&](v1::ImportSubjectsRequest* message) {
        for (int n = sent * 1000; n < (sent + 1) * 1000; ++n) {
          v1::ImportRecord* record = message->add_records();
          record->set_offset(n + 1);
          record->set_user_id(absl::StrCat("user-", n));
          record->set_jurisdiction("GB");
          record->mutable_birth_date()->set_year(1990);
          record->mutable_birth_date()->set_month(1);
          record->mutable_birth_date()->set_day(1);
          v1::ImportedPreference* preference = record->add_preferences();
          preference->set_purpose("ai_training");
          preference->set_state(v1::PREFERENCE_STATE_OBJECTED);
        }
        return ++sent < kRecords / 1000;
      });
  writer.join();
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->imported(), kRecords);
  EXPECT_EQ(imported->acknowledged_offset(), kRecords);
  const int64_t last = std::max(imported->revision(), last_write);
  EXPECT_EQ(last, 2 * kRecords + kWrites);
  for (int i : {0, 1}) {
    v1::CheckRequest check = testing::PublicPostCheck("user-0");
    check.set_min_revision(last);
    ASSERT_TRUE(replicas.clients[i]->Check(check).ok());
  }
  const std::vector<std::string> events = replicas.Events(0);
  EXPECT_EQ(events.size(), static_cast<size_t>(last));
  EXPECT_EQ(replicas.Events(1), events);
}

}  // namespace
}  // namespace consent
