// End-to-end tests against the real consentd binary on loopback, with a
// temporary data directory per test.
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "client/consent_client.h"
#include "core/proto_time.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace consent {
namespace {

using ::consent::testing::ConsentdProcess;
using ::consent::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class IntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(); }

  void Start() {
    ConsentdProcess::Options options;
    options.data_dir = dir_.Sub("data");
    options.policy = policy_path_;
    auto process = ConsentdProcess::Start(options);
    ASSERT_TRUE(process.ok()) << process.status();
    server_ = *std::move(process);
    ClientOptions client_options;
    client_options.timeout = absl::Seconds(20);
    client_ = Client::Connect(server_->address(), client_options);
  }

  // Sets jurisdiction GB and an adult birth date, so ai_training defaults to
  // allowed (legitimate interest).
  void MakeUkAdult(const std::string& user) {
    auto response = client_->UpdateSubject(testing::UkAdult(user));
    ASSERT_TRUE(response.ok()) << response.status();
  }

  absl::StatusOr<int64_t> Set(const std::string& user, v1::PreferenceState state,
                              const std::string& purpose = "ai_training") {
    auto response = client_->SetPreference(testing::PreferenceOf(user, state, purpose));
    if (!response.ok()) return response.status();
    return response->revision();
  }

  static v1::Content Post(const std::string& id,
                          v1::Visibility visibility = v1::VISIBILITY_PUBLIC) {
    v1::Content content;
    content.set_content_id(id);
    content.set_content_type(v1::CONTENT_TYPE_POST);
    content.set_visibility(visibility);
    content.mutable_create_time()->set_seconds(1'700'000'000);  // 2023-11-14
    return content;
  }

  absl::StatusOr<v1::Decision> Check(const std::string& user,
                                     const std::string& purpose = "ai_training") {
    v1::CheckRequest request;
    request.set_purpose(purpose);
    request.set_user_id(user);
    *request.mutable_content() = Post("post-1");
    auto response = client_->Check(request);
    if (!response.ok()) return response.status();
    return response->decision();
  }

  TempDir dir_;
  std::string policy_path_ = testing::DefaultPolicyPath();
  std::unique_ptr<ConsentdProcess> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(IntegrationTest, HealthIsServing) {
  auto channel = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  for (const char* service : {"", "consent.v1.ConsentRegistry", "consent.v1.ConsentAdmin"}) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    ASSERT_TRUE(stub->Check(&context, request, &response).ok()) << service;
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
}

TEST_F(IntegrationTest, ObjectThenCheckDeniesAndClearAllowsAgain) {
  MakeUkAdult("alice");
  auto before = Check("alice");
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_TRUE(before->allowed());
  EXPECT_EQ(before->reason(), v1::DECISION_REASON_ALLOWED_DEFAULT);

  auto objected = Set("alice", v1::PREFERENCE_STATE_OBJECTED);
  ASSERT_TRUE(objected.ok()) << objected.status();
  auto denied = Check("alice", "ai_training.generative");
  ASSERT_TRUE(denied.ok());
  EXPECT_FALSE(denied->allowed());
  EXPECT_EQ(denied->reason(), v1::DECISION_REASON_DENIED_OBJECTION);
  EXPECT_EQ(denied->revision(), *objected);
  EXPECT_EQ(denied->policy_version(), "2026-11-27.1");

  auto cleared = Set("alice", v1::PREFERENCE_STATE_CLEARED);
  ASSERT_TRUE(cleared.ok());
  EXPECT_EQ(*cleared, *objected + 1);
  auto again = Check("alice");
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->allowed());
  EXPECT_EQ(again->reason(), v1::DECISION_REASON_ALLOWED_DEFAULT);
}

TEST_F(IntegrationTest, UnknownUserIsDeniedForUnknownAge) {
  // The default policy requires a known age everywhere (rule 7 comes before
  // the legal basis, rule 10).
  auto unknown = Check("nobody");
  ASSERT_TRUE(unknown.ok());
  EXPECT_FALSE(unknown->allowed());
  EXPECT_EQ(unknown->reason(), v1::DECISION_REASON_DENIED_MINOR);
}

TEST_F(IntegrationTest, ConsentJurisdictionNeedsConsentAndConsentAllows) {
  v1::UpdateSubjectRequest request;
  request.set_user_id("bob");
  request.mutable_attributes()->set_jurisdiction("US-CA");
  request.mutable_attributes()->mutable_birth_date()->set_year(1980);
  request.mutable_attributes()->mutable_birth_date()->set_month(1);
  request.mutable_attributes()->mutable_birth_date()->set_day(1);
  *request.mutable_update_mask()->add_paths() = "jurisdiction";
  *request.mutable_update_mask()->add_paths() = "birth_date";
  ASSERT_TRUE(client_->UpdateSubject(request).ok());
  EXPECT_EQ(Check("bob")->reason(), v1::DECISION_REASON_DENIED_NO_CONSENT);
  ASSERT_TRUE(Set("bob", v1::PREFERENCE_STATE_CONSENTED).ok());
  auto allowed = Check("bob");
  ASSERT_TRUE(allowed.ok());
  EXPECT_EQ(allowed->reason(), v1::DECISION_REASON_ALLOWED_CONSENT);
}

TEST_F(IntegrationTest, AcknowledgedObjectionSurvivesKill9) {
  MakeUkAdult("alice");
  auto revision = Set("alice", v1::PREFERENCE_STATE_OBJECTED);
  ASSERT_TRUE(revision.ok()) << revision.status();
  // No graceful shutdown: the process dies right after the acknowledgement.
  EXPECT_EQ(server_->Kill9(), 128 + SIGKILL);
  Start();
  auto decision = Check("alice");
  ASSERT_TRUE(decision.ok()) << decision.status();
  EXPECT_EQ(decision->reason(), v1::DECISION_REASON_DENIED_OBJECTION);
  EXPECT_EQ(decision->revision(), *revision);
  // The history index's newest entries were only in memory: rebuilt from
  // the events at the restart.
  v1::ListHistoryRequest history;
  history.set_user_id("alice");
  auto events = client_->ListHistory(history);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->events_size(), 2);
  EXPECT_EQ(events->events(0).kind(), v1::CHANGE_KIND_SUBJECT_ATTRIBUTES);
  EXPECT_EQ(events->events(1).kind(), v1::CHANGE_KIND_PREFERENCE);
  EXPECT_EQ(events->events(1).revision(), *revision);
  // Revisions continue after the restart.
  auto next = Set("alice", v1::PREFERENCE_STATE_CLEARED);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(*next, *revision + 1);
}

TEST_F(IntegrationTest, SigtermDrainsAndClosesTheStore) {
  MakeUkAdult("alice");
  EXPECT_EQ(server_->Terminate(), 0);
  EXPECT_THAT(server_->Log(), HasSubstr("store closed cleanly"));
  Start();
  auto subject = client_->GetSubject([] {
    v1::GetSubjectRequest r;
    r.set_user_id("alice");
    return r;
  }());
  ASSERT_TRUE(subject.ok());
  EXPECT_EQ(subject->subject().attributes().jurisdiction(), "GB");
}

// SIGTERM with writes in flight: every acknowledged write is kept across
// the restart, with its revision; the others end UNAVAILABLE (refused
// while draining, or the server gone) or CANCELLED (still queued in gRPC
// when it stopped). Such a write may or may not have been applied — an
// answer cut off by the shutdown looks the same to the client — which is
// what request_id is for. consentd exits 0 and closes the store cleanly.
TEST_F(IntegrationTest, WritesInFlightAtSigtermAreAnsweredAndKept) {
  constexpr int kWriters = 8;
  absl::Mutex mu;
  std::vector<std::pair<std::string, int64_t>> acknowledged;  // guarded by mu
  std::vector<std::pair<std::string, absl::Status>> refused;  // guarded by mu
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      for (int i = 0;; ++i) {
        const std::string user = absl::StrCat("writer-", w, "-", i);
        auto revision = Set(user, v1::PREFERENCE_STATE_OBJECTED);
        absl::MutexLock lock(&mu);
        if (!revision.ok()) {
          refused.emplace_back(user, revision.status());
          return;  // the server is going away
        }
        acknowledged.emplace_back(user, *revision);
      }
    });
  }
  {
    absl::MutexLock lock(&mu);
    auto some = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return acknowledged.size() >= 200; };
    mu.Await(absl::Condition(&some));
  }
  EXPECT_EQ(server_->Terminate(), 0);
  for (std::thread& writer : writers) writer.join();
  EXPECT_THAT(server_->Log(), HasSubstr("store closed cleanly"));

  Start();
  absl::MutexLock lock(&mu);
  ASSERT_EQ(refused.size(), static_cast<size_t>(kWriters));
  for (const auto& [user, revision] : acknowledged) {
    v1::GetSubjectRequest request;
    request.set_user_id(user);
    auto subject = client_->GetSubject(request);
    ASSERT_TRUE(subject.ok()) << user << ": " << subject.status();
    EXPECT_EQ(subject->subject().revision(), revision) << user;
    ASSERT_EQ(subject->subject().preferences_size(), 1) << user;
    EXPECT_EQ(subject->subject().preferences(0).state(), v1::PREFERENCE_STATE_OBJECTED);
  }
  for (const auto& [user, status] : refused) {
    EXPECT_TRUE(status.code() == absl::StatusCode::kUnavailable ||
                status.code() == absl::StatusCode::kCancelled)
        << user << ": " << status;
  }
}

TEST_F(IntegrationTest, InvalidIdsAreInvalidArgumentNamingTheField) {
  v1::CheckRequest check;
  check.set_purpose("ai_training");
  check.set_user_id(std::string(129, 'u'));
  *check.mutable_content() = Post("");
  auto response = client_->Check(check);
  EXPECT_EQ(response.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      FieldViolations(response.status()),
      ElementsAre("user_id: is 129 bytes; at most 128 allowed", "content.content_id: is required"));

  v1::SetPreferenceRequest set;
  set.set_user_id("bad\x01id");
  set.set_purpose("ai_training");
  set.set_state(v1::PREFERENCE_STATE_OBJECTED);
  auto written = client_->SetPreference(set);
  EXPECT_EQ(written.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(FieldViolations(written.status()),
              ElementsAre("user_id: contains a control character"));
}

TEST_F(IntegrationTest, UnknownPurposeIsInvalidArgument) {
  auto decision = Check("alice", "ai_training.telepathy");
  EXPECT_EQ(decision.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(FieldViolations(decision.status()),
              ElementsAre("purpose: \"ai_training.telepathy\" is not defined by policy "
                          "version 2026-11-27.1"));
  auto written = Set("alice", v1::PREFERENCE_STATE_OBJECTED, "Bad-Purpose");
  EXPECT_EQ(written.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(FieldViolations(written.status()),
              ElementsAre("purpose: must match [a-z0-9_]+(.[a-z0-9_]+)*"));
}

TEST_F(IntegrationTest, BatchCheckKeepsRequestOrder) {
  MakeUkAdult("alice");
  MakeUkAdult("carol");
  ASSERT_TRUE(Set("carol", v1::PREFERENCE_STATE_OBJECTED).ok());
  v1::BatchCheckRequest request;
  request.set_purpose("ai_training");
  // alice allowed, carol objected, dave unknown (age unknown), alice's
  // friends-only post, then carol and alice again.
  const std::vector<std::pair<std::string, v1::Visibility>> items = {
      {"alice", v1::VISIBILITY_PUBLIC}, {"carol", v1::VISIBILITY_PUBLIC},
      {"dave", v1::VISIBILITY_PUBLIC},  {"alice", v1::VISIBILITY_FRIENDS},
      {"carol", v1::VISIBILITY_PUBLIC}, {"alice", v1::VISIBILITY_PUBLIC}};
  for (size_t i = 0; i < items.size(); ++i) {
    v1::CheckItem* item = request.add_items();
    item->set_user_id(items[i].first);
    *item->mutable_content() = Post(absl::StrCat("p", i), items[i].second);
  }
  auto response = client_->BatchCheck(request);
  ASSERT_TRUE(response.ok()) << response.status();
  std::vector<v1::DecisionReason> reasons;
  for (const auto& d : response->decisions()) reasons.push_back(d.reason());
  EXPECT_THAT(
      reasons,
      ElementsAre(v1::DECISION_REASON_ALLOWED_DEFAULT, v1::DECISION_REASON_DENIED_OBJECTION,
                  v1::DECISION_REASON_DENIED_MINOR, v1::DECISION_REASON_DENIED_NOT_PUBLIC,
                  v1::DECISION_REASON_DENIED_OBJECTION, v1::DECISION_REASON_ALLOWED_DEFAULT));
  // Each decision whole (allowed, reason, policy version, revision; the
  // batch's response is written by hand) is the one Check gives.
  for (int i = 0; i < request.items_size(); ++i) {
    v1::CheckRequest one;
    one.set_purpose(request.purpose());
    one.set_user_id(request.items(i).user_id());
    *one.mutable_content() = request.items(i).content();
    auto single = client_->Check(one);
    ASSERT_TRUE(single.ok()) << single.status();
    EXPECT_EQ(response->decisions(i).SerializeAsString(), single->decision().SerializeAsString())
        << i << ": " << response->decisions(i).ShortDebugString() << " vs "
        << single->decision().ShortDebugString();
  }
  EXPECT_FALSE(response->decisions(0).policy_version().empty());
  EXPECT_GT(response->decisions(0).revision(), 0);
  // The registry's revision when the items were read: the three writes
  // above, and no more (the checks wrote nothing).
  EXPECT_EQ(response->revision(), 3);
}

// An item whose own fields are invalid is answered with its error (never
// allowed) and the others are decided, now and as_of; a problem of the
// request as a whole still fails the call, whatever its items.
TEST_F(IntegrationTest, BatchCheckAnswersABadItemWithItsErrorAndDecidesTheRest) {
  MakeUkAdult("alice");
  MakeUkAdult("carol");
  ASSERT_TRUE(Set("carol", v1::PREFERENCE_STATE_OBJECTED).ok());
  v1::BatchCheckRequest request;
  request.set_purpose("ai_training");
  auto add = [&](const std::string& user, const v1::Content& content) {
    v1::CheckItem* item = request.add_items();
    item->set_user_id(user);
    *item->mutable_content() = content;
    return item;
  };
  add("alice", Post("p0"));
  add("", Post("p1"));
  add("carol", Post("p2"));
  add("alice", Post("p3"))->clear_content();
  v1::Content untyped = Post("p4");
  untyped.set_content_type(v1::CONTENT_TYPE_UNSPECIFIED);
  add("alice", untyped);
  v1::Content ahead = Post("p5");
  ahead.mutable_create_time()->set_seconds(4'102'444'800);  // 2100-01-01
  add("alice", ahead);
  add("alice", Post("p6"));
  const std::vector<std::string> expected_errors = {
      "",
      "items[1].user_id: is required",
      "",
      "items[3].content: is required",
      "items[4].content.content_type: is required",
      "items[5].content.create_time: is 2100-01-01T00:00:00+00:00, more than 5 minutes after the "
      "evaluation time ",
      ""};
  const std::vector<v1::DecisionReason> expected_reasons = {
      v1::DECISION_REASON_ALLOWED_DEFAULT,  v1::DECISION_REASON_UNSPECIFIED,
      v1::DECISION_REASON_DENIED_OBJECTION, v1::DECISION_REASON_UNSPECIFIED,
      v1::DECISION_REASON_UNSPECIFIED,      v1::DECISION_REASON_UNSPECIFIED,
      v1::DECISION_REASON_ALLOWED_DEFAULT};
  auto expect_answers = [&](const v1::BatchCheckResponse& response) {
    ASSERT_EQ(response.decisions_size(), 7);
    for (int i = 0; i < 7; ++i) {
      const v1::Decision& d = response.decisions(i);
      EXPECT_EQ(d.reason(), expected_reasons[i]) << i;
      if (expected_errors[i].empty()) {
        EXPECT_FALSE(d.has_error()) << i;
        continue;
      }
      EXPECT_FALSE(d.allowed()) << i;
      EXPECT_EQ(d.policy_version(), "") << i;
      EXPECT_EQ(d.revision(), 0) << i;
      EXPECT_EQ(d.error().code(), static_cast<int>(absl::StatusCode::kInvalidArgument)) << i;
      EXPECT_THAT(d.error().message(), ::testing::StartsWith(expected_errors[i])) << i;
      ASSERT_EQ(d.error().details_size(), 1) << i;
      google::rpc::BadRequest bad_request;
      ASSERT_TRUE(d.error().details(0).UnpackTo(&bad_request)) << i;
      ASSERT_EQ(bad_request.field_violations_size(), 1) << i;
      EXPECT_EQ(bad_request.field_violations(0).field(),
                expected_errors[i].substr(0, expected_errors[i].find(':')))
          << i;
    }
  };
  auto now = client_->BatchCheck(request);
  ASSERT_TRUE(now.ok()) << now.status();
  expect_answers(*now);
  EXPECT_EQ(now->revision(), 3);

  *request.mutable_as_of() = ToProto(absl::Now());
  auto as_of = client_->BatchCheck(request);
  ASSERT_TRUE(as_of.ok()) << as_of.status();
  expect_answers(*as_of);

  // The request's own problems fail the call, naming only them.
  request.clear_as_of();
  request.set_purpose("ai_training.telepathy");
  auto unknown_purpose = client_->BatchCheck(request);
  EXPECT_EQ(unknown_purpose.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(FieldViolations(unknown_purpose.status()),
              ElementsAre("purpose: \"ai_training.telepathy\" is not defined by policy "
                          "version 2026-11-27.1"));
  request.set_purpose("ai_training");
  request.set_min_revision(1'000);
  EXPECT_EQ(client_->BatchCheck(request).status().code(), absl::StatusCode::kFailedPrecondition);
}

// Bytes that do not parse as a request are the caller's error.
TEST_F(IntegrationTest, MalformedBatchCheckIsInvalidArgument) {
  auto channel = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  // items (2), length 5, but only two bytes follow.
  const std::string bytes = std::string("\x12\x05", 2) + "ab";
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1), response;
  grpc::ClientContext context;
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(&context, "/consent.v1.ConsentRegistry/BatchCheck", grpc::StubOptions(), &request,
                 &response, [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(),
            "the request is not a well-formed consent.v1.BatchCheckRequest");
}

TEST_F(IntegrationTest, BatchLimitsAreEnforced) {
  v1::BatchCheckRequest checks;
  checks.set_purpose("ai_training");
  for (int i = 0; i < 10001; ++i) {
    v1::CheckItem* item = checks.add_items();
    item->set_user_id("u");
    *item->mutable_content() = Post("p");
  }
  auto too_many = client_->BatchCheck(checks);
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(FieldViolations(too_many.status()),
              ElementsAre("items: 10001 items; at most 10000 allowed per batch"));
  checks.mutable_items()->RemoveLast();
  auto at_limit = client_->BatchCheck(checks);
  ASSERT_TRUE(at_limit.ok()) << at_limit.status();
  EXPECT_EQ(at_limit->decisions_size(), 10000);

  v1::BatchSetPreferencesRequest writes;
  for (int i = 0; i < 1001; ++i) {
    v1::SetPreferenceRequest* item = writes.add_requests();
    item->set_user_id(absl::StrCat("user-", i));
    item->set_purpose("ai_training");
    item->set_state(v1::PREFERENCE_STATE_OBJECTED);
  }
  auto too_many_writes = client_->BatchSetPreferences(writes);
  EXPECT_EQ(too_many_writes.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(FieldViolations(too_many_writes.status()),
              ElementsAre("requests: 1001 items; at most 1000 allowed per batch"));
  EXPECT_EQ(client_->BatchCheck(v1::BatchCheckRequest()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(IntegrationTest, BatchSetPreferencesIsAtomic) {
  MakeUkAdult("alice");
  MakeUkAdult("bob");
  v1::BatchSetPreferencesRequest request;
  auto add = [&](const std::string& user, int64_t expected) {
    v1::SetPreferenceRequest* item = request.add_requests();
    item->set_user_id(user);
    item->set_purpose("ai_training");
    item->set_state(v1::PREFERENCE_STATE_OBJECTED);
    if (expected >= 0) item->set_expected_revision(expected);
  };
  add("alice", -1);
  add("bob", 999);  // wrong: the whole batch must fail
  auto failed = client_->BatchSetPreferences(request);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(Check("alice")->reason(), v1::DECISION_REASON_ALLOWED_DEFAULT);

  request.mutable_requests(1)->clear_expected_revision();
  auto ok = client_->BatchSetPreferences(request);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_THAT(ok->revisions(), ElementsAre(3, 4));
  EXPECT_EQ(ok->revision(), 4);
  EXPECT_EQ(Check("alice")->reason(), v1::DECISION_REASON_DENIED_OBJECTION);
  EXPECT_EQ(Check("bob")->reason(), v1::DECISION_REASON_DENIED_OBJECTION);
}

TEST_F(IntegrationTest, StaleExpectedRevisionIsAbortedNamingCurrent) {
  MakeUkAdult("alice");  // revision 1
  v1::SetPreferenceRequest request;
  request.set_user_id("alice");
  request.set_purpose("ai_training");
  request.set_state(v1::PREFERENCE_STATE_OBJECTED);
  request.set_expected_revision(0);
  auto stale = client_->SetPreference(request);
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(stale.status().message(),
            "expected_revision 0 does not match the subject's current revision 1");
  request.set_expected_revision(1);
  auto fresh = client_->SetPreference(request);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->revision(), 2);
  EXPECT_EQ(fresh->preference().state(), v1::PREFERENCE_STATE_OBJECTED);
  EXPECT_EQ(fresh->preference().revision(), 2);
}

TEST_F(IntegrationTest, SetPreferenceAnswersThePreferenceItStored) {
  MakeUkAdult("alice");
  v1::SetPreferenceRequest request = testing::PreferenceOf("alice", v1::PREFERENCE_STATE_OBJECTED);
  request.set_request_id("settings-7");
  *request.mutable_effective_time() = ToProto(absl::FromUnixSeconds(1'767'225'600));
  request.mutable_source()->set_channel("settings_page");
  request.mutable_source()->set_actor("user");
  auto first = client_->SetPreference(request);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->preference().purpose(), "ai_training");
  EXPECT_EQ(first->preference().state(), v1::PREFERENCE_STATE_OBJECTED);
  EXPECT_EQ(first->preference().effective_time().seconds(), 1'767'225'600);
  EXPECT_EQ(first->preference().source().channel(), "settings_page");
  EXPECT_EQ(first->preference().source().actor(), "user");
  EXPECT_EQ(first->preference().revision(), first->revision());
  EXPECT_TRUE(first->preference().has_update_time());

  v1::GetSubjectRequest get;
  get.set_user_id("alice");
  auto subject = client_->GetSubject(get);
  ASSERT_TRUE(subject.ok()) << subject.status();
  ASSERT_EQ(subject->subject().preferences_size(), 1);
  EXPECT_EQ(subject->subject().preferences(0).SerializeAsString(),
            first->preference().SerializeAsString());

  // A replay answers the same preference; a CLEARED write answers none.
  auto replay = client_->SetPreference(request);
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_EQ(replay->SerializeAsString(), first->SerializeAsString());
  auto cleared =
      client_->SetPreference(testing::PreferenceOf("alice", v1::PREFERENCE_STATE_CLEARED));
  ASSERT_TRUE(cleared.ok()) << cleared.status();
  EXPECT_EQ(cleared->revision(), first->revision() + 1);
  EXPECT_FALSE(cleared->has_preference());
}

TEST_F(IntegrationTest, DeletedSubjectIsDeniedAndTakesNoWrites) {
  MakeUkAdult("alice");
  v1::DeleteSubjectRequest request;
  request.set_user_id("alice");
  auto deleted = client_->DeleteSubject(request);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(Check("alice")->reason(), v1::DECISION_REASON_DENIED_ACCOUNT_DELETED);
  EXPECT_EQ(Set("alice", v1::PREFERENCE_STATE_CONSENTED).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(client_->DeleteSubject(request).status().code(), absl::StatusCode::kAlreadyExists);
  v1::GetSubjectRequest get;
  get.set_user_id("alice");
  auto subject = client_->GetSubject(get);
  ASSERT_TRUE(subject.ok());
  EXPECT_EQ(subject->subject().attributes().account_state(), v1::ACCOUNT_STATE_DELETED);
  EXPECT_FALSE(subject->subject().attributes().has_birth_date());
  EXPECT_TRUE(subject->subject().has_delete_time());
}

TEST_F(IntegrationTest, UpdateSubjectValidatesTheMask) {
  v1::UpdateSubjectRequest request;
  request.set_user_id("alice");
  request.mutable_attributes()->set_jurisdiction("Britain");
  request.mutable_update_mask()->add_paths("jurisdiction");
  request.mutable_update_mask()->add_paths("shoe_size");
  auto response = client_->UpdateSubject(request);
  EXPECT_EQ(response.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(FieldViolations(response.status()),
              ElementsAre("attributes.jurisdiction: must be an ISO 3166 code such as GB or US-CA",
                          "update_mask.paths[1]: \"shoe_size\" is not one of jurisdiction, "
                          "birth_date, account_state"));
  request.clear_update_mask();
  EXPECT_THAT(FieldViolations(client_->UpdateSubject(request).status()),
              ElementsAre("update_mask: is required: name the attributes to set"));
}

TEST_F(IntegrationTest, GetSubjectOfUnknownUserIsNotFound) {
  v1::GetSubjectRequest request;
  request.set_user_id("nobody");
  EXPECT_EQ(client_->GetSubject(request).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(IntegrationTest, MinRevisionAheadOfRegistryFails) {
  v1::CheckRequest request;
  request.set_purpose("ai_training");
  request.set_user_id("alice");
  *request.mutable_content() = Post("p");
  request.set_min_revision(5);
  EXPECT_EQ(client_->Check(request).status().code(), absl::StatusCode::kFailedPrecondition);
  request.set_min_revision(0);
  EXPECT_TRUE(client_->Check(request).ok());
}

TEST_F(IntegrationTest, PolicyReloadSwapsAndRejectsBadFiles) {
  // Serve a copy of the policy so the test can change it.
  policy_path_ = dir_.Sub("policy.textproto");
  std::string text = testing::ReadFile(testing::DefaultPolicyPath());
  testing::WriteFile(policy_path_, text);
  server_.reset();
  std::filesystem::remove_all(dir_.Sub("data"));
  Start();
  auto policy = client_->GetPolicy();
  ASSERT_TRUE(policy.ok());
  EXPECT_EQ(policy->version(), "2026-11-27.1");

  const std::string old_version = "version: \"2026-11-27.1\"";
  text.replace(text.find(old_version), old_version.size(), "version: \"test-2\"");
  testing::WriteFile(policy_path_, text);
  auto reloaded = client_->ReloadPolicy();
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(reloaded->version(), "test-2");
  EXPECT_EQ(reloaded->previous_version(), "2026-11-27.1");
  EXPECT_EQ(Check("alice")->policy_version(), "test-2");

  testing::WriteFile(policy_path_, "version: \"broken\"\nnot_a_field: 1\n");
  auto rejected = client_->ReloadPolicy();
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(rejected.status().message(), HasSubstr("line 2"));
  EXPECT_EQ(client_->GetPolicy()->version(), "test-2");
}

TEST_F(IntegrationTest, SlowWatcherKeepsServerMemoryBoundedAndCatchesUp) {
  // A backlog of 100,000 events: if the server read ahead for a slow
  // watcher, its memory would grow by the backlog's size.
  constexpr int kBacklog = 100000;
  for (int first = 0; first < kBacklog; first += 1000) {
    v1::BatchSetPreferencesRequest batch;
    for (int i = first; i < first + 1000; ++i) {
      v1::SetPreferenceRequest* item = batch.add_requests();
      item->set_user_id(absl::StrCat("user-", i));
      item->set_purpose("ai_training.generative");
      item->set_state(v1::PREFERENCE_STATE_OBJECTED);
      item->mutable_source()->set_channel("bulk_import_with_a_longer_channel_name");
    }
    ASSERT_TRUE(client_->BatchSetPreferences(batch).ok());
  }
  auto channel = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
  auto stub = v1::ConsentRegistry::NewStub(channel);
  grpc::ClientContext context;
  v1::WatchChangesRequest request;
  request.set_start_revision(1);
  auto reader = stub->WatchChanges(&context, request);
  v1::WatchChangesResponse message;
  ASSERT_TRUE(reader->Read(&message));
  const int64_t rss_before = testing::ResidentBytes(server_->pid());

  // Writes go on while the watcher reads one event per 10 ms for 1.5 s.
  std::atomic<bool> stop{false};
  std::atomic<int> written{0};
  std::thread writer([&] {
    auto client = Client::Connect(server_->address());
    while (!stop.load()) {
      v1::SetPreferenceRequest r;
      r.set_user_id(absl::StrCat("live-", written.load()));
      r.set_purpose("ai_training");
      r.set_state(v1::PREFERENCE_STATE_OBJECTED);
      if (client->SetPreference(r).ok()) written.fetch_add(1);
    }
  });
  int64_t last = message.event().revision();
  for (int i = 0; i < 150; ++i) {
    ASSERT_TRUE(reader->Read(&message));
    ASSERT_EQ(message.event().revision(), last + 1);
    last = message.event().revision();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // the slow consumer
  }
  const int64_t rss_slow = testing::ResidentBytes(server_->pid());
  stop.store(true);
  writer.join();
  RecordProperty("rss_growth_bytes", static_cast<int>(rss_slow - rss_before));
  if (!testing::kAddressSanitizer) {
    EXPECT_LT(rss_slow - rss_before, 16 << 20)
        << "server memory grew by " << (rss_slow - rss_before) << " bytes";
  }

  // Then it catches up: every event, in order, none lost.
  const int64_t total = kBacklog + written.load();
  while (last < total) {
    ASSERT_TRUE(reader->Read(&message));
    if (!message.has_event()) continue;
    ASSERT_EQ(message.event().revision(), last + 1);
    last = message.event().revision();
  }
  EXPECT_EQ(last, total);
  context.TryCancel();
}

TEST(StartupTest, SecondServerOnSameDataDirFailsClearly) {
  TempDir dir;
  ConsentdProcess::Options options;
  options.data_dir = dir.Sub("data");
  auto first = ConsentdProcess::Start(options);
  ASSERT_TRUE(first.ok()) << first.status();
  auto [code, log] = ConsentdProcess::RunToExit(
      {"--listen=127.0.0.1:0", "--metrics_listen=", "--data_dir=" + dir.Sub("data"),
       "--policy=" + testing::DefaultPolicyPath()});
  EXPECT_EQ(code, 1);
  EXPECT_THAT(log, HasSubstr("another consentd"));
}

TEST(StartupTest, BadPolicyFailsNamingTheFile) {
  TempDir dir;
  testing::WriteFile(dir.Sub("bad.textproto"), "version: \"\"\n");
  auto [code, log] = ConsentdProcess::RunToExit(
      {"--listen=127.0.0.1:0", "--metrics_listen=", "--data_dir=" + dir.Sub("data"),
       "--policy=" + dir.Sub("bad.textproto")});
  EXPECT_EQ(code, 1);
  EXPECT_THAT(log, HasSubstr(dir.Sub("bad.textproto")));
  EXPECT_THAT(log, HasSubstr("version is required"));
}

TEST(StartupTest, CorruptDataDirFails) {
  TempDir dir;
  std::filesystem::create_directories(dir.Sub("data"));
  testing::WriteFile(dir.Sub("data/CURRENT"), "MANIFEST-999999\n");
  auto [code, log] = ConsentdProcess::RunToExit(
      {"--listen=127.0.0.1:0", "--metrics_listen=", "--data_dir=" + dir.Sub("data"),
       "--policy=" + testing::DefaultPolicyPath()});
  EXPECT_EQ(code, 1);
  EXPECT_THAT(log, HasSubstr("consentd cannot start"));
  EXPECT_THAT(log, HasSubstr(dir.Sub("data")));
}

TEST(StartupTest, BadSnapshotKeysStopStartUp) {
  TempDir dir;
  testing::WriteFile(dir.Sub("not-a-key.pem"), "hello\n");
  testing::WriteFile(dir.Sub("short.key"), "too short");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--snapshot_signing_key_file=" + dir.Sub("missing.pem"),
       "--snapshot_signing_key_file: cannot read signing key " + dir.Sub("missing.pem")},
      {"--snapshot_signing_key_file=" + dir.Sub("not-a-key.pem"),
       "--snapshot_signing_key_file: " + dir.Sub("not-a-key.pem") +
           " holds no Ed25519 private key in PEM format"},
      {"--pseudonymize_key_file=" + dir.Sub("short.key"),
       "--pseudonymize_key_file: pseudonymization key " + dir.Sub("short.key") +
           " has 9 bytes; at least 16"}};
  for (const auto& [flag, message] : cases) {
    auto [code, log] = ConsentdProcess::RunToExit(
        {flag, "--listen=127.0.0.1:0", "--metrics_listen=", "--data_dir=" + dir.Sub("data"),
         "--policy=" + testing::DefaultPolicyPath()});
    EXPECT_EQ(code, 1) << flag;
    EXPECT_THAT(log, HasSubstr(message)) << flag;
  }
}

TEST(StartupTest, NonLoopbackListenIsRefusedWithoutAuth) {
  TempDir dir;
  auto [code, log] = ConsentdProcess::RunToExit(
      {"--listen=0.0.0.0:0", "--metrics_listen=", "--data_dir=" + dir.Sub("data"),
       "--policy=" + testing::DefaultPolicyPath()});
  EXPECT_EQ(code, 1);
  EXPECT_THAT(log, HasSubstr("is not a loopback address"));
}

TEST(StartupTest, WorkerThreadsOutOfRangeStopsStartUp) {
  TempDir dir;
  for (const char* flag : {"--worker_threads=0", "--worker_threads=1025"}) {
    auto [code, log] =
        ConsentdProcess::RunToExit({flag, "--metrics_listen=", "--data_dir=" + dir.Sub("data"),
                                    "--policy=" + testing::DefaultPolicyPath()});
    EXPECT_EQ(code, 1) << flag;
    EXPECT_THAT(log, HasSubstr("--worker_threads must be between 1 and 1024")) << flag;
  }
}

// With one worker thread (GetSubject, ListHistory), concurrent writes,
// which take none while they wait, each commit exactly once, and the reads
// queued for the one worker see them.
TEST(WorkerThreadsTest, ConcurrentWritesWithOneWorkerAllCommit) {
  TempDir dir;
  ConsentdProcess::Options options;
  options.data_dir = dir.Sub("data");
  options.extra_args = {"--worker_threads=1"};
  auto process = ConsentdProcess::Start(options);
  ASSERT_TRUE(process.ok()) << process.status();
  auto client = Client::Connect((*process)->address());

  constexpr int kWriters = 16;
  std::vector<absl::StatusOr<v1::SetPreferenceResponse>> results(kWriters,
                                                                 absl::UnknownError("not run"));
  std::vector<std::thread> writers;
  for (int i = 0; i < kWriters; ++i) {
    writers.emplace_back([&, i] {
      v1::SetPreferenceRequest request;
      request.set_user_id(absl::StrCat("user-", i));
      request.set_purpose("ai_training");
      request.set_state(v1::PREFERENCE_STATE_OBJECTED);
      results[i] = client->SetPreference(request);
    });
  }
  for (std::thread& writer : writers) writer.join();

  std::set<int64_t> revisions;
  for (int i = 0; i < kWriters; ++i) {
    ASSERT_TRUE(results[i].ok()) << i << ": " << results[i].status();
    revisions.insert(results[i]->revision());
  }
  ASSERT_EQ(revisions.size(), static_cast<size_t>(kWriters));
  EXPECT_EQ(*revisions.rbegin() - *revisions.begin(), kWriters - 1);

  for (int i = 0; i < kWriters; ++i) {
    const std::string user = absl::StrCat("user-", i);
    v1::GetSubjectRequest get;
    get.set_user_id(user);
    auto subject = client->GetSubject(get);
    ASSERT_TRUE(subject.ok()) << subject.status();
    ASSERT_EQ(subject->subject().preferences_size(), 1);
    EXPECT_EQ(subject->subject().preferences(0).state(), v1::PREFERENCE_STATE_OBJECTED);
    EXPECT_EQ(subject->subject().revision(), results[i]->revision());

    v1::ListHistoryRequest history;
    history.set_user_id(user);
    auto events = client->ListHistory(history);
    ASSERT_TRUE(events.ok()) << events.status();
    ASSERT_EQ(events->events_size(), 1);
    EXPECT_EQ(events->events(0).revision(), results[i]->revision());
  }
}

TEST(StartupTest, UnbindableMetricsPortFailsClearly) {
  TempDir dir;
  ConsentdProcess::Options options;
  options.data_dir = dir.Sub("first");
  options.extra_args = {"--metrics_listen=127.0.0.1:0"};
  auto first = ConsentdProcess::Start(options);
  ASSERT_TRUE(first.ok()) << first.status();
  // The first server's gRPC port is taken; binding metrics there must fail.
  auto [code, log] = ConsentdProcess::RunToExit(
      {"--listen=127.0.0.1:0", "--metrics_listen=" + (*first)->address(),
       "--data_dir=" + dir.Sub("second"), "--policy=" + testing::DefaultPolicyPath()});
  EXPECT_EQ(code, 1);
  EXPECT_THAT(log, HasSubstr("cannot serve HTTP on --metrics_listen " + (*first)->address()));
}

}  // namespace
}  // namespace consent
