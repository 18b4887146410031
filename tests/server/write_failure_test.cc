// A failed synced write seen from a gRPC caller of a real consentd server
// (in-process, on loopback, real RocksDB under a fault-injecting file
// system): the write is UNAVAILABLE with "outcome unknown", the health of
// consent.v1.ConsentRegistry is NOT_SERVING, the gauge and /readyz's body
// say why while writes are refused (the server stays ready), checks keep answering, and the retry
// with the same request_id gives the definitive answer once the store has reopened.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include "client/consent_client.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "storage/consent_store.h"
#include "tests/in_process_server.h"
#include "tests/storage/fault_file_system.h"
#include "tests/test_util.h"

namespace consent {
namespace {

using ::consent::testing::FaultFileSystem;
using ::consent::testing::TempDir;
using ::testing::HasSubstr;
using HealthStatus = grpc::health::v1::HealthCheckResponse;

// A check of the user's public post "p1" for ai_training.
v1::CheckRequest PostCheck(const std::string& user) {
  v1::CheckRequest request;
  request.set_purpose("ai_training");
  request.set_user_id(user);
  v1::Content* content = request.mutable_content();
  content->set_content_id("p1");
  content->set_content_type(v1::CONTENT_TYPE_POST);
  content->set_visibility(v1::VISIBILITY_PUBLIC);
  return request;
}

class WriteFailureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerOptions options = testing::InProcessOptions(dir_.Sub("data"));
    options.metrics_listen = "127.0.0.1:0";
    options.adjust_store_options = [this](storage::StoreOptions& store) {
      store.rocksdb.file_system = fs_;
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
    v1::CheckRequest request = PostCheck(user);
    request.mutable_content()->mutable_create_time()->set_seconds(1'700'000'000);
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
  // Still ready (a probe that took the pod out would stop checks too); the
  // body says what is wrong.
  auto ready = testing::HttpRequest(server_->metrics_address(), "GET", "/readyz");
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_EQ(ready->code, 200);
  const std::string policy = client_->GetPolicy()->version();
  EXPECT_EQ(ready->body, "ready\npolicy: " + policy +
                             "\nwrites: refused (a synced write failed; checks go on)\n");
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
  EXPECT_EQ(testing::HttpGet(server_->metrics_address(), "/readyz").value_or(""),
            "ready\npolicy: " + policy + "\nwrites: accepted\n");
  auto next = Object(*once_, "bob", "form-2");
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->revision(), 3);
}

// A small tmpfs, mounted for the test (CI runs as root) and unmounted after.
class Tmpfs {
 public:
  Tmpfs(const std::string& path, const std::string& size) : path_(path) {
    std::filesystem::create_directories(path);
    auto mounted =
        testing::RunCommand({"/bin/mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", path});
    ok_ = mounted.exit_code == 0;
    error_ = mounted.err;
  }
  ~Tmpfs() {
    if (ok_) testing::RunCommand({"/bin/umount", "-l", path_});
  }
  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }

 private:
  std::string path_;
  bool ok_ = false;
  std::string error_;
};

// Fills the file system at `path` with a file of `bytes`, written for real
// (tmpfs allocates pages as they are written).
void Fill(const std::string& path, int64_t bytes) {
  std::ofstream out(path, std::ios::binary);
  const std::string block(1 << 20, 'x');
  for (int64_t written = 0; written < bytes && out; written += static_cast<int64_t>(block.size())) {
    out.write(block.data(), static_cast<std::streamsize>(block.size()));
  }
}

// The data directory on a tmpfs that fills up: writes fail with a clear
// message, checks keep answering, and once space is freed writes succeed
// again without a restart, with nothing acknowledged lost.
TEST(FullDiskTest, WritesFailChecksGoOnAndWritesResumeOnceSpaceIsFreed) {
  if (geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root (CI runs as root)";
  TempDir dir;
  Tmpfs disk(dir.Sub("disk"), "48m");
  ASSERT_TRUE(disk.ok()) << disk.error();
  ServerOptions options = testing::InProcessOptions(dir.Sub("disk/data"));
  options.adjust_store_options = [](storage::StoreOptions& store) {
    store.reopen_interval = absl::ZeroDuration();
  };
  auto server = ConsentServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  ClientOptions once;
  once.max_attempts = 1;
  auto client = Client::Connect((*server)->listen_address(), once);
  // Leave a few MiB: the next batches fill them.
  Fill(dir.Sub("disk/filler"), 40 << 20);

  // Batches of 1,000 objections with long sources, until the disk is full.
  std::vector<std::string> acknowledged;
  absl::Status failure;
  for (int batch = 0; batch < 200 && failure.ok(); ++batch) {
    v1::BatchSetPreferencesRequest request;
    for (int i = 0; i < 1000; ++i) {
      v1::SetPreferenceRequest* item = request.add_requests();
      item->set_user_id(absl::StrCat("user-", batch, "-", i));
      item->set_purpose("ai_training");
      item->set_state(v1::PREFERENCE_STATE_OBJECTED);
      item->mutable_source()->set_channel(std::string(200, 'c'));
      item->mutable_source()->set_actor(std::string(200, 'a'));
    }
    auto response = client->BatchSetPreferences(request);
    if (response.ok()) {
      for (const auto& item : request.requests()) acknowledged.push_back(item.user_id());
    } else {
      failure = response.status();
    }
  }
  ASSERT_FALSE(failure.ok()) << "the disk never filled up";
  ASSERT_FALSE(acknowledged.empty());
  EXPECT_TRUE(failure.code() == absl::StatusCode::kUnavailable ||
              failure.code() == absl::StatusCode::kResourceExhausted)
      << failure;
  EXPECT_THAT(failure.message(), HasSubstr("No space left on device"));

  // Checks answer from what was committed, while writes are refused.
  auto check = [&](const std::string& user) { return client->Check(PostCheck(user)); };
  auto denied = check(acknowledged.back());
  ASSERT_TRUE(denied.ok()) << denied.status();
  EXPECT_EQ(denied->decision().reason(), v1::DECISION_REASON_DENIED_MINOR);  // age unknown
  v1::SetPreferenceRequest more;
  more.set_user_id("after");
  more.set_purpose("ai_training");
  more.set_state(v1::PREFERENCE_STATE_OBJECTED);
  // What the failed batch did not use is enough for a small write, so fill
  // the disk to the last page: then no write fits, nor does a reopen.
  // (The WAL may hold pages allocated ahead: small writes go on until
  // those are used up.)
  Fill(dir.Sub("disk/filler2"), int64_t{64} << 20);
  // A failure reopens the database on the next write, and closing it
  // frees the WAL's pages allocated ahead: writes may succeed again for a
  // while. Go on until three fail in a row; each failure says why.
  int small_writes = 0, failures = 0, in_a_row = 0;
  for (; small_writes < 100'000 && in_a_row < 3; ++small_writes) {
    more.set_user_id(absl::StrCat("small-", small_writes));
    auto written = client->SetPreference(more);
    if (written.ok()) {
      acknowledged.push_back(more.user_id());
      in_a_row = 0;
      continue;
    }
    ++failures;
    ++in_a_row;
    EXPECT_EQ(written.status().code(), absl::StatusCode::kUnavailable) << written.status();
    EXPECT_THAT(written.status().message(), HasSubstr("No space left on device"));
  }
  EXPECT_EQ(in_a_row, 3);
  std::cout << "full disk: " << acknowledged.size() << " writes acknowledged, " << small_writes
            << " single ones tried on the full disk, " << failures << " failed, the first with\n  "
            << failure << "\n";
  denied = check(acknowledged.front());
  ASSERT_TRUE(denied.ok()) << denied.status();
  EXPECT_EQ(denied->decision().reason(), v1::DECISION_REASON_DENIED_MINOR);

  // Space is freed: the next write reopens the store, no restart.
  std::filesystem::remove(dir.Sub("disk/filler"));
  std::filesystem::remove(dir.Sub("disk/filler2"));
  more.set_user_id("after");
  auto resumed = client->SetPreference(more);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  // Nothing acknowledged was lost, here and after a restart.
  for (const std::string& user : {acknowledged.front(), acknowledged.back()}) {
    v1::GetSubjectRequest get;
    get.set_user_id(user);
    auto subject = client->GetSubject(get);
    ASSERT_TRUE(subject.ok()) << user << ": " << subject.status();
    EXPECT_EQ(subject->subject().preferences(0).state(), v1::PREFERENCE_STATE_OBJECTED);
  }
  const int64_t revision = resumed->revision();
  ASSERT_TRUE((*server)->Shutdown().ok());
  server->reset();
  server = ConsentServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  client = Client::Connect((*server)->listen_address(), once);
  v1::BatchCheckRequest batch;
  batch.set_purpose("ai_training");
  for (const std::string& user : acknowledged) {
    if (batch.items_size() == 10000) break;
    v1::CheckItem* item = batch.add_items();
    item->set_user_id(user);
    item->mutable_content()->set_content_id("p1");
    item->mutable_content()->set_content_type(v1::CONTENT_TYPE_POST);
    item->mutable_content()->set_visibility(v1::VISIBILITY_PUBLIC);
  }
  v1::GetSubjectRequest get;
  get.set_user_id("after");
  auto after = client->GetSubject(get);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->subject().revision(), revision);
  for (size_t i = 0; i < acknowledged.size(); ++i) {
    get.set_user_id(acknowledged[i]);
    auto subject = client->GetSubject(get);
    ASSERT_TRUE(subject.ok()) << acknowledged[i] << ": " << subject.status();
    ASSERT_EQ(subject->subject().preferences_size(), 1);
  }
  ASSERT_TRUE((*server)->Shutdown().ok());
}

}  // namespace
}  // namespace consent
