// The randomized reference-model test (reference_model.h) against two
// consentd replicas in this process, sharing a command log in a real
// three-node NATS cluster and one fake clock: each write goes to either
// replica, and the decisions of both must agree with the model.
#include <memory>
#include <vector>

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

TEST(ReplicatedDecisionsTest, TwoReplicasAgreeWithTheReferenceModel) {
  auto nats = testing::NatsCluster::Start(3, 8 << 20);
  ASSERT_TRUE(nats.ok()) << nats.status();
  testing::TempDir dir;
  FakeClock clock(kStart);
  std::vector<std::unique_ptr<ConsentServer>> servers;
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < 2; ++i) {
    ServerOptions options = testing::InProcessOptions(dir.Sub(absl::StrCat("replica-", i)));
    options.replication.log.urls = (*nats)->urls();
    auto server = ConsentServer::Start(options, &clock);
    ASSERT_TRUE(server.ok()) << server.status();
    servers.push_back(*std::move(server));
    clients.push_back(Client::Connect(servers.back()->listen_address()));
  }
  testing::RunAgainstReferenceModel(clock, kStart, {clients[0].get(), clients[1].get()}, 3000,
                                    20261205);
  for (auto& server : servers) EXPECT_TRUE(server->Shutdown().ok());
}

}  // namespace
}  // namespace consent
