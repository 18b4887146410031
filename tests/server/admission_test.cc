// What many calls together may cost a real consentd server (in-process, on
// loopback, real RocksDB): open streams, a watcher that reads nothing,
// batches whose caller gave up, a full commit queue, a full worker queue.
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "client/consent_client.h"
#include "consent/v1/registry.grpc.pb.h"
#include "core/policy.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "server/registry.h"
#include "server/server.h"
#include "server/wire.h"
#include "storage/consent_store.h"
#include "tests/fake_clock.h"
#include "tests/in_process_server.h"
#include "tests/test_util.h"

namespace consent {
namespace {

using ::consent::testing::TempDir;
using ::testing::HasSubstr;

const absl::Time kStart = absl::FromUnixSeconds(1'780'000'000);

class AdmissionTest : public ::testing::Test {
 protected:
  // `options` (the admission limits under test) started in process.
  void Start(ServerOptions options) {
    const ServerOptions in_process = testing::InProcessOptions(dir_.Sub("data"));
    options.listen = in_process.listen;
    options.data_dir = in_process.data_dir;
    options.policy_path = in_process.policy_path;
    options.metrics_listen = "127.0.0.1:0";
    auto server = ConsentServer::Start(options, &clock_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(server_->listen_address(), grpc::InsecureChannelCredentials());
    stub_ = v1::ConsentRegistry::NewStub(channel_);
    client_ = Client::Connect(server_->listen_address());
  }

  double Rejected(const std::string& reason) {
    auto body = testing::HttpGet(server_->metrics_address(), "/metrics");
    if (!body.ok()) return -1;
    auto value = testing::SampleValue(
        *body, absl::StrCat("consent_rejected_total{reason=\"", reason, "\"}"));
    return value.ok() ? *value : -1;
  }

  TempDir dir_;
  FakeClock clock_{kStart};
  std::unique_ptr<ConsentServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ConsentRegistry::Stub> stub_;
  std::unique_ptr<Client> client_;
};

TEST_F(AdmissionTest, StreamsBeyondTheLimitAreRefused) {
  ServerOptions options;
  options.max_streams = 2;
  Start(options);
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<
      std::unique_ptr<grpc::ClientReaderWriter<v1::StreamCheckRequest, v1::StreamCheckResponse>>>
      streams;
  v1::StreamCheckRequest request;
  request.set_purpose("ai_training");
  v1::CheckItem* item = request.add_items();
  item->set_user_id("alice");
  item->mutable_content()->set_content_id("p1");
  item->mutable_content()->set_content_type(v1::CONTENT_TYPE_POST);
  item->mutable_content()->set_visibility(v1::VISIBILITY_PUBLIC);
  for (int i = 0; i < 2; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    streams.push_back(stub_->StreamCheck(contexts.back().get()));
    ASSERT_TRUE(streams.back()->Write(request));
    v1::StreamCheckResponse response;
    ASSERT_TRUE(streams.back()->Read(&response));  // open and served
  }
  // The third: refused at once, whether a StreamCheck or a WatchChanges.
  grpc::ClientContext third;
  auto refused = stub_->StreamCheck(&third);
  refused->WritesDone();
  v1::StreamCheckResponse response;
  EXPECT_FALSE(refused->Read(&response));
  grpc::Status status = refused->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(status.error_message(),
            "2 StreamCheck and WatchChanges streams are open already (--max_streams); retry "
            "later, or use BatchCheck");
  grpc::ClientContext watch_context;
  v1::WatchChangesRequest watch;
  auto watcher = stub_->WatchChanges(&watch_context, watch);
  v1::WatchChangesResponse event;
  EXPECT_FALSE(watcher->Read(&event));
  EXPECT_EQ(watcher->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(Rejected("streams"), 2);
  // One closes: a new one is admitted.
  streams[0]->WritesDone();
  EXPECT_TRUE(streams[0]->Finish().ok());
  grpc::ClientContext fourth;
  auto admitted = stub_->StreamCheck(&fourth);
  ASSERT_TRUE(admitted->Write(request));
  EXPECT_TRUE(admitted->Read(&response));
  admitted->WritesDone();
  EXPECT_TRUE(admitted->Finish().ok());
  streams[1]->WritesDone();
  EXPECT_TRUE(streams[1]->Finish().ok());
}

// A watcher that reads nothing while events pile up is ended once its
// blocked write has waited --watch_idle_timeout (on the injected clock).
TEST_F(AdmissionTest, AWatcherThatReadsNothingIsEnded) {
  ServerOptions options;
  options.watch_idle_timeout = absl::Seconds(60);
  Start(options);
  grpc::ClientContext context;
  v1::WatchChangesRequest request;
  request.set_start_revision(1);
  auto reader = stub_->WatchChanges(&context, request);
  // Enough events to fill the flow-control windows of an idle reader.
  for (int batch = 0; batch < 40; ++batch) {
    v1::BatchSetPreferencesRequest writes;
    for (int i = 0; i < 1000; ++i) {
      v1::SetPreferenceRequest* item = writes.add_requests();
      item->set_user_id(absl::StrCat("user-", batch, "-", i));
      item->set_purpose("ai_training");
      item->set_state(v1::PREFERENCE_STATE_OBJECTED);
      item->mutable_source()->set_channel(std::string(200, 'c'));
    }
    ASSERT_TRUE(client_->BatchSetPreferences(writes).ok());
  }
  EXPECT_EQ(Rejected("idle_watcher"), 0);
  clock_.Advance(absl::Seconds(61));
  // The watchdog looks every second at most.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (Rejected("idle_watcher") < 1 && absl::Now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(Rejected("idle_watcher"), 1);
  // The stream is over: whatever was delivered can be read, then it ends.
  v1::WatchChangesResponse message;
  int read = 0;
  while (reader->Read(&message)) ++read;
  EXPECT_LT(read, 40'000);
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

// A connection with no call for max_connection_idle is closed by the
// server (GOAWAY): the client's channel leaves READY, and reconnects on
// its next call. (gRPC's own timer: real time, 300 ms here.)
TEST_F(AdmissionTest, IdleConnectionsAreClosed) {
  ServerOptions options;
  options.max_connection_idle = absl::Milliseconds(300);
  Start(options);
  v1::GetSubjectRequest get;
  get.set_user_id("nobody");
  EXPECT_EQ(client_->GetSubject(get).status().code(), absl::StatusCode::kNotFound);
  auto channel = grpc::CreateChannel(server_->listen_address(), grpc::InsecureChannelCredentials());
  ASSERT_TRUE(
      channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10)));
  ASSERT_EQ(channel->GetState(false), GRPC_CHANNEL_READY);
  EXPECT_TRUE(channel->WaitForStateChange(
      GRPC_CHANNEL_READY, std::chrono::system_clock::now() + std::chrono::seconds(10)));
  EXPECT_NE(channel->GetState(false), GRPC_CHANNEL_READY);
  EXPECT_EQ(client_->GetSubject(get).status().code(), absl::StatusCode::kNotFound);
}

// The registry's batch checks stop when the caller gives up.
class GiveUpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    storage::StoreOptions options;
    options.data_dir = dir_.Sub("data");
    auto store = storage::ConsentStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    registry_ = std::make_unique<Registry>(store_.get(), &policies_, &clock_);
    auto policy = CompiledPolicy::FromFile(testing::DefaultPolicyPath());
    ASSERT_TRUE(policy.ok());
    ASSERT_TRUE(registry_->Init(*policy).ok());
    const CallContext caller{"test"};  // outlives each write
    for (int i = 0; i < 10; ++i) {
      v1::SetPreferenceRequest r;
      r.set_user_id(absl::StrCat("user-", i));
      r.set_purpose("ai_training");
      r.set_state(v1::PREFERENCE_STATE_OBJECTED);
      v1::SetPreferenceResponse response;
      ASSERT_TRUE(Registry::AwaitWrite([&](Registry::WriteDone done) {
                    registry_->SetPreference(r, caller, &response, std::move(done));
                  }).ok());
    }
    clock_.Advance(absl::Minutes(1));
  }

  v1::BatchCheckRequest Batch(int items, bool as_of) {
    v1::BatchCheckRequest batch;
    batch.set_purpose("ai_training");
    if (as_of) batch.mutable_as_of()->set_seconds(absl::ToUnixSeconds(clock_.Now()));
    for (int i = 0; i < items; ++i) {
      v1::CheckItem* item = batch.add_items();
      item->set_user_id(absl::StrCat("user-", i % 10));
      item->mutable_content()->set_content_id("p1");
      item->mutable_content()->set_content_type(v1::CONTENT_TYPE_POST);
      item->mutable_content()->set_visibility(v1::VISIBILITY_PUBLIC);
    }
    return batch;
  }

  TempDir dir_;
  FakeClock clock_{kStart};
  std::unique_ptr<storage::ConsentStore> store_;
  PolicyHolder policies_;
  std::unique_ptr<Registry> registry_;
};

TEST_F(GiveUpTest, ABatchStopsOnceItsDeadlinePassesOrItIsCancelled) {
  // The batch's decisions so far, decoded from the bytes BatchCheck writes.
  v1::BatchCheckResponse response;
  auto batch_check = [this, &response](bool as_of, const CallControl& control) {
    EncodedDecisions encoded;
    absl::Status status = registry_->BatchCheck(Batch(10'000, as_of), &encoded, control);
    response.Clear();
    EXPECT_TRUE(response.ParseFromString(encoded.bytes()));
    return status;
  };
  for (bool as_of : {false, true}) {
    CallControl past;
    past.deadline = absl::Now() - absl::Seconds(1);
    absl::Status status = batch_check(as_of, past);
    EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << as_of;
    EXPECT_THAT(status.message(), HasSubstr("the call's deadline passed"));
    // Cancelled at the fourth look: the batch stops there.
    int asked = 0;
    CallControl cancelled;
    cancelled.cancelled = [&asked] { return ++asked > 3; };
    status = batch_check(as_of, cancelled);
    if (as_of) {
      // Ten users: folded once each, so asked ten times at most, never past 3.
      EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
    } else {
      EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
      EXPECT_EQ(asked, 4);  // items 255, 511, 767 passed; 1023 stopped it
    }
    EXPECT_LT(response.decisions_size(), 10'000);  // incomplete: the call fails, nothing is sent
    // A caller that has not given up gets every decision.
    EXPECT_TRUE(batch_check(as_of, CallControl{}).ok());
    EXPECT_EQ(response.decisions_size(), 10'000);
  }
}

// The store's commit queue is bounded: past it a write is refused at once,
// RESOURCE_EXHAUSTED, and nothing of it is written.
TEST(CommitQueueTest, AFullQueueRefusesAtOnce) {
  TempDir dir;
  storage::StoreOptions options;
  options.data_dir = dir.Sub("data");
  options.max_queued_commits = 2;
  auto store = storage::ConsentStore::Open(options);
  ASSERT_TRUE(store.ok());
  absl::Notification entered, gate;
  auto update = [](const std::string& user, absl::Notification* in, absl::Notification* wait) {
    storage::SubjectUpdate u;
    u.user_id = user;
    u.apply = [in, wait](storage::UpdateContext&, v1::Subject&, v1::ChangeEvent& e) {
      if (in != nullptr) in->Notify();
      if (wait != nullptr) wait->WaitForNotification();
      e.set_kind(v1::CHANGE_KIND_SUBJECT_ATTRIBUTES);
      return absl::OkStatus();
    };
    std::vector<storage::SubjectUpdate> updates;
    updates.push_back(std::move(u));
    return updates;
  };
  std::atomic<int> ok{0};
  auto count = [&ok](absl::StatusOr<storage::CommitResult> r) {
    if (r.ok()) ok.fetch_add(1);
  };
  (*store)->CommitAsync(update("first", &entered, &gate), kStart, {}, count);
  entered.WaitForNotification();  // taken: the queue is empty again
  (*store)->CommitAsync(update("a", nullptr, nullptr), kStart, {}, count);
  (*store)->CommitAsync(update("b", nullptr, nullptr), kStart, {}, count);
  absl::Status refused;
  (*store)->CommitAsync(
      update("c", nullptr, nullptr), kStart, {},
      [&refused](absl::StatusOr<storage::CommitResult> r) { refused = r.status(); });
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);  // answered at once
  EXPECT_EQ(refused.message(),
            "the commit queue is full (2 writes waiting for the disk); nothing was written, "
            "retry later");
  gate.Notify();
  ASSERT_TRUE((*store)->Close().ok());
  EXPECT_EQ(ok.load(), 3);
  EXPECT_EQ((*store)->CurrentRevision(), 3);
}

}  // namespace
}  // namespace consent
