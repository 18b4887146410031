// Registry's own logic against a fake ConsentStore (in memory, commits
// applied on the calling thread): what the registry decides before and
// after the store — validation, the write rules, replays and conflicts,
// min_revision, and that a failing store fails the call closed. The same
// behaviour over the real RocksDB store is tested by storage_test,
// history_test and the integration tests.
#include "server/registry.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "core/policy.h"
#include "google/rpc/error_details.pb.h"
#include "gtest/gtest.h"
#include "tests/fake_clock.h"
#include "tests/test_util.h"

namespace consent {
namespace {

const absl::Time kStart =
    absl::FromCivil(absl::CivilSecond(2026, 6, 1, 0, 0, 0), absl::UTCTimeZone());

// A ConsentStore in memory. Commits are applied at once, on the calling
// thread, with the store's contract: updates in order, consecutive
// revisions, request ids (the commit's and each update's) replayed or in
// conflict, a replayed update answered with its first reply. `fail_next` makes the
// next call that reaches it fail with that status instead.
class FakeStore final : public storage::ConsentStore {
 public:
  absl::Status fail_next;
  int commits = 0;  // Commit calls that reached the store

  absl::StatusOr<storage::CommitResult> Commit(std::vector<storage::SubjectUpdate> updates,
                                               absl::Time now,
                                               const storage::RequestKey& request) override {
    ++commits;
    if (!fail_next.ok()) return std::exchange(fail_next, absl::OkStatus());
    storage::CommitResult result;
    if (!request.request_id.empty()) {
      auto seen = requests_.find(request.request_id);
      if (seen != requests_.end()) {
        if (seen->second.first != request.fingerprint) {
          result.outcome = storage::CommitResult::Outcome::kRequestIdConflict;
          result.conflict_revision = seen->second.second.back();
          return result;
        }
        result.outcome = storage::CommitResult::Outcome::kReplayed;
        result.revisions = seen->second.second;
        result.replayed.assign(result.revisions.size(), true);
        result.subjects.resize(result.revisions.size());
        result.replies.resize(result.revisions.size());
        return result;
      }
    }
    // Applied to copies: an update's error leaves the store as it was.
    std::map<std::string, v1::Subject> subjects = subjects_;
    std::vector<v1::ChangeEvent> events;
    int64_t revision = revision_;
    std::map<std::string, std::pair<std::string, std::vector<int64_t>>> update_ids;
    std::map<std::string, std::string> update_replies;
    bool applied = false;
    for (size_t i = 0; i < updates.size(); ++i) {
      storage::SubjectUpdate& update = updates[i];
      const storage::RequestKey& key = update.request;
      if (!key.request_id.empty()) {
        auto seen = requests_.find(key.request_id);
        if (seen != requests_.end()) {
          if (seen->second.first != key.fingerprint) {
            storage::CommitResult conflict;
            conflict.outcome = storage::CommitResult::Outcome::kRequestIdConflict;
            conflict.conflict_index = static_cast<int>(i);
            conflict.conflict_revision = seen->second.second[0];
            return conflict;
          }
          result.revisions.push_back(seen->second.second[0]);
          result.replayed.push_back(true);
          result.subjects.emplace_back();
          result.replies.push_back(replies_[key.request_id]);
          continue;
        }
      }
      auto it = subjects.find(update.user_id);
      const bool exists = it != subjects.end();
      v1::Subject subject;
      if (exists) {
        subject = it->second;
      } else {
        subject.set_user_id(update.user_id);
      }
      Context context(exists, revision + 1, now);
      v1::ChangeEvent event;
      if (absl::Status s = update.apply(context, subject, event); !s.ok()) return s;
      ++revision;
      subject.set_revision(revision);
      event.set_revision(revision);
      event.set_user_id(update.user_id);
      result.replies.push_back(update.reply ? update.reply(subject, event) : "");
      subjects[update.user_id] = subject;
      events.push_back(event);
      result.revisions.push_back(revision);
      result.replayed.push_back(false);
      result.subjects.push_back(subject);
      if (!key.request_id.empty()) {
        update_ids[key.request_id] = {key.fingerprint, {revision}};
        update_replies[key.request_id] = result.replies.back();
      }
      applied = true;
    }
    if (!applied) {
      result.outcome = storage::CommitResult::Outcome::kReplayed;
      return result;
    }
    for (auto& [id, record] : update_ids) requests_[id] = std::move(record);
    for (auto& [id, reply] : update_replies) replies_[id] = std::move(reply);
    subjects_ = std::move(subjects);
    for (v1::ChangeEvent& e : events) events_.push_back(std::move(e));
    revision_ = revision;
    if (!request.request_id.empty()) {
      requests_[request.request_id] = {request.fingerprint, result.revisions};
    }
    return result;
  }
  void CommitAsync(std::vector<storage::SubjectUpdate> updates, absl::Time now,
                   storage::RequestKey request,
                   std::function<void(absl::StatusOr<storage::CommitResult>)> done) override {
    done(Commit(std::move(updates), now, request));
  }
  void ImportAsync(std::vector<storage::SubjectUpdate>, absl::Time, storage::ImportStep,
                   std::function<void(absl::StatusOr<storage::CommitResult>)> done) override {
    done(absl::UnimplementedError("the fake store makes no imports"));
  }
  absl::StatusOr<int64_t> ImportedThrough(absl::string_view) override {
    return absl::UnimplementedError("the fake store makes no imports");
  }
  void ApplyLoggedAsync(std::vector<storage::SubjectUpdate>, absl::Time, storage::RequestKey,
                        int64_t,
                        std::function<void(absl::StatusOr<storage::CommitResult>)> done) override {
    done(absl::UnimplementedError("the fake store applies no command log"));
  }
  void ApplyLoggedImportAsync(
      std::vector<storage::SubjectUpdate>, absl::Time, storage::ImportStep, int64_t,
      std::function<void(absl::StatusOr<storage::CommitResult>)> done) override {
    done(absl::UnimplementedError("the fake store applies no command log"));
  }
  absl::StatusOr<int64_t> AppliedSequence() override {
    return absl::UnimplementedError("the fake store applies no command log");
  }
  absl::StatusOr<v1::Subject> GetSubject(absl::string_view user_id) override {
    if (!fail_next.ok()) return std::exchange(fail_next, absl::OkStatus());
    auto it = subjects_.find(std::string(user_id));
    if (it == subjects_.end()) return absl::NotFoundError("no record for this user");
    return it->second;
  }
  absl::Status GetSubjects(absl::Span<const absl::string_view> user_ids, SubjectViewArena* arena,
                           std::vector<const SubjectView*>* out) override {
    if (!fail_next.ok()) return std::exchange(fail_next, absl::OkStatus());
    out->clear();
    for (absl::string_view id : user_ids) {
      auto it = subjects_.find(std::string(id));
      out->push_back(it == subjects_.end() ? nullptr : arena->Add(it->second));
    }
    return absl::OkStatus();
  }
  int64_t CurrentRevision() const override { return revision_; }
  absl::StatusOr<std::vector<std::string>> GetExclusions(absl::string_view,
                                                         absl::string_view) override {
    return std::vector<std::string>();
  }
  absl::StatusOr<std::vector<v1::ChangeEvent>> ReadUserEvents(absl::string_view user_id,
                                                              int64_t after_revision,
                                                              size_t limit) override {
    std::vector<v1::ChangeEvent> out;
    for (const v1::ChangeEvent& e : events_) {
      if (e.user_id() == user_id && e.revision() > after_revision && out.size() < limit) {
        out.push_back(e);
      }
    }
    return out;
  }
  absl::StatusOr<std::vector<v1::ChangeEvent>> ReadEvents(int64_t start_revision,
                                                          size_t limit) override {
    std::vector<v1::ChangeEvent> out;
    for (const v1::ChangeEvent& e : events_) {
      if (e.revision() >= start_revision && out.size() < limit) out.push_back(e);
    }
    return out;
  }
  absl::StatusOr<absl::Time> RecordPolicy(absl::Time now, const std::string& text) override {
    policies_.push_back({now, text});
    return now;
  }
  absl::StatusOr<std::vector<PolicyRecord>> ListPolicies() override { return policies_; }
  absl::StatusOr<std::vector<std::string>> PurposesInUse(const std::vector<std::string>&) override {
    return std::vector<std::string>();
  }
  absl::StatusOr<int64_t> OldestRevision() override { return events_.empty() ? 0 : 1; }
  absl::StatusOr<storage::ChainReport> VerifyChain(int64_t, int64_t) override {
    return absl::UnimplementedError("not in the fake");
  }
  absl::StatusOr<int64_t> PurgeRequestIds(absl::Time) override {
    return absl::UnimplementedError("not in the fake");
  }
  absl::StatusOr<storage::StoreStats> Stats() override { return storage::StoreStats(); }
  absl::StatusOr<CheckpointPosition> Checkpoint(const std::string&) override {
    return absl::UnimplementedError("not in the fake");
  }
  absl::Status ScanSubjects(
      const std::function<void(int64_t)>&,
      const std::function<absl::Status(const v1::Subject&, const ExclusionPairs&)>&) override {
    return absl::UnimplementedError("not in the fake");
  }
  absl::Status Close() override { return absl::OkStatus(); }

 private:
  class Context final : public storage::UpdateContext {
   public:
    Context(bool exists, int64_t revision, absl::Time time)
        : exists_(exists), revision_(revision), time_(time) {}
    bool exists() const override { return exists_; }
    int64_t revision() const override { return revision_; }
    absl::Time time() const override { return time_; }
    absl::StatusOr<bool> IsExcluded(absl::string_view, absl::string_view) override { return false; }
    void SetExcluded(absl::string_view, absl::string_view, bool) override {}
    // The registry's tests here make no imports (tests/server/import_test.cc
    // runs them on the real store).
    void Skip() override { ADD_FAILURE() << "Skip is for imports"; }

   private:
    bool exists_;
    int64_t revision_;
    absl::Time time_;
  };

  std::map<std::string, v1::Subject> subjects_;
  std::vector<v1::ChangeEvent> events_;
  int64_t revision_ = 0;
  // Request id -> fingerprint and revisions; an update's id -> its reply.
  std::map<std::string, std::pair<std::string, std::vector<int64_t>>> requests_;
  std::map<std::string, std::string> replies_;
  std::vector<PolicyRecord> policies_;
};

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto policy = CompiledPolicy::FromFile(testing::DefaultPolicyPath());
    ASSERT_TRUE(policy.ok()) << policy.status();
    ASSERT_TRUE(registry_.Init(*policy).ok());
  }

  absl::Status SetPreference(const v1::SetPreferenceRequest& request,
                             v1::SetPreferenceResponse* response) {
    return Registry::AwaitWrite([&](Registry::WriteDone done) {
      registry_.SetPreference(request, caller_, response, std::move(done));
    });
  }
  absl::Status MakeUkAdult(const std::string& user) {
    v1::UpdateSubjectResponse response;
    const v1::UpdateSubjectRequest request = testing::UkAdult(user);
    return Registry::AwaitWrite([&](Registry::WriteDone done) {
      registry_.UpdateSubject(request, caller_, &response, std::move(done));
    });
  }
  static v1::SetPreferenceRequest Objection(const std::string& user) {
    v1::SetPreferenceRequest request;
    request.set_user_id(user);
    request.set_purpose("ai_training");
    request.set_state(v1::PREFERENCE_STATE_OBJECTED);
    return request;
  }

  FakeStore store_;
  PolicyHolder policies_;
  FakeClock clock_{kStart};
  Registry registry_{&store_, &policies_, &clock_};
  CallContext caller_{"settings"};
};

TEST_F(RegistryTest, AnObjectionDeniesTheNextCheckAtItsRevision) {
  ASSERT_TRUE(MakeUkAdult("alice").ok());
  v1::CheckResponse before;
  ASSERT_TRUE(registry_.Check(testing::PublicPostCheck("alice"), &before).ok());
  EXPECT_EQ(before.decision().reason(), v1::DECISION_REASON_ALLOWED_DEFAULT);
  EXPECT_EQ(before.decision().revision(), 1);

  v1::SetPreferenceResponse set;
  ASSERT_TRUE(SetPreference(Objection("alice"), &set).ok());
  EXPECT_EQ(set.revision(), 2);
  v1::CheckResponse after;
  ASSERT_TRUE(registry_.Check(testing::PublicPostCheck("alice"), &after).ok());
  EXPECT_FALSE(after.decision().allowed());
  EXPECT_EQ(after.decision().reason(), v1::DECISION_REASON_DENIED_OBJECTION);
  EXPECT_EQ(after.decision().revision(), 2);
}

TEST_F(RegistryTest, AnInvalidWriteNeverReachesTheStore) {
  v1::SetPreferenceRequest request = Objection("alice");
  request.set_purpose("not_a_purpose");
  v1::SetPreferenceResponse response;
  const absl::Status s = SetPreference(request, &response);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("purpose"), absl::string_view::npos) << s;
  EXPECT_EQ(store_.commits, 0);
}

TEST_F(RegistryTest, AStaleExpectedRevisionIsAbortedWithTheCurrentOne) {
  ASSERT_TRUE(MakeUkAdult("alice").ok());
  v1::SetPreferenceRequest request = Objection("alice");
  request.set_expected_revision(7);
  v1::SetPreferenceResponse response;
  const absl::Status s = SetPreference(request, &response);
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  auto payload = s.GetPayload("type.googleapis.com/google.rpc.ErrorInfo");
  ASSERT_TRUE(payload.has_value());
  google::rpc::ErrorInfo info;
  ASSERT_TRUE(info.ParseFromString(std::string(*payload)));
  EXPECT_EQ(info.reason(), "REVISION_MISMATCH");
  EXPECT_EQ(info.metadata().at("current_revision"), "1");
  EXPECT_EQ(store_.CurrentRevision(), 1);  // nothing written
}

TEST_F(RegistryTest, ADeletedSubjectTakesNoMoreWrites) {
  ASSERT_TRUE(MakeUkAdult("alice").ok());
  v1::DeleteSubjectRequest deletion;
  deletion.set_user_id("alice");
  v1::DeleteSubjectResponse deleted;
  ASSERT_TRUE(Registry::AwaitWrite([&](Registry::WriteDone done) {
                registry_.DeleteSubject(deletion, caller_, &deleted, std::move(done));
              }).ok());
  v1::SetPreferenceResponse response;
  EXPECT_EQ(SetPreference(Objection("alice"), &response).code(),
            absl::StatusCode::kFailedPrecondition);
  v1::CheckResponse check;
  ASSERT_TRUE(registry_.Check(testing::PublicPostCheck("alice"), &check).ok());
  EXPECT_EQ(check.decision().reason(), v1::DECISION_REASON_DENIED_ACCOUNT_DELETED);
}

TEST_F(RegistryTest, ARequestIdIsReplayedForTheSameRequestAndRefusedForAnother) {
  v1::SetPreferenceRequest request = Objection("alice");
  request.set_request_id("req-1");
  v1::SetPreferenceResponse first, replay, other;
  ASSERT_TRUE(SetPreference(request, &first).ok());
  ASSERT_TRUE(SetPreference(request, &replay).ok());
  EXPECT_EQ(replay.revision(), first.revision());
  EXPECT_EQ(store_.CurrentRevision(), 1);

  request.set_state(v1::PREFERENCE_STATE_CONSENTED);
  const absl::Status s = SetPreference(request, &other);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("request_id"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("revision 1"), absl::string_view::npos) << s;
}

TEST_F(RegistryTest, AFailingStoreFailsTheWriteWithItsStatus) {
  store_.fail_next = absl::UnavailableError("disk gone");
  v1::SetPreferenceResponse response;
  const absl::Status s = SetPreference(Objection("alice"), &response);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(s.message(), "disk gone");
  EXPECT_EQ(response.revision(), 0);
}

TEST_F(RegistryTest, AFailingStoreFailsTheCheckInsteadOfAllowing) {
  ASSERT_TRUE(MakeUkAdult("alice").ok());
  store_.fail_next = absl::DataLossError("record does not parse");
  v1::CheckResponse response;
  const absl::Status s = registry_.Check(testing::PublicPostCheck("alice"), &response);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(response.has_decision());
}

TEST_F(RegistryTest, MinRevisionAheadOfTheStoreIsAFailedPrecondition) {
  v1::CheckRequest request = testing::PublicPostCheck("alice");
  request.set_min_revision(1);
  v1::CheckResponse response;
  const absl::Status s = registry_.Check(request, &response);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "min_revision 1 is ahead of the registry's revision 0");
}

TEST_F(RegistryTest, HistoryListsTheUsersEventsFromTheStore) {
  ASSERT_TRUE(MakeUkAdult("alice").ok());
  v1::SetPreferenceResponse set;
  ASSERT_TRUE(SetPreference(Objection("alice"), &set).ok());
  ASSERT_TRUE(SetPreference(Objection("bob"), &set).ok());
  v1::ListHistoryRequest request;
  request.set_user_id("alice");
  v1::ListHistoryResponse response;
  ASSERT_TRUE(registry_.ListHistory(request, &response).ok());
  ASSERT_EQ(response.events_size(), 2);
  EXPECT_EQ(response.events(0).revision(), 1);
  EXPECT_EQ(response.events(1).revision(), 2);
  EXPECT_EQ(response.events(1).caller(), "settings");
  EXPECT_TRUE(response.next_page_token().empty());
}

}  // namespace
}  // namespace consent
