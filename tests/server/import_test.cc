// Bulk import over gRPC (ImportSubjects): records applied as the writes
// they stand for, progress kept per import and resumed without writing
// twice, bad records and deleted subjects rejected one by one, the rules of
// a call, and writes made while an import runs. A real consentd
// in-process, on loopback, with a real RocksDB.
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/consent_client.h"
#include "core/proto_time.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/fake_clock.h"
#include "tests/in_process_server.h"
#include "tests/test_util.h"

namespace consent {
namespace {

using ::consent::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

const absl::Time kStart =
    absl::FromCivil(absl::CivilSecond(2026, 6, 1, 0, 0, 0), absl::UTCTimeZone());

v1::ImportRecord Record(int64_t offset, const std::string& user, const std::string& jurisdiction,
                        int birth_year,
                        std::vector<std::pair<std::string, v1::PreferenceState>> preferences = {}) {
  v1::ImportRecord record;
  record.set_offset(offset);
  record.set_user_id(user);
  record.set_jurisdiction(jurisdiction);
  if (birth_year > 0) {
    record.mutable_birth_date()->set_year(birth_year);
    record.mutable_birth_date()->set_month(5);
    record.mutable_birth_date()->set_day(17);
  }
  for (const auto& [purpose, state] : preferences) {
    v1::ImportedPreference* p = record.add_preferences();
    p->set_purpose(purpose);
    p->set_state(state);
  }
  return record;
}

class ImportTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(); }
  void TearDown() override {
    if (server_) {
      EXPECT_TRUE(server_->Shutdown().ok());
    }
  }
  void StartServer() {
    auto server = ConsentServer::Start(testing::InProcessOptions(dir_.Sub("data")), &clock_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = Client::Connect(server_->listen_address());
  }

  // One call sending `messages` (records only) after the first.
  absl::StatusOr<v1::ImportSubjectsResponse> Import(
      const std::string& id, std::vector<std::vector<v1::ImportRecord>> messages) {
    size_t next = 0;
    return client_->ImportSubjects(id, [&](v1::ImportSubjectsRequest* message) {
      if (next == messages.size()) return false;
      for (v1::ImportRecord& r : messages[next]) *message->add_records() = r;
      return ++next < messages.size();
    });
  }

  v1::DecisionReason Reason(const std::string& user, const std::string& purpose = "ai_training") {
    auto response = client_->Check(testing::PublicPostCheck(user, purpose));
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? response->decision().reason() : v1::DECISION_REASON_UNSPECIFIED;
  }

  std::vector<v1::ChangeEvent> History(const std::string& user) {
    v1::ListHistoryRequest request;
    request.set_user_id(user);
    auto response = client_->ListHistory(request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok()
               ? std::vector<v1::ChangeEvent>(response->events().begin(), response->events().end())
               : std::vector<v1::ChangeEvent>();
  }

  TempDir dir_;
  FakeClock clock_{kStart};
  std::unique_ptr<ConsentServer> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(ImportTest, AppliesEachRecordAsTheWritesItStandsFor) {
  auto response =
      Import("onboarding-1",
             {{Record(41, "alice", "GB", 1990, {{"ai_training", v1::PREFERENCE_STATE_OBJECTED}}),
               Record(80, "bob", "GB", 1990)},
              {Record(120, "carol", "US-CA", 1980,
                      {{"ai_training", v1::PREFERENCE_STATE_CONSENTED},
                       {"ai_training.generative", v1::PREFERENCE_STATE_OBJECTED}}),
               Record(150, "dan", "GB", 2015)}});
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->import_id(), "onboarding-1");
  EXPECT_EQ(response->acknowledged_offset(), 150);
  EXPECT_EQ(response->imported(), 4);
  EXPECT_EQ(response->rejected(), 0);
  EXPECT_EQ(response->skipped(), 0);
  // alice: attributes and one preference; bob: attributes; carol:
  // attributes and two; dan: attributes.
  EXPECT_EQ(response->revision(), 7);

  EXPECT_EQ(Reason("alice"), v1::DECISION_REASON_DENIED_OBJECTION);
  EXPECT_EQ(Reason("bob"), v1::DECISION_REASON_ALLOWED_DEFAULT);
  EXPECT_EQ(Reason("carol"), v1::DECISION_REASON_ALLOWED_CONSENT);
  EXPECT_EQ(Reason("carol", "ai_training.generative"), v1::DECISION_REASON_DENIED_OBJECTION);
  EXPECT_EQ(Reason("dan"), v1::DECISION_REASON_DENIED_MINOR);

  // History says what each record did and where it came from.
  std::vector<v1::ChangeEvent> events = History("alice");
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind(), v1::CHANGE_KIND_SUBJECT_ATTRIBUTES);
  EXPECT_EQ(events[0].attributes().after().jurisdiction(), "GB");
  EXPECT_EQ(events[0].attributes().after().birth_date().year(), 1990);
  EXPECT_EQ(events[1].kind(), v1::CHANGE_KIND_PREFERENCE);
  EXPECT_EQ(events[1].preference().after().state(), v1::PREFERENCE_STATE_OBJECTED);
  EXPECT_EQ(events[1].preference().after().source().channel(), "import");
  for (const v1::ChangeEvent& e : events) {
    EXPECT_EQ(e.source().channel(), "import");
    EXPECT_EQ(e.request_id(), "onboarding-1:41");
    EXPECT_EQ(e.event_time(), ToProto(kStart));
  }
  auto verified = client_->VerifyAuditLog(v1::VerifyAuditLogRequest());
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_TRUE(verified->ok());
  EXPECT_EQ(verified->verified_count(), 7);
}

TEST_F(ImportTest, ResumesAfterTheAcknowledgedOffsetWithoutWritingTwice) {
  auto first = Import("resume", {{Record(10, "u1", "GB", 1990), Record(20, "u2", "GB", 1990)}});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->revision(), 2);
  auto progress = client_->ImportProgress("resume");
  ASSERT_TRUE(progress.ok()) << progress.status();
  EXPECT_EQ(*progress, 20);
  // Progress survives a restart.
  ASSERT_TRUE(server_->Shutdown().ok());
  server_.reset();
  StartServer();
  progress = client_->ImportProgress("resume");
  ASSERT_TRUE(progress.ok()) << progress.status();
  EXPECT_EQ(*progress, 20);
  EXPECT_EQ(*client_->ImportProgress("never-run"), 0);

  // The whole file again, after an objection of u1's: the records already
  // applied are skipped, so the objection stands and nothing is written
  // twice.
  v1::SetPreferenceRequest object;
  object.set_user_id("u1");
  object.set_purpose("ai_training");
  object.set_state(v1::PREFERENCE_STATE_OBJECTED);
  ASSERT_TRUE(client_->SetPreference(object).ok());
  auto again = Import(
      "resume", {{Record(10, "u1", "GB", 1990, {{"ai_training", v1::PREFERENCE_STATE_CONSENTED}}),
                  Record(20, "u2", "GB", 1990)},
                 {Record(30, "u3", "GB", 1990)}});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->skipped(), 2);
  EXPECT_EQ(again->imported(), 1);
  EXPECT_EQ(again->acknowledged_offset(), 30);
  EXPECT_EQ(again->revision(), 4);
  EXPECT_EQ(Reason("u1"), v1::DECISION_REASON_DENIED_OBJECTION);
  EXPECT_EQ(History("u1").size(), 2u);
  EXPECT_EQ(History("u3").size(), 1u);
}

TEST_F(ImportTest, RejectsBadRecordsAndDeletedSubjectsOneByOne) {
  ASSERT_TRUE(client_->UpdateSubject(testing::UkAdult("gone")).ok());
  v1::DeleteSubjectRequest deletion;
  deletion.set_user_id("gone");
  ASSERT_TRUE(client_->DeleteSubject(deletion).ok());

  v1::ImportRecord nothing;
  nothing.set_offset(6);
  nothing.set_user_id("idle");
  v1::ImportRecord bad_id = Record(8, std::string(129, 'x'), "GB", 1990);
  auto response = Import(
      "rejections",
      {{Record(1, "ok1", "GB", 1990), Record(2, "bad-jurisdiction", "gb", 1990),
        Record(3, "future", "GB", 2027),
        Record(4, "unknown-purpose", "", 0,
               {{"ai_training.telepathy", v1::PREFERENCE_STATE_OBJECTED}}),
        Record(5, "twice", "", 0,
               {{"ai_training", v1::PREFERENCE_STATE_OBJECTED},
                {"ai_training", v1::PREFERENCE_STATE_CONSENTED}}),
        nothing, Record(7, "gone", "GB", 1990, {{"ai_training", v1::PREFERENCE_STATE_CONSENTED}}),
        bad_id, Record(9, "ok2", "GB", 1990)}});
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->imported(), 2);
  EXPECT_EQ(response->rejected(), 7);
  EXPECT_EQ(response->acknowledged_offset(), 9);
  std::vector<std::string> rejections;
  for (const v1::ImportRejection& r : response->rejections()) {
    rejections.push_back(
        absl::StrCat(r.offset(), " ", r.user_id(), " ", r.field(), ": ", r.description()));
  }
  EXPECT_THAT(
      rejections,
      ElementsAre(
          "2 bad-jurisdiction jurisdiction: must be an ISO 3166 code such as GB or US-CA",
          "3 future birth_date: is in the future",
          "4 unknown-purpose preferences[0].purpose: \"ai_training.telepathy\" is not defined by "
          "policy version 2026-11-27.1",
          "5 twice preferences[1].purpose: repeats preferences[0]",
          "6 idle preferences: the record sets nothing: give jurisdiction, birth_date or "
          "preferences",
          "7 gone : the subject was deleted; a deleted subject takes no more writes",
          "8  user_id: is 129 bytes; at most 128 allowed"));
  EXPECT_EQ(Reason("ok1"), v1::DECISION_REASON_ALLOWED_DEFAULT);
  EXPECT_EQ(Reason("ok2"), v1::DECISION_REASON_ALLOWED_DEFAULT);
  EXPECT_EQ(Reason("gone"), v1::DECISION_REASON_DENIED_ACCOUNT_DELETED);
  EXPECT_EQ(History("gone").size(), 2u);  // its own writes, nothing imported
}

TEST_F(ImportTest, RefusesACallThatBreaksTheRules) {
  auto backwards = Import("rules", {{Record(10, "a", "GB", 1990), Record(10, "b", "GB", 1990)}});
  EXPECT_EQ(backwards.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(backwards.status().message(),
              HasSubstr("import \"rules\" is acknowledged through offset 0"));
  EXPECT_THAT(FieldViolations(backwards.status()),
              ElementsAre("records[1].offset: 10 is not above the previous record's offset (10): "
                          "offsets increase through an import"));

  std::vector<v1::ImportRecord> many;
  for (int i = 1; i <= 1001; ++i) many.push_back(Record(i, absl::StrCat("u", i), "GB", 1990));
  auto too_many = Import("rules", {many});
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(FieldViolations(too_many.status()),
              ElementsAre("records: 1001 records; at most 1000 per message"));

  auto no_id = Import("", {});
  EXPECT_EQ(no_id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(FieldViolations(no_id.status()), ElementsAre("import_id: is required"));

  // Nothing of the refused calls was written.
  EXPECT_EQ(*client_->ImportProgress("rules"), 0);
  EXPECT_EQ(client_
                ->GetSubject([] {
                  v1::GetSubjectRequest r;
                  r.set_user_id("a");
                  return r;
                }())
                .status()
                .code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ImportTest, OneCallAtATimeMovesAnImportOn) {
  // A call left open holds the import; a second one is refused.
  grpc::ClientContext context;
  v1::ImportSubjectsResponse response;
  auto channel = grpc::CreateChannel(server_->listen_address(), grpc::InsecureChannelCredentials());
  auto stub = v1::ConsentRegistry::NewStub(channel);
  auto writer = stub->ImportSubjects(&context, &response);
  v1::ImportSubjectsRequest message;
  message.set_import_id("busy");
  *message.add_records() = Record(5, "first", "GB", 1990);
  ASSERT_TRUE(writer->Write(message));
  // The first call holds the import once the server has read its message:
  // wait for its record to be applied.
  while (Reason("first") != v1::DECISION_REASON_ALLOWED_DEFAULT) {
  }
  auto second = client_->ImportProgress("busy");
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(second.status().message(), HasSubstr("import \"busy\" is running on another call"));
  ASSERT_TRUE(writer->WritesDone());
  ASSERT_TRUE(writer->Finish().ok());
  EXPECT_EQ(response.acknowledged_offset(), 5);
  EXPECT_EQ(*client_->ImportProgress("busy"), 5);
}

TEST_F(ImportTest, WritesMadeWhileAnImportRunsAreNeverLost) {
  // Objections of the users being imported, recorded while the import
  // runs: each record applies to the subject as it is when it commits, so
  // every user ends with both the imported attributes and the objection,
  // whichever came first.
  constexpr int kUsers = 20000;
  std::atomic<bool> stop{false};
  std::atomic<int> objected{0};
  std::thread objector([&] {
    auto client = Client::Connect(server_->listen_address());
    for (int i = 0; i < kUsers && !stop.load(); i += 7) {
      v1::SetPreferenceRequest object;
      object.set_user_id(absl::StrCat("user-", i));
      object.set_purpose("ai_training");
      object.set_state(v1::PREFERENCE_STATE_OBJECTED);
      if (client->SetPreference(object).ok()) objected.fetch_add(1);
    }
  });
  std::vector<std::vector<v1::ImportRecord>> messages(kUsers / 1000);
  for (int i = 0; i < kUsers; ++i) {
    messages[i / 1000].push_back(Record(i + 1, absl::StrCat("user-", i), "GB", 1990,
                                        {{"ai_training.ranking", v1::PREFERENCE_STATE_CONSENTED}}));
  }
  auto response = Import("concurrent", messages);
  stop.store(true);
  objector.join();
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->imported(), kUsers);
  ASSERT_GT(objected.load(), 0);
  for (int i = 0; i < objected.load() * 7; i += 7) {
    v1::GetSubjectRequest get;
    get.set_user_id(absl::StrCat("user-", i));
    auto subject = client_->GetSubject(get);
    ASSERT_TRUE(subject.ok()) << subject.status();
    EXPECT_EQ(subject->subject().attributes().jurisdiction(), "GB") << get.user_id();
    ASSERT_EQ(subject->subject().preferences_size(), 2) << get.user_id();
    EXPECT_EQ(Reason(get.user_id()), v1::DECISION_REASON_DENIED_OBJECTION) << get.user_id();
  }
  auto verified = client_->VerifyAuditLog(v1::VerifyAuditLogRequest());
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_TRUE(verified->ok());
  EXPECT_EQ(verified->verified_count(), 2 * kUsers + objected.load());
}

}  // namespace
}  // namespace consent
