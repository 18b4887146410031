// Notices over gRPC: RecordNotice and BatchRecordNotices, the notice period
// (PurposeRule.min_notice_days) now and as_of, and GetSubjectSummary. A real
// consentd in-process, on loopback, with a real RocksDB, under
// deploy/policy/notice-period.textproto (28 days in GB and the EU/EEA);
// the test moves the server's clock.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/consent_client.h"
#include "core/proto_time.h"
#include "gmock/gmock.h"
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
    absl::FromCivil(absl::CivilSecond(2026, 1, 1, 0, 0, 0), absl::UTCTimeZone());
constexpr absl::Duration kPeriod = absl::Hours(24 * 28);

std::string NoticePeriodPolicyPath() {
  return std::string(CONSENT_SOURCE_DIR) + "/deploy/policy/notice-period.textproto";
}

v1::RecordNoticeRequest Notice(const std::string& user,
                               std::vector<std::string> purposes = {"ai_training"},
                               const std::string& version = "2026-01") {
  v1::RecordNoticeRequest request;
  request.set_user_id(user);
  request.set_notice_id("ai-notice");
  request.set_notice_version(version);
  for (const std::string& p : purposes) request.add_purposes(p);
  request.set_channel(v1::NOTICE_CHANNEL_EMAIL);
  return request;
}

class NoticesTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(NoticePeriodPolicyPath()); }
  void TearDown() override {
    if (server_) {
      EXPECT_TRUE(server_->Shutdown().ok());
    }
  }

  void StartServer(const std::string& policy) {
    ServerOptions options = testing::InProcessOptions(dir_.Sub("data"), policy);
    auto server = ConsentServer::Start(options, &clock_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = Client::Connect(server_->listen_address());
  }
  void RestartServer() {
    ASSERT_TRUE(server_->Shutdown().ok());
    server_.reset();
    StartServer(NoticePeriodPolicyPath());
  }

  void UkAdult(const std::string& user) {
    auto response = client_->UpdateSubject(testing::UkAdult(user));
    ASSERT_TRUE(response.ok()) << response.status();
  }

  absl::StatusOr<v1::RecordNoticeResponse> Record(const v1::RecordNoticeRequest& request) {
    return client_->RecordNotice(request);
  }

  v1::DecisionReason Reason(const std::string& user, const std::string& purpose = "ai_training",
                            std::optional<absl::Time> as_of = std::nullopt) {
    v1::CheckRequest request = testing::PublicPostCheck(user, purpose);
    if (as_of) *request.mutable_as_of() = ToProto(*as_of);
    auto response = client_->Check(request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? response->decision().reason() : v1::DECISION_REASON_UNSPECIFIED;
  }
  // The same through BatchCheck (the subject index's compact notices).
  v1::DecisionReason BatchReason(const std::string& user,
                                 const std::string& purpose = "ai_training") {
    v1::BatchCheckRequest request;
    request.set_purpose(purpose);
    v1::CheckItem* item = request.add_items();
    item->set_user_id(user);
    *item->mutable_content() = testing::PublicPostCheck(user, purpose).content();
    auto response = client_->BatchCheck(request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() && response->decisions_size() == 1 ? response->decisions(0).reason()
                                                            : v1::DECISION_REASON_UNSPECIFIED;
  }

  TempDir dir_;
  FakeClock clock_{kStart};
  std::unique_ptr<ConsentServer> server_;
  std::unique_ptr<Client> client_;
};

constexpr auto kNotNotified = v1::DECISION_REASON_DENIED_NOT_NOTIFIED;
constexpr auto kDefault = v1::DECISION_REASON_ALLOWED_DEFAULT;

TEST_F(NoticesTest, NoticePeriodCountsFromTheDelivery) {
  UkAdult("alice");
  EXPECT_EQ(Reason("alice"), kNotNotified);
  EXPECT_EQ(BatchReason("alice"), kNotNotified);

  clock_.Advance(absl::Hours(1));
  const absl::Time delivered = clock_.Now();
  auto recorded = Record(Notice("alice"));  // delivery_time unset: now
  ASSERT_TRUE(recorded.ok()) << recorded.status();
  EXPECT_EQ(recorded->revision(), 2);
  EXPECT_EQ(FromProto(recorded->notice().delivery_time()), delivered);
  EXPECT_EQ(FromProto(recorded->notice().record_time()), delivered);

  // The day before the period ends, and the second before: not yet.
  clock_.Advance(kPeriod - absl::Hours(24));
  EXPECT_EQ(Reason("alice"), kNotNotified);
  clock_.Advance(absl::Hours(24) - absl::Seconds(1));
  EXPECT_EQ(Reason("alice"), kNotNotified);
  EXPECT_EQ(BatchReason("alice"), kNotNotified);
  EXPECT_EQ(Reason("alice", "ai_training.generative"), kNotNotified);
  // The moment it ends: allowed, for the purpose and its descendants.
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(Reason("alice"), kDefault);
  EXPECT_EQ(BatchReason("alice"), kDefault);
  EXPECT_EQ(BatchReason("alice", "ai_training.generative"), kDefault);

  // as_of answers from history the same way.
  EXPECT_EQ(Reason("alice", "ai_training", delivered + kPeriod - absl::Seconds(1)), kNotNotified);
  EXPECT_EQ(Reason("alice", "ai_training", delivered + kPeriod), kDefault);
  EXPECT_EQ(Reason("alice", "ai_training", delivered - absl::Seconds(1)), kNotNotified);

  // And after a restart, from the reloaded subject index.
  RestartServer();
  EXPECT_EQ(BatchReason("alice"), kDefault);
  EXPECT_EQ(Reason("alice"), kDefault);

  // An objection still decides first (rule 9).
  v1::SetPreferenceRequest object;
  object.set_user_id("alice");
  object.set_purpose("ai_training");
  object.set_state(v1::PREFERENCE_STATE_OBJECTED);
  ASSERT_TRUE(client_->SetPreference(object).ok());
  EXPECT_EQ(BatchReason("alice"), v1::DECISION_REASON_DENIED_OBJECTION);
}

TEST_F(NoticesTest, ANoticeRecordedLateNeverMakesAnEarlierAsOfAllowed) {
  UkAdult("bob");
  clock_.Advance(absl::Hours(24 * 40));
  const absl::Time recorded_at = clock_.Now();
  // Delivered on kStart, recorded 40 days later: a backfill.
  v1::RecordNoticeRequest late = Notice("bob");
  *late.mutable_delivery_time() = ToProto(kStart);
  auto refused = Record(late);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(),
              HasSubstr("delivery_time: is more than 30 days ago; set backfill to record a late "
                        "delivery"));
  late.set_backfill(true);
  ASSERT_TRUE(Record(late).ok());

  // Now the period (from kStart) has ended.
  EXPECT_EQ(Reason("bob"), kDefault);
  // On day 29 it had ended too, by the delivery date, but nothing was
  // recorded then: as_of answers what the registry knew.
  EXPECT_EQ(Reason("bob", "ai_training", kStart + kPeriod + absl::Hours(24)), kNotNotified);
  EXPECT_EQ(Reason("bob", "ai_training", recorded_at - absl::Seconds(1)), kNotNotified);
  EXPECT_EQ(Reason("bob", "ai_training", recorded_at), kDefault);

  // History keeps both times and the backfill.
  v1::ListHistoryRequest list;
  list.set_user_id("bob");
  auto history = client_->ListHistory(list);
  ASSERT_TRUE(history.ok()) << history.status();
  ASSERT_EQ(history->events_size(), 2);
  const v1::ChangeEvent& event = history->events(1);
  EXPECT_EQ(event.kind(), v1::CHANGE_KIND_NOTICE);
  EXPECT_TRUE(event.notice().backfill());
  EXPECT_EQ(FromProto(event.notice().notice().delivery_time()), kStart);
  EXPECT_EQ(FromProto(event.notice().notice().record_time()), recorded_at);
  EXPECT_EQ(FromProto(event.event_time()), recorded_at);
  EXPECT_EQ(event.notice().notice().revision(), event.revision());
}

TEST_F(NoticesTest, NoticesCoverTheirPurposesAndDescendantsOnly) {
  UkAdult("carol");
  auto recorded = Record(Notice("carol", {"ai_training.generative"}));
  ASSERT_TRUE(recorded.ok()) << recorded.status();
  clock_.Advance(kPeriod);
  EXPECT_EQ(Reason("carol", "ai_training.generative"), kDefault);
  EXPECT_EQ(BatchReason("carol", "ai_training.generative"), kDefault);
  // Not the parent, not a sibling.
  EXPECT_EQ(Reason("carol", "ai_training"), kNotNotified);
  EXPECT_EQ(BatchReason("carol", "ai_training.ranking"), kNotNotified);
}

TEST_F(NoticesTest, ExplainNamesTheNoticeAndWhenThePeriodEnds) {
  UkAdult("dave");
  ASSERT_TRUE(Record(Notice("dave")).ok());
  v1::CheckRequest request = testing::PublicPostCheck("dave", "ai_training.generative");
  request.set_explain(true);
  auto response = client_->Check(request);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->decision().reason(), kNotNotified);
  ASSERT_EQ(response->explanation_size(), 10);
  EXPECT_EQ(response->explanation(9).detail(),
            "legitimate interest with a notice period of 28 days: notice ai-notice version "
            "2026-01 for ai_training delivered at 2026-01-01T00:00:00Z, period ends at "
            "2026-01-29T00:00:00Z");
}

TEST_F(NoticesTest, RecordNoticeValidatesEachField) {
  auto error_of = [&](v1::RecordNoticeRequest request) {
    auto response = Record(request);
    EXPECT_FALSE(response.ok());
    EXPECT_EQ(response.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(response.status().message());
  };
  v1::RecordNoticeRequest r = Notice("erin");
  r.clear_user_id();
  EXPECT_THAT(error_of(r), HasSubstr("user_id: "));
  r = Notice("erin");
  r.clear_notice_id();
  EXPECT_THAT(error_of(r), HasSubstr("notice_id: "));
  r = Notice("erin");
  r.set_notice_version(std::string(129, 'v'));
  EXPECT_THAT(error_of(r), HasSubstr("notice_version: "));
  r = Notice("erin", {});
  EXPECT_THAT(error_of(r), HasSubstr("purposes: at least one purpose is required"));
  r = Notice("erin", {"ai_training", "marketing"});
  EXPECT_THAT(error_of(r), HasSubstr("purposes[1]: \"marketing\" is not defined by policy"));
  r = Notice("erin", {"ai_training", "ai_training"});
  EXPECT_THAT(error_of(r), HasSubstr("purposes[1]: repeats purposes[0]"));
  r = Notice("erin");
  r.set_channel(v1::NOTICE_CHANNEL_UNSPECIFIED);
  EXPECT_THAT(error_of(r), HasSubstr("channel: is required: EMAIL, IN_APP or BANNER"));
  r.set_channel(static_cast<v1::NoticeChannel>(42));
  EXPECT_THAT(error_of(r), HasSubstr("channel: is not a known notice channel"));
  r = Notice("erin");
  *r.mutable_delivery_time() = ToProto(kStart + absl::Minutes(6));
  EXPECT_THAT(error_of(r), HasSubstr("delivery_time: is 2026-01-01T00:06:00+00:00, in the future"));
  r.set_backfill(true);
  *r.mutable_delivery_time() = ToProto(absl::UnixEpoch() - absl::Seconds(1));
  EXPECT_THAT(error_of(r), HasSubstr("delivery_time: is before 1970"));
  // Within the clock skew and within 30 days: accepted.
  r = Notice("erin");
  *r.mutable_delivery_time() = ToProto(kStart + absl::Minutes(5));
  EXPECT_TRUE(Record(r).ok());
  r = Notice("erin", {"ai_training"}, "older");
  *r.mutable_delivery_time() = ToProto(kStart - absl::Hours(24 * 30));
  EXPECT_TRUE(Record(r).ok());
}

TEST_F(NoticesTest, TheRecordKeepsEachNoticeVersionsFirstDelivery) {
  // RecordNotice creates the subject's record, as SetPreference does.
  v1::RecordNoticeRequest first = Notice("frank");
  *first.mutable_delivery_time() = ToProto(kStart - absl::Hours(48));
  ASSERT_TRUE(Record(first).ok());
  v1::RecordNoticeRequest again = Notice("frank");  // a reminder, now
  auto reminded = Record(again);
  ASSERT_TRUE(reminded.ok());
  EXPECT_EQ(reminded->revision(), 2);
  EXPECT_EQ(FromProto(reminded->notice().delivery_time()), kStart - absl::Hours(48));
  EXPECT_EQ(reminded->notice().revision(), 1);
  v1::RecordNoticeRequest earlier = Notice("frank");  // an earlier delivery, found later
  *earlier.mutable_delivery_time() = ToProto(kStart - absl::Hours(72));
  auto replaced = Record(earlier);
  ASSERT_TRUE(replaced.ok());
  EXPECT_EQ(FromProto(replaced->notice().delivery_time()), kStart - absl::Hours(72));
  EXPECT_EQ(replaced->notice().revision(), 3);
  ASSERT_TRUE(Record(Notice("frank", {"ai_training"}, "2026-02")).ok());

  v1::GetSubjectRequest get;
  get.set_user_id("frank");
  auto subject = client_->GetSubject(get);
  ASSERT_TRUE(subject.ok()) << subject.status();
  ASSERT_EQ(subject->subject().notices_size(), 2);
  EXPECT_EQ(subject->subject().notices(0).notice_version(), "2026-01");
  EXPECT_EQ(subject->subject().notices(1).notice_version(), "2026-02");
  EXPECT_EQ(subject->subject().revision(), 4);

  // A notice version covers what it covered.
  auto differs = Record(Notice("frank", {"ai_training", "ai_training.generative"}));
  ASSERT_FALSE(differs.ok());
  EXPECT_EQ(differs.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(differs.status().message(),
              HasSubstr("notice ai-notice version 2026-01 was recorded for this user at revision 3 "
                        "covering other purposes (ai_training)"));

  // Deleting the account drops the notices from the record; history keeps them.
  v1::DeleteSubjectRequest del;
  del.set_user_id("frank");
  ASSERT_TRUE(client_->DeleteSubject(del).ok());
  subject = client_->GetSubject(get);
  ASSERT_TRUE(subject.ok());
  EXPECT_EQ(subject->subject().notices_size(), 0);
  auto after_delete = Record(Notice("frank"));
  ASSERT_FALSE(after_delete.ok());
  EXPECT_EQ(after_delete.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(NoticesTest, RequestIdReplaysTheFirstAnswer) {
  v1::RecordNoticeRequest request = Notice("gina");
  request.set_request_id("notice-1");
  auto first = Record(request);
  ASSERT_TRUE(first.ok()) << first.status();
  clock_.Advance(absl::Minutes(1));
  auto replay = Record(request);
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_EQ(replay->revision(), first->revision());
  EXPECT_EQ(replay->notice().SerializeAsString(), first->notice().SerializeAsString());
  v1::ListHistoryRequest list;
  list.set_user_id("gina");
  EXPECT_EQ(client_->ListHistory(list)->events_size(), 1);
  request.add_purposes("ai_training.generative");
  auto conflict = Record(request);
  ASSERT_FALSE(conflict.ok());
  EXPECT_EQ(conflict.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(conflict.status().message(), HasSubstr("request_id: was already used"));
}

TEST_F(NoticesTest, BatchRecordNoticesIsAtomicAndBounded) {
  v1::BatchRecordNoticesRequest batch;
  for (int i = 0; i < 3; ++i) *batch.add_requests() = Notice(absl::StrCat("user-", i));
  auto response = client_->BatchRecordNotices(batch);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_THAT(response->revisions(), ElementsAre(1, 2, 3));
  EXPECT_EQ(response->revision(), 3);

  // A bad item names itself; nothing is written.
  batch.mutable_requests(1)->set_purposes(0, "nope");
  auto bad = client_->BatchRecordNotices(batch);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("requests[1].purposes[0]: "));
  // An item refused when applied refuses the batch.
  batch.mutable_requests(1)->set_purposes(0, "ai_training.generative");  // user-1 had ai_training
  auto refused = client_->BatchRecordNotices(batch);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  v1::ListHistoryRequest list;
  list.set_user_id("user-0");
  EXPECT_EQ(client_->ListHistory(list)->events_size(), 1);

  v1::BatchRecordNoticesRequest too_many;
  for (int i = 0; i < 10001; ++i) *too_many.add_requests() = Notice(absl::StrCat("u", i));
  auto limit = client_->BatchRecordNotices(too_many);
  ASSERT_FALSE(limit.ok());
  EXPECT_EQ(limit.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(limit.status().message(),
              HasSubstr("requests: 10001 items; at most 10000 allowed per batch"));
  too_many.mutable_requests()->RemoveLast();
  auto full = client_->BatchRecordNotices(too_many);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->revisions_size(), 10000);
  EXPECT_EQ(full->revision(), 10003);

  v1::VerifyAuditLogRequest verify;
  auto verified = client_->VerifyAuditLog(verify);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_TRUE(verified->ok());
  EXPECT_EQ(verified->verified_count(), 10003);
}

TEST_F(NoticesTest, WatchChangesFiltersNoticesByTheirPurposes) {
  ASSERT_TRUE(Record(Notice("hal", {"ai_training.generative"})).ok());  // revision 1
  ASSERT_TRUE(Record(Notice("hal", {"ai_training"}, "2026-02")).ok());  // revision 2
  v1::WatchChangesRequest request;
  request.set_start_revision(1);
  request.set_purpose("ai_training.ranking");
  std::vector<int64_t> revisions;
  absl::Status status = client_->Watch(request, [&](const v1::WatchChangesResponse& message) {
    if (message.has_event()) {
      revisions.push_back(message.event().revision());
      EXPECT_EQ(message.event().kind(), v1::CHANGE_KIND_NOTICE);
    }
    return !message.has_checkpoint();
  });
  EXPECT_TRUE(status.ok() || status.code() == absl::StatusCode::kCancelled) << status;
  // The generative notice does not cover ranking; the ai_training one does.
  EXPECT_THAT(revisions, ElementsAre(2));
}

TEST_F(NoticesTest, SummaryShowsEachPurposeInPlainWords) {
  v1::GetSubjectSummaryRequest request;
  request.set_user_id("ivy");
  auto unknown = client_->GetSubjectSummary(request);
  ASSERT_TRUE(unknown.ok()) << unknown.status();
  EXPECT_FALSE(unknown->recorded());
  ASSERT_EQ(unknown->purposes_size(), 4);
  EXPECT_EQ(unknown->purposes(0).purpose(), "ai_training");
  EXPECT_EQ(unknown->purposes(0).reason(), v1::DECISION_REASON_DENIED_MINOR);
  EXPECT_EQ(unknown->purposes(0).legal_basis(), v1::LEGAL_BASIS_CONSENT);

  UkAdult("ivy");
  ASSERT_TRUE(Record(Notice("ivy")).ok());
  clock_.Advance(absl::Hours(24));
  auto waiting = client_->GetSubjectSummary(request);
  ASSERT_TRUE(waiting.ok()) << waiting.status();
  EXPECT_TRUE(waiting->recorded());
  EXPECT_EQ(waiting->jurisdiction(), "GB");
  EXPECT_EQ(waiting->revision(), 2);
  EXPECT_EQ(FromProto(waiting->evaluation_time()), kStart + absl::Hours(24));
  const v1::PurposeSummary& s = waiting->purposes(1);
  EXPECT_EQ(s.purpose(), "ai_training.generative");
  EXPECT_EQ(s.description(), "Training generative models (text, image, audio)");
  EXPECT_FALSE(s.allowed());
  EXPECT_EQ(s.reason(), kNotNotified);
  EXPECT_EQ(s.legal_basis(), v1::LEGAL_BASIS_LEGITIMATE_INTEREST);
  EXPECT_EQ(s.min_notice_days(), 28);
  EXPECT_EQ(s.notice().notice_id(), "ai-notice");
  EXPECT_EQ(FromProto(s.notice_period_end_time()), kStart + kPeriod);
  EXPECT_FALSE(s.has_preference());
  EXPECT_EQ(s.explanation(),
            "Not used yet: you were told about it on 2026-01-01; it can start on 2026-01-29 "
            "unless you object before then.");

  clock_.Advance(kPeriod);
  v1::SetPreferenceRequest object;
  object.set_user_id("ivy");
  object.set_purpose("ai_training.generative");
  object.set_state(v1::PREFERENCE_STATE_OBJECTED);
  object.mutable_source()->set_channel("settings_page");
  ASSERT_TRUE(client_->SetPreference(object).ok());
  auto later = client_->GetSubjectSummary(request);
  ASSERT_TRUE(later.ok());
  EXPECT_EQ(later->purposes(0).reason(), kDefault);
  EXPECT_EQ(later->purposes(0).explanation(),
            "Used: the platform relies on its legitimate interest, and you have not objected. You "
            "can object at any time. You were told about it on 2026-01-01.");
  EXPECT_EQ(later->purposes(1).reason(), v1::DECISION_REASON_DENIED_OBJECTION);
  EXPECT_EQ(later->purposes(1).preference().source().channel(), "settings_page");
  EXPECT_EQ(later->purposes(1).explanation(), "Not used: you objected on 2026-01-30.");

  // A later objection on an ancestor overrides a consent (rule 9): the
  // summary shows the objection that decides, not the consent.
  v1::SetPreferenceRequest consent = object;
  consent.set_purpose("ai_training.ranking");
  consent.set_state(v1::PREFERENCE_STATE_CONSENTED);
  ASSERT_TRUE(client_->SetPreference(consent).ok());
  EXPECT_EQ(client_->GetSubjectSummary(request)->purposes(2).reason(),
            v1::DECISION_REASON_ALLOWED_CONSENT);
  clock_.Advance(absl::Hours(24));
  object.set_purpose("ai_training");
  ASSERT_TRUE(client_->SetPreference(object).ok());
  auto overridden = client_->GetSubjectSummary(request);
  ASSERT_TRUE(overridden.ok());
  const v1::PurposeSummary& ranking = overridden->purposes(2);
  EXPECT_EQ(ranking.purpose(), "ai_training.ranking");
  EXPECT_EQ(ranking.reason(), v1::DECISION_REASON_DENIED_OBJECTION);
  EXPECT_EQ(ranking.preference().purpose(), "ai_training");
  EXPECT_EQ(ranking.explanation(), "Not used: you objected on 2026-01-31.");

  request.set_user_id("");
  auto bad = client_->GetSubjectSummary(request);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("user_id: "));
}

}  // namespace
}  // namespace consent
