// History, idempotency, the audit chain and the change feed, over gRPC
// against a real server on loopback (in-process, injected clock) with a
// real RocksDB. Tampering is simulated by writing to RocksDB directly, as
// an attacker with file access would.
#include <atomic>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/consent_client.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "server/server.h"
#include "storage/audit_chain.h"
#include "storage/keys.h"
#include "tests/fake_clock.h"
#include "tests/in_process_server.h"
#include "tests/test_util.h"

namespace consent {
namespace {

using ::consent::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

const absl::Time kStart =
    absl::FromCivil(absl::CivilSecond(2026, 3, 1, 0, 0, 0), absl::UTCTimeZone());

class HistoryTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(); }
  void TearDown() override {
    if (server_) {
      EXPECT_TRUE(server_->Shutdown().ok());
    }
  }

  void StartServer() {
    ServerOptions options = testing::InProcessOptions(dir_.Sub("data"));
    options.request_id_retention = absl::Hours(1);
    options.watch_checkpoint_interval = absl::Milliseconds(100);
    auto server = ConsentServer::Start(options, &clock_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(server_->listen_address(), grpc::InsecureChannelCredentials());
    stub_ = v1::ConsentRegistry::NewStub(channel_);
    admin_ = v1::ConsentAdmin::NewStub(channel_);
    client_ = std::make_unique<Client>(channel_, ClientOptions());
  }

  void StopServer() {
    ASSERT_TRUE(server_->Shutdown().ok());
    server_.reset();
  }

  absl::StatusOr<v1::SetPreferenceResponse> Set(const std::string& user, v1::PreferenceState state,
                                                const std::string& request_id = "",
                                                const std::string& purpose = "ai_training") {
    v1::SetPreferenceRequest request;
    request.set_user_id(user);
    request.set_purpose(purpose);
    request.set_state(state);
    request.set_request_id(request_id);
    request.mutable_source()->set_channel("settings_page");
    request.mutable_source()->set_notice_id("ai-notice");
    request.mutable_source()->set_notice_version("3");
    request.mutable_source()->set_actor("user");
    return client_->SetPreference(request);
  }

  absl::StatusOr<v1::ListHistoryResponse> History(const std::string& user, int page_size,
                                                  const std::string& token = "") {
    grpc::ClientContext context;
    v1::ListHistoryRequest request;
    request.set_user_id(user);
    request.set_page_size(page_size);
    request.set_page_token(token);
    v1::ListHistoryResponse response;
    grpc::Status status = stub_->ListHistory(&context, request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    return response;
  }

  v1::VerifyAuditLogResponse Verify(int64_t start = 0, int64_t end = 0) {
    grpc::ClientContext context;
    v1::VerifyAuditLogRequest request;
    request.set_start_revision(start);
    request.set_end_revision(end);
    v1::VerifyAuditLogResponse response;
    grpc::Status status = admin_->VerifyAuditLog(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  // Opens the stopped server's database with RocksDB itself.
  std::unique_ptr<rocksdb::DB> OpenRaw(std::vector<rocksdb::ColumnFamilyHandle*>* handles) {
    std::vector<std::string> names;
    EXPECT_TRUE(
        rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir_.Sub("data"), &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    for (const auto& name : names) families.emplace_back(name, rocksdb::ColumnFamilyOptions());
    rocksdb::DB* db = nullptr;
    EXPECT_TRUE(
        rocksdb::DB::Open(rocksdb::DBOptions(), dir_.Sub("data"), families, handles, &db).ok());
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] != "events") continue;
      std::swap((*handles)[0], (*handles)[i]);  // events first, for the caller
    }
    return std::unique_ptr<rocksdb::DB>(db);
  }

  TempDir dir_;
  FakeClock clock_{kStart};
  std::unique_ptr<ConsentServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ConsentRegistry::Stub> stub_;
  std::unique_ptr<v1::ConsentAdmin::Stub> admin_;
  std::unique_ptr<Client> client_;
};

TEST_F(HistoryTest, ListHistoryPagesOldestFirstAcrossRestarts) {
  std::vector<int64_t> alice_revisions;
  for (int i = 0; i < 25; ++i) {
    clock_.Advance(absl::Minutes(1));
    auto r =
        Set("alice", i % 2 == 0 ? v1::PREFERENCE_STATE_OBJECTED : v1::PREFERENCE_STATE_CONSENTED);
    ASSERT_TRUE(r.ok()) << r.status();
    alice_revisions.push_back(r->revision());
    ASSERT_TRUE(Set("bob", v1::PREFERENCE_STATE_OBJECTED).ok());
  }
  auto first = History("alice", 10);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->events_size(), 10);
  ASSERT_FALSE(first->next_page_token().empty());
  // The first event in full: who, when, through which channel, before/after.
  const v1::ChangeEvent& e = first->events(0);
  EXPECT_EQ(e.revision(), alice_revisions[0]);
  EXPECT_EQ(e.user_id(), "alice");
  EXPECT_EQ(e.kind(), v1::CHANGE_KIND_PREFERENCE);
  EXPECT_THAT(e.caller(), HasSubstr("127.0.0.1"));
  EXPECT_EQ(e.source().notice_version(), "3");
  EXPECT_EQ(e.event_time().seconds(), absl::ToUnixSeconds(kStart + absl::Minutes(1)));
  EXPECT_FALSE(e.preference().has_before());
  EXPECT_EQ(e.preference().after().state(), v1::PREFERENCE_STATE_OBJECTED);
  EXPECT_EQ(first->events(1).preference().before().state(), v1::PREFERENCE_STATE_OBJECTED);
  EXPECT_EQ(e.hash().size(), 32u);

  // The token stays valid across a restart.
  StopServer();
  StartServer();
  std::vector<int64_t> seen;
  for (const auto& event : first->events()) seen.push_back(event.revision());
  std::string token = first->next_page_token();
  while (!token.empty()) {
    auto page = History("alice", 10, token);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const auto& event : page->events()) seen.push_back(event.revision());
    token = page->next_page_token();
  }
  EXPECT_EQ(seen, alice_revisions);

  // A token is bound to its user; garbage is rejected.
  auto stolen = History("bob", 10, first->next_page_token());
  EXPECT_THAT(FieldViolations(stolen.status()),
              ElementsAre("page_token: belongs to another user_id"));
  auto garbage = History("alice", 10, "not-a-token");
  EXPECT_THAT(FieldViolations(garbage.status()),
              ElementsAre("page_token: is not a token from ListHistory"));
  // page_size is capped at 1,000; no events is an empty page.
  auto all = History("alice", 5000);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->events_size(), 25);
  EXPECT_TRUE(all->next_page_token().empty());
  EXPECT_EQ(History("nobody", 10)->events_size(), 0);
}

TEST_F(HistoryTest, DeletionKeepsTombstoneAndProof) {
  v1::UpdateSubjectRequest update;
  update.set_user_id("alice");
  update.mutable_attributes()->set_jurisdiction("GB");
  update.mutable_update_mask()->add_paths("jurisdiction");
  ASSERT_TRUE(client_->UpdateSubject(update).ok());
  v1::DeleteSubjectRequest del;
  del.set_user_id("alice");
  del.mutable_source()->set_channel("account_deletion");
  ASSERT_TRUE(client_->DeleteSubject(del).ok());
  auto history = History("alice", 10);
  ASSERT_TRUE(history.ok());
  ASSERT_EQ(history->events_size(), 2);
  const v1::ChangeEvent& deletion = history->events(1);
  EXPECT_EQ(deletion.kind(), v1::CHANGE_KIND_SUBJECT_DELETED);
  EXPECT_EQ(deletion.deletion().before().jurisdiction(), "GB");
  EXPECT_EQ(deletion.source().channel(), "account_deletion");
}

TEST_F(HistoryTest, IdempotentReplayReturnsTheFirstResultAndWritesNothing) {
  auto first = Set("alice", v1::PREFERENCE_STATE_OBJECTED, "req-1");
  ASSERT_TRUE(first.ok()) << first.status();
  const int64_t revision = client_
                               ->GetSubject([] {
                                 v1::GetSubjectRequest r;
                                 r.set_user_id("alice");
                                 return r;
                               }())
                               ->revision();
  auto replay = Set("alice", v1::PREFERENCE_STATE_OBJECTED, "req-1");
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_EQ(replay->revision(), first->revision());
  EXPECT_EQ(replay->preference().SerializeAsString(), first->preference().SerializeAsString());
  EXPECT_EQ(History("alice", 100)->events_size(), 1);

  // The same id with another payload is refused, naming the field.
  auto conflict = Set("alice", v1::PREFERENCE_STATE_CONSENTED, "req-1");
  EXPECT_EQ(conflict.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      FieldViolations(conflict.status()),
      ElementsAre(absl::StrCat("request_id: was already used for a different request "
                               "(revision ",
                               first->revision(), "); a new request needs a new request_id")));

  // Remembered across a restart.
  StopServer();
  StartServer();
  auto after_restart = Set("alice", v1::PREFERENCE_STATE_OBJECTED, "req-1");
  ASSERT_TRUE(after_restart.ok());
  EXPECT_EQ(after_restart->revision(), first->revision());
  EXPECT_EQ(Verify().verified_count(), revision);

  // Forgotten after the retention window (1 hour here).
  clock_.Advance(absl::Hours(1) + absl::Seconds(1));
  auto fresh = Set("alice", v1::PREFERENCE_STATE_OBJECTED, "req-1");
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->revision(), first->revision() + 1);
}

TEST_F(HistoryTest, IdempotentUpdateSubjectAndBatches) {
  v1::UpdateSubjectRequest update;
  update.set_user_id("alice");
  update.set_request_id("attrs-1");
  update.mutable_attributes()->set_jurisdiction("GB");
  update.mutable_update_mask()->add_paths("jurisdiction");
  auto first = client_->UpdateSubject(update);
  ASSERT_TRUE(first.ok());
  update.set_request_id("attrs-2");
  update.mutable_attributes()->set_jurisdiction("FR");
  ASSERT_TRUE(client_->UpdateSubject(update).ok());
  // Replaying attrs-1 answers with the subject as attrs-1 left it.
  update.set_request_id("attrs-1");
  update.mutable_attributes()->set_jurisdiction("GB");
  auto replay = client_->UpdateSubject(update);
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_EQ(replay->revision(), first->revision());
  EXPECT_EQ(replay->subject().attributes().jurisdiction(), "GB");
  EXPECT_EQ(replay->subject().revision(), first->revision());

  v1::BatchSetPreferencesRequest batch;
  batch.set_request_id("batch-1");
  for (const char* user : {"u1", "u2"}) {
    v1::SetPreferenceRequest* item = batch.add_requests();
    item->set_user_id(user);
    item->set_purpose("ai_training");
    item->set_state(v1::PREFERENCE_STATE_OBJECTED);
    item->set_request_id(absl::StrCat("item-", user));
  }
  auto applied = client_->BatchSetPreferences(batch);
  ASSERT_TRUE(applied.ok()) << applied.status();
  auto replayed = client_->BatchSetPreferences(batch);
  ASSERT_TRUE(replayed.ok());
  EXPECT_THAT(replayed->revisions(), ::testing::ElementsAreArray(applied->revisions()));
  // A new batch repeating one item: that item keeps its revision and is not
  // written again; the new item is.
  batch.set_request_id("batch-2");
  batch.mutable_requests(1)->set_user_id("u3");
  batch.mutable_requests(1)->set_request_id("item-u3");
  auto mixed = client_->BatchSetPreferences(batch);
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  EXPECT_EQ(mixed->revisions(0), applied->revisions(0));
  EXPECT_EQ(mixed->revisions(1), applied->revisions(1) + 1);
  EXPECT_EQ(History("u1", 10)->events_size(), 1);
  // An item id reused for another payload names the item.
  batch.set_request_id("batch-3");
  batch.mutable_requests(0)->set_state(v1::PREFERENCE_STATE_CONSENTED);
  auto conflict = client_->BatchSetPreferences(batch);
  ASSERT_EQ(FieldViolations(conflict.status()).size(), 1u);
  EXPECT_THAT(FieldViolations(conflict.status())[0],
              HasSubstr("requests[0].request_id: was already"));
}

TEST_F(HistoryTest, AuditChainVerifiesAndNamesTheTamperedRevision) {
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(Set(absl::StrCat("user-", i % 4), v1::PREFERENCE_STATE_OBJECTED).ok());
  }
  v1::VerifyAuditLogResponse clean = Verify();
  EXPECT_TRUE(clean.ok());
  EXPECT_EQ(clean.verified_count(), 20);
  EXPECT_EQ(Verify(5, 9).verified_count(), 5);

  // Someone with access to the files turns revision 13's objection into a
  // consent, directly in RocksDB.
  StopServer();
  {
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    auto db = OpenRaw(&handles);
    std::string value;
    ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), handles[0], storage::EventKey(13), &value).ok());
    v1::ChangeEvent event;
    ASSERT_TRUE(event.ParseFromString(value));
    event.mutable_preference()->mutable_after()->set_state(v1::PREFERENCE_STATE_CONSENTED);
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), handles[0], storage::EventKey(13),
                        event.SerializeAsString())
                    .ok());
    for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
  }
  StartServer();
  v1::VerifyAuditLogResponse tampered = Verify();
  EXPECT_FALSE(tampered.ok());
  EXPECT_EQ(tampered.first_broken_revision(), 13);
  EXPECT_EQ(tampered.verified_count(), 12);
  EXPECT_EQ(tampered.detail(), "the event's hash does not match its contents");
  // A range before the damage still verifies.
  EXPECT_TRUE(Verify(1, 12).ok());
}

TEST_F(HistoryTest, ChainIsReproducibleFromListedEvents) {
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Set("alice", v1::PREFERENCE_STATE_OBJECTED).ok());
  // An auditor recomputes every hash from ListHistory alone.
  auto history = History("alice", 10);
  ASSERT_TRUE(history.ok());
  std::string previous(32, '\0');
  for (const v1::ChangeEvent& e : history->events()) {
    EXPECT_EQ(e.previous_hash(), previous);
    EXPECT_EQ(storage::EventHash(previous, e), e.hash());
    previous = e.hash();
  }
}

// Reads a WatchChanges stream until `want` events are seen, or it ends.
struct Watcher {
  std::unique_ptr<grpc::ClientContext> context;
  std::unique_ptr<grpc::ClientReader<v1::WatchChangesResponse>> reader;

  Watcher(v1::ConsentRegistry::Stub* stub, int64_t start, const std::string& purpose = "") {
    context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    v1::WatchChangesRequest request;
    request.set_start_revision(start);
    request.set_purpose(purpose);
    reader = stub->WatchChanges(context.get(), request);
  }
};

TEST_F(HistoryTest, WatchDeliversHistoryThenLiveEventsAndCheckpoints) {
  ASSERT_TRUE(Set("alice", v1::PREFERENCE_STATE_OBJECTED).ok());
  ASSERT_TRUE(Set("alice", v1::PREFERENCE_STATE_CLEARED).ok());
  Watcher watcher(stub_.get(), 1);
  v1::WatchChangesResponse message;
  ASSERT_TRUE(watcher.reader->Read(&message));
  EXPECT_EQ(message.event().revision(), 1);
  ASSERT_TRUE(watcher.reader->Read(&message));
  EXPECT_EQ(message.event().revision(), 2);
  // Idle: a checkpoint at the last delivered revision.
  ASSERT_TRUE(watcher.reader->Read(&message));
  ASSERT_TRUE(message.has_checkpoint());
  EXPECT_EQ(message.checkpoint().revision(), 2);
  // A live event.
  ASSERT_TRUE(Set("bob", v1::PREFERENCE_STATE_OBJECTED).ok());
  do {
    ASSERT_TRUE(watcher.reader->Read(&message));
  } while (message.has_checkpoint());
  EXPECT_EQ(message.event().revision(), 3);
  EXPECT_EQ(message.event().user_id(), "bob");
  watcher.context->TryCancel();
}

TEST_F(HistoryTest, WatchPurposeFilterKeepsWhatAffectsThePurpose) {
  ASSERT_TRUE(Set("a", v1::PREFERENCE_STATE_OBJECTED, "", "ai_training").ok());  // 1 parent
  ASSERT_TRUE(
      Set("a", v1::PREFERENCE_STATE_OBJECTED, "", "ai_training.ranking").ok());  // 2 sibling
  ASSERT_TRUE(
      Set("a", v1::PREFERENCE_STATE_OBJECTED, "", "ai_training.generative").ok());  // 3 self
  v1::DeleteSubjectRequest del;
  del.set_user_id("b");
  ASSERT_TRUE(client_->DeleteSubject(del).ok());  // 4 deletion
  Watcher watcher(stub_.get(), 0, "ai_training.generative");
  std::vector<int64_t> revisions;
  v1::WatchChangesResponse message;
  while (watcher.reader->Read(&message)) {
    if (message.has_checkpoint()) {
      // The checkpoint covers the filtered-out revision 2 too.
      EXPECT_EQ(message.checkpoint().revision(), 4);
      break;
    }
    revisions.push_back(message.event().revision());
  }
  EXPECT_THAT(revisions, ElementsAre(1, 3, 4));
  watcher.context->TryCancel();
}

TEST_F(HistoryTest, WatchStartRevisionIsValidated) {
  ASSERT_TRUE(Set("a", v1::PREFERENCE_STATE_OBJECTED).ok());
  v1::WatchChangesResponse message;
  Watcher beyond(stub_.get(), 5);
  EXPECT_FALSE(beyond.reader->Read(&message));
  grpc::Status status = beyond.reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(status.error_message(), "start_revision 5 is beyond the registry's next revision 2");
  Watcher negative(stub_.get(), -1);
  EXPECT_FALSE(negative.reader->Read(&message));
  EXPECT_EQ(negative.reader->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(HistoryTest, WatchOlderThanRetainedIsOutOfRange) {
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Set("a", v1::PREFERENCE_STATE_OBJECTED).ok());
  // History before revision 3 is gone (as a retention purge would leave it).
  StopServer();
  {
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    auto db = OpenRaw(&handles);
    for (int r = 1; r <= 2; ++r) {
      ASSERT_TRUE(db->Delete(rocksdb::WriteOptions(), handles[0], storage::EventKey(r)).ok());
    }
    for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
  }
  StartServer();
  Watcher old(stub_.get(), 1);
  v1::WatchChangesResponse message;
  EXPECT_FALSE(old.reader->Read(&message));
  grpc::Status status = old.reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(status.error_message(),
            "start_revision 1 is older than the oldest revision kept, 3; start from there");
}

TEST_F(HistoryTest, WatcherReconnectingTenTimesSeesEveryRevisionOnce) {
  constexpr int kWrites = 5000;
  std::thread writer([&] {
    auto client = Client::Connect(server_->listen_address());
    for (int i = 0; i < kWrites; ++i) {
      v1::SetPreferenceRequest r;
      r.set_user_id(absl::StrCat("user-", i % 97));
      r.set_purpose("ai_training");
      r.set_state(i % 3 == 0 ? v1::PREFERENCE_STATE_CONSENTED : v1::PREFERENCE_STATE_OBJECTED);
      ASSERT_TRUE(client->SetPreference(r).ok());
    }
  });
  std::mt19937 random(42);
  std::vector<int64_t> seen;
  int reconnects = 0;
  while (static_cast<int>(seen.size()) < kWrites) {
    const int64_t resume = seen.empty() ? 1 : seen.back() + 1;
    Watcher watcher(stub_.get(), resume);
    // Disconnect after a random number of events, ten times.
    const size_t stop_after =
        reconnects < 10 ? 1 + random() % 700 : std::numeric_limits<size_t>::max();
    size_t read = 0;
    v1::WatchChangesResponse message;
    while (read < stop_after && static_cast<int>(seen.size()) < kWrites &&
           watcher.reader->Read(&message)) {
      if (message.has_event()) {
        seen.push_back(message.event().revision());
        ++read;
      }
    }
    watcher.context->TryCancel();
    watcher.reader->Finish();
    if (reconnects < 10) ++reconnects;
  }
  writer.join();
  EXPECT_EQ(reconnects, 10);
  ASSERT_EQ(seen.size(), static_cast<size_t>(kWrites));
  for (int i = 0; i < kWrites; ++i) ASSERT_EQ(seen[i], i + 1) << "at position " << i;
}

TEST_F(HistoryTest, WatchResumesAcrossRestartAndEndsOnShutdown) {
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(Set("a", v1::PREFERENCE_STATE_OBJECTED).ok());
  int64_t last = 0;
  {
    Watcher watcher(stub_.get(), 1);
    v1::WatchChangesResponse message;
    while (last < 6 && watcher.reader->Read(&message)) {
      if (message.has_event()) last = message.event().revision();
    }
    // Shutdown ends the stream, saying where to resume.
    StopServer();
    while (watcher.reader->Read(&message)) {
      if (message.has_event()) last = message.event().revision();
    }
    grpc::Status status = watcher.reader->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  StartServer();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Set("b", v1::PREFERENCE_STATE_OBJECTED).ok());
  Watcher resumed(stub_.get(), last + 1);
  std::vector<int64_t> revisions;
  v1::WatchChangesResponse message;
  while (revisions.size() < static_cast<size_t>(15 - last) && resumed.reader->Read(&message)) {
    if (message.has_event()) revisions.push_back(message.event().revision());
  }
  resumed.context->TryCancel();
  ASSERT_EQ(revisions.size(), static_cast<size_t>(15 - last));
  for (size_t i = 0; i < revisions.size(); ++i)
    EXPECT_EQ(revisions[i], last + 1 + static_cast<int64_t>(i));
}

}  // namespace
}  // namespace consent
