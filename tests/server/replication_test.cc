// Replication end to end: a real three-node NATS cluster with JetStream and
// consentd replicas (the real binary, --replication=jetstream) on loopback,
// each with its own data directory.
#include <signal.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/consent_client.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "gtest/gtest.h"
#include "storage/jetstream_log.h"
#include "tests/nats_cluster.h"
#include "tests/test_util.h"

namespace consent {
namespace {

using ::consent::testing::ConsentdProcess;
using ::consent::testing::NatsCluster;
using ::consent::testing::TempDir;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr int64_t kMaxPayload = 8 << 20;
// BatchSetPreferences' limit.
constexpr int kLargestBatch = 1000;

// A user id of 100 bytes: an import record of about 140.
std::string UserOf(int64_t n) {
  const std::string id = absl::StrCat("user-", n, "-");
  return id + std::string(100 - id.size(), 'x');
}

class ReplicationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto cluster = NatsCluster::Start(3, kMaxPayload);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    nats_ = *std::move(cluster);
  }

  void TearDown() override {
    if (!HasFailure() && getenv("DUMP") == nullptr) return;
    for (size_t i = 0; i < replicas_.size(); ++i) {
      if (replicas_[i] == nullptr) continue;
      const std::string log = replicas_[i]->Log();
      std::cout << "--- replica " << i << "'s log (end):\n"
                << log.substr(log.size() > 6000 ? log.size() - 6000 : 0) << "\n";
    }
  }

  // Starts replica `i` (again, after a stop) on its own data directory,
  // or on `data_dir`.
  void StartReplica(size_t i, std::vector<std::string> extra = {}, std::string data_dir = "") {
    if (replicas_.size() <= i) {
      replicas_.resize(i + 1);
      clients_.resize(i + 1);
    }
    ConsentdProcess::Options options;
    options.data_dir = data_dir.empty() ? dir_.Sub(absl::StrCat("replica-", i)) : data_dir;
    options.extra_args = {"--replication=jetstream",
                          "--nats_url=" + absl::StrJoin(nats_->urls(), ","),
                          "--min_revision_wait=300ms",
                          // AllEvents reads until the feed's first checkpoint.
                          "--watch_checkpoint_interval=100ms"};
    options.extra_args.insert(options.extra_args.end(), extra.begin(), extra.end());
    auto process = ConsentdProcess::Start(options);
    ASSERT_TRUE(process.ok()) << process.status();
    replicas_[i] = *std::move(process);
    ClientOptions client_options;
    client_options.timeout = absl::Seconds(20);
    client_options.max_attempts = 1;  // each answer as the replica gave it
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
  StartReplica(1, {"--metrics_listen=127.0.0.1:0", "--backup_dir=" + dir_.Sub("backups")});
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
  v1::SetPreferenceRequest stale = testing::PreferenceOf("alice", v1::PREFERENCE_STATE_CONSENTED);
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

  // The largest write: 1,000 preferences, every id and source field at its
  // longest, about 1.4 MB as one command (more than NATS's default
  // max_payload of 1 MiB; the servers here take 8 MiB).
  v1::BatchSetPreferencesRequest big;
  for (int i = 0; i < kLargestBatch; ++i) {
    v1::SetPreferenceRequest* item = big.add_requests();
    const std::string n = absl::StrCat(i);
    item->set_user_id(n + std::string(128 - n.size(), 'u'));
    item->set_purpose("ai_training.generative");
    item->set_state(v1::PREFERENCE_STATE_OBJECTED);
    item->set_request_id(n + std::string(128 - n.size(), 'r'));
    v1::Source* source = item->mutable_source();
    source->set_channel(std::string(256, 'c'));
    source->set_notice_id(std::string(256, 'n'));
    source->set_notice_version(std::string(256, 'v'));
    source->set_actor(std::string(256, 'a'));
  }
  ASSERT_GT(big.ByteSizeLong(), size_t{1} << 20);
  auto written = client(0).BatchSetPreferences(big);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(written->revisions_size(), kLargestBatch);
  EXPECT_EQ(written->revision(), 1003);
  v1::GetSubjectRequest last_user;
  last_user.set_user_id(big.requests(kLargestBatch - 1).user_id());
  // Read on replica 1 once it has the batch (a check names the revision).
  v1::CheckRequest after_batch = testing::PublicPostCheck(last_user.user_id());
  after_batch.set_min_revision(written->revision());
  ASSERT_TRUE(client(1).Check(after_batch).ok());
  auto copied = client(1).GetSubject(last_user);
  ASSERT_TRUE(copied.ok()) << copied.status();
  EXPECT_EQ(copied->subject().revision(), 1003);
  EXPECT_EQ(copied->subject().preferences(0).source().actor(), std::string(256, 'a'));

  // What replica 1 applied, and its one read that waited in vain. The log
  // holds the policy, the three writes, the refused stale write, the
  // replayed and conflicting request (as commands of their own: they found
  // their request id in the log under another call), and the batch.
  auto metrics = testing::HttpGet(replicas_[1]->metrics_address(), "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  auto sample = [&](const std::string& series) {
    auto value = testing::SampleValue(*metrics, series);
    EXPECT_TRUE(value.ok()) << series << ": " << value.status();
    return value.ok() ? *value : -1;
  };
  EXPECT_EQ(sample("consent_replication_applied_sequence"), 8);
  EXPECT_EQ(sample("consent_replication_applied_commands_total"), 8);
  EXPECT_EQ(sample("consent_min_revision_waits_total{result=\"timeout\"}"), 1);
  EXPECT_EQ(sample("consent_replication_malformed_commands_total"), 0);
  EXPECT_EQ(sample("consent_replication_waiting_writes"), 0);
  EXPECT_GE(sample("consent_replication_append_seconds_count"), 3);

  // A new replica starts from a backup and applies the rest of the log.
  auto backup = client(1).CreateBackup("seed");
  ASSERT_TRUE(backup.ok()) << backup.status();
  EXPECT_EQ(backup->revision(), 1003);
  EXPECT_EQ(backup->applied_log_sequence(), 8);
  auto later =
      client(0).SetPreference(testing::PreferenceOf("alice", v1::PREFERENCE_STATE_CLEARED));
  ASSERT_TRUE(later.ok()) << later.status();
  StartReplica(2, {}, backup->directory());
  v1::CheckRequest withdrawn = testing::PublicPostCheck("alice");
  withdrawn.set_min_revision(later->revision());
  auto on_2 = client(2).Check(withdrawn);
  ASSERT_TRUE(on_2.ok()) << on_2.status();
  EXPECT_EQ(on_2->decision().reason(), v1::DECISION_REASON_ALLOWED_DEFAULT);
  EXPECT_EQ(AllEvents(2), AllEvents(0));
  EXPECT_THAT(replicas_[2]->Log(), HasSubstr("replication: caught up applied_sequence=9"));

  // A store that applied more than its log holds (here: pointed at another,
  // new stream; in production, a NATS cluster that lost acknowledged
  // commands) refuses to start.
  ASSERT_EQ(replicas_[2]->Terminate(), 0);
  auto [code, log] = ConsentdProcess::RunToExit(
      {"--data_dir=" + backup->directory(), "--listen=127.0.0.1:0",
       "--metrics_listen=", "--policy=" + testing::DefaultPolicyPath(), "--replication=jetstream",
       "--nats_url=" + absl::StrJoin(nats_->urls(), ","), "--nats_stream=OTHER",
       "--nats_subject=other.commands"});
  EXPECT_EQ(code, 1);
  EXPECT_THAT(log, HasSubstr("this replica applied the command log through 9 but the log ends "
                             "at 0: the NATS cluster lost commands it had acknowledged"));
}

// A bulk import taken by one replica is applied by every replica: each
// step a command of the log, split when it is larger than the log's
// largest command, and resumed on another replica from the progress the
// log has made.
TEST_F(ReplicationTest, AnImportOnOneReplicaIsAppliedOnEvery) {
  // 64 KiB commands: a message of 1,000 records (about 150 KB) takes
  // several.
  const std::vector<std::string> small = {"--nats_max_message_bytes=65536",
                                          "--metrics_listen=127.0.0.1:0"};
  StartReplica(0, small);
  StartReplica(1, small);
  v1::DeleteSubjectRequest deletion;
  deletion.set_user_id(UserOf(500));
  ASSERT_TRUE(client(0).DeleteSubject(deletion).ok());

  // Records 1..1500 in two messages; 500's subject is deleted, 600 names a
  // purpose the policy does not define.
  auto records = [](int64_t from, int64_t to, v1::ImportSubjectsRequest* message) {
    for (int64_t offset = from; offset <= to; ++offset) {
      v1::ImportRecord* record = message->add_records();
      record->set_offset(offset);
      record->set_user_id(UserOf(offset));
      record->set_jurisdiction("GB");
      record->mutable_birth_date()->set_year(1990);
      record->mutable_birth_date()->set_month(1);
      record->mutable_birth_date()->set_day(1);
      v1::ImportedPreference* preference = record->add_preferences();
      preference->set_purpose(offset == 600 ? "no_such" : "ai_training");
      preference->set_state(v1::PREFERENCE_STATE_OBJECTED);
    }
  };
  int sent = 0;
  auto imported = client(0).ImportSubjects("load", [&](v1::ImportSubjectsRequest* message) {
    if (sent++ == 0) {
      records(1, 1000, message);
      return true;
    }
    records(1001, 1500, message);
    return false;
  });
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->imported(), 1498);
  EXPECT_EQ(imported->rejected(), 2);
  EXPECT_EQ(imported->skipped(), 0);
  EXPECT_EQ(imported->acknowledged_offset(), 1500);
  ASSERT_EQ(imported->rejections_size(), 2);
  EXPECT_EQ(imported->rejections(0).offset(), 500);
  EXPECT_EQ(imported->rejections(0).description(),
            "the subject was deleted; a deleted subject takes no more writes");
  EXPECT_EQ(imported->rejections(1).offset(), 600);
  EXPECT_EQ(imported->rejections(1).field(), "preferences[0].purpose");
  // Two events per imported record, after the deletion's one.
  EXPECT_EQ(imported->revision(), 1 + 2 * 1498);

  // Replica 1 applied it; resumed there, the import skips what is done.
  v1::CheckRequest last = testing::PublicPostCheck(UserOf(1500));
  last.set_min_revision(imported->revision());
  auto decision = client(1).Check(last);
  ASSERT_TRUE(decision.ok()) << decision.status();
  EXPECT_EQ(decision->decision().reason(), v1::DECISION_REASON_DENIED_OBJECTION);
  auto progress = client(1).ImportProgress("load");
  ASSERT_TRUE(progress.ok()) << progress.status();
  EXPECT_EQ(*progress, 1500);
  auto resumed = client(1).ImportSubjects("load", [&](v1::ImportSubjectsRequest* message) {
    records(1201, 1700, message);
    return false;
  });
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->skipped(), 300);
  EXPECT_EQ(resumed->imported(), 200);
  EXPECT_EQ(resumed->acknowledged_offset(), 1700);

  // The same records, history and chain on both replicas.
  v1::CheckRequest end = testing::PublicPostCheck(UserOf(1700));
  end.set_min_revision(resumed->revision());
  ASSERT_TRUE(client(0).Check(end).ok());
  const std::vector<std::string> events = AllEvents(0);
  EXPECT_EQ(events.size(), static_cast<size_t>(1 + 2 * 1698));
  EXPECT_EQ(AllEvents(1), events);
  for (size_t i : {0, 1}) {
    auto verified = client(i).VerifyAuditLog(v1::VerifyAuditLogRequest());
    ASSERT_TRUE(verified.ok()) << verified.status();
    EXPECT_TRUE(verified->ok()) << verified->detail();
  }

  // The log holds the policy, the deletion, the resumed step and at least
  // three commands for the first message and two for the second.
  auto metrics = testing::HttpGet(replicas_[1]->metrics_address(), "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  auto applied = testing::SampleValue(*metrics, "consent_replication_applied_sequence");
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_GE(*applied, 2 + 3 + 2 + 1);
}

// A policy reloaded on one replica goes through the log: every replica
// switches at the same place among the writes; a replica started later
// with its old file does not set it back.
TEST_F(ReplicationTest, APolicyReloadedOnOneReplicaIsActiveOnEvery) {
  const std::string original = testing::ReadFile(testing::DefaultPolicyPath());
  for (size_t i : {0, 1}) {
    testing::WriteFile(dir_.Sub(absl::StrCat("policy-", i)), original);
    StartReplica(i, {"--policy=" + dir_.Sub(absl::StrCat("policy-", i))});
  }
  ASSERT_TRUE(client(0).UpdateSubject(testing::UkAdult("alice")).ok());
  // Stricter: UK training needs consent.
  std::string strict = original;
  const std::string version = "version: \"2026-11-27.1\"";
  strict.replace(strict.find(version), version.size(), "version: \"uk-consent\"");
  const std::string uk = "legal_basis: LEGAL_BASIS_LEGITIMATE_INTEREST";
  strict.replace(strict.find(uk), uk.size(), "legal_basis: LEGAL_BASIS_CONSENT");
  testing::WriteFile(dir_.Sub("policy-0"), strict);
  auto reloaded = client(0).ReloadPolicy();
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(reloaded->version(), "uk-consent");
  EXPECT_EQ(reloaded->previous_version(), "2026-11-27.1");
  // A write after it, read on the other replica, has the policy before it.
  auto later = client(0).SetPreference(testing::PreferenceOf("bob", v1::PREFERENCE_STATE_OBJECTED));
  ASSERT_TRUE(later.ok()) << later.status();
  v1::CheckRequest check = testing::PublicPostCheck("alice");
  check.set_min_revision(later->revision());
  for (size_t i : {0, 1}) {
    auto decision = client(i).Check(check);
    ASSERT_TRUE(decision.ok()) << decision.status();
    EXPECT_EQ(decision->decision().reason(), v1::DECISION_REASON_DENIED_NO_CONSENT) << i;
    EXPECT_EQ(decision->decision().policy_version(), "uk-consent") << i;
  }

  // Replica 1 restarts with its old file: the registry's policy stays.
  replicas_[1]->Terminate();
  StartReplica(1, {"--policy=" + dir_.Sub("policy-1")});
  auto policy = client(1).GetPolicy();
  ASSERT_TRUE(policy.ok()) << policy.status();
  EXPECT_EQ(policy->version(), "uk-consent");
  EXPECT_THAT(replicas_[1]->Log(),
              HasSubstr("the policy file differs from the registry's active policy"));
  EXPECT_EQ(AllEvents(1), AllEvents(0));
}

// Writers that keep recording preferences through any replica, each write
// retried (same request id) on the other replica until one acknowledges
// it; what was acknowledged, and when.
class Writers {
 public:
  struct Acked {
    std::string user;
    std::string request_id;
    int64_t revision = 0;
    absl::Time at;
  };

  Writers(int threads, std::vector<std::string> addresses) : addresses_(std::move(addresses)) {
    for (int t = 0; t < threads; ++t) threads_.emplace_back([this, t] { Run(t); });
  }
  ~Writers() { Stop(); }

  void Stop() {
    stop_ = true;
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  // Waits until `more` writes beyond those acknowledged now are; false
  // when that takes over a minute.
  bool AwaitMore(size_t more) {
    absl::MutexLock lock(&mu_);
    const size_t target = acked_.size() + more;
    auto enough = [this, target]()
                      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return acked_.size() >= target; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Minutes(1));
  }
  std::vector<Acked> acked() const {
    absl::MutexLock lock(&mu_);
    return acked_;
  }
  int64_t failures() const { return failures_.load(); }

 private:
  void Run(int t) {
    std::vector<std::unique_ptr<Client>> clients;
    ClientOptions options;
    options.timeout = absl::Seconds(3);
    options.max_attempts = 1;  // retried here, on the other replica
    for (const std::string& address : addresses_) {
      clients.push_back(Client::Connect(address, options));
    }
    for (int k = 0; !stop_; ++k) {
      v1::SetPreferenceRequest request = testing::PreferenceOf(
          absl::StrCat("w", t, "-u", k % 5),
          k % 2 == 0 ? v1::PREFERENCE_STATE_OBJECTED : v1::PREFERENCE_STATE_CONSENTED);
      request.set_request_id(absl::StrCat("w", t, "-", k));
      for (size_t attempt = 0; !stop_; ++attempt) {
        auto response = clients[(t + attempt) % clients.size()]->SetPreference(request);
        if (response.ok()) {
          absl::MutexLock lock(&mu_);
          acked_.push_back(
              {request.user_id(), request.request_id(), response->revision(), absl::Now()});
          break;
        }
        ++failures_;
      }
    }
  }

  const std::vector<std::string> addresses_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> failures_{0};
  mutable absl::Mutex mu_;
  std::vector<Acked> acked_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

// Kills the stream's leader, a replica, and pauses the other while eight
// writers run: every acknowledged write is on both replicas, at the
// revision it was acknowledged with, and both hold the same history. Then
// with two of three NATS servers down writes are UNAVAILABLE and checks
// still answer.
TEST_F(ReplicationTest, NoAcknowledgedWriteIsLostThroughFaults) {
  std::vector<std::string> addresses;
  std::vector<std::vector<std::string>> args;
  for (size_t i : {0, 1}) {
    auto port = testing::FreeLoopbackPort();
    ASSERT_TRUE(port.ok()) << port.status();
    addresses.push_back(absl::StrCat("127.0.0.1:", *port));
    args.push_back({"--listen=" + addresses.back(), "--nats_timeout=1s", "--apply_wait=5s"});
    StartReplica(i, args.back());
  }
  storage::JetStreamLogOptions log_options;
  log_options.urls = nats_->urls();
  auto log = storage::JetStreamLog::Open(log_options);
  ASSERT_TRUE(log.ok()) << log.status();

  Writers writers(8, addresses);
  ASSERT_TRUE(writers.AwaitMore(100));

  // The stream's leader dies; JetStream elects another.
  auto state = (*log)->GetState();
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_THAT(state->leader, ::testing::MatchesRegex("n[0-2]"));
  const int leader = state->leader[1] - '0';
  const absl::Time killed = absl::Now();
  nats_->Kill(leader);
  ASSERT_TRUE(writers.AwaitMore(100)) << nats_->Log((leader + 1) % 3);
  {
    // The longest pause between acknowledgements after the kill: the stall.
    absl::Duration stall;
    absl::Time previous = killed;
    for (const auto& a : writers.acked()) {
      if (a.at < killed) continue;
      stall = std::max(stall, a.at - previous);
      previous = a.at;
    }
    std::cout << "stream leader n" << leader << " killed: writes stalled for at most "
              << absl::FormatDuration(stall) << "\n";
  }
  ASSERT_TRUE(nats_->Restart(leader).ok());

  // A replica dies, and comes back: it applies what it missed.
  replicas_[1]->Kill9();
  ASSERT_TRUE(writers.AwaitMore(100));
  StartReplica(1, args[1]);
  ASSERT_TRUE(writers.AwaitMore(100));

  // The other pauses (its callers time out and go elsewhere), then resumes.
  ASSERT_EQ(kill(replicas_[0]->pid(), SIGSTOP), 0);
  ASSERT_TRUE(writers.AwaitMore(100));
  ASSERT_EQ(kill(replicas_[0]->pid(), SIGCONT), 0);
  ASSERT_TRUE(writers.AwaitMore(100));
  writers.Stop();

  const std::vector<Writers::Acked> acked = writers.acked();
  int64_t last = 0;
  for (const auto& a : acked) last = std::max(last, a.revision);
  std::cout << acked.size() << " writes acknowledged, " << writers.failures()
            << " attempts failed and were retried, last revision " << last << "\n";
  // Each replica reaches the last acknowledged revision.
  for (size_t i : {0, 1}) {
    v1::CheckRequest check = testing::PublicPostCheck("w0-u0");
    check.set_min_revision(last);
    absl::StatusOr<v1::CheckResponse> reached = client(i).Check(check);
    for (int tries = 0; !reached.ok() && tries < 100; ++tries) reached = client(i).Check(check);
    ASSERT_TRUE(reached.ok()) << i << ": " << reached.status();
  }
  const std::vector<std::string> events = AllEvents(0);
  ASSERT_EQ(AllEvents(1), events);
  ASSERT_GE(events.size(), acked.size());
  for (size_t r = 0; r < events.size(); ++r) {
    v1::ChangeEvent event;
    ASSERT_TRUE(event.ParseFromString(events[r]));
    ASSERT_EQ(event.revision(), static_cast<int64_t>(r + 1));  // contiguous
  }
  for (const auto& a : acked) {
    ASSERT_GE(a.revision, 1);
    ASSERT_LE(a.revision, static_cast<int64_t>(events.size()));
    v1::ChangeEvent event;
    ASSERT_TRUE(event.ParseFromString(events[a.revision - 1]));
    EXPECT_EQ(event.user_id(), a.user);
    EXPECT_EQ(event.request_id(), a.request_id);
  }
  for (size_t i : {0, 1}) {
    auto verified = client(i).VerifyAuditLog(v1::VerifyAuditLogRequest());
    ASSERT_TRUE(verified.ok()) << verified.status();
    EXPECT_TRUE(verified->ok()) << verified->detail();
    EXPECT_EQ(verified->verified_count(), static_cast<int64_t>(events.size()));
  }

  // Two of three NATS servers down: no quorum, so no write is
  // acknowledged; checks answer from what each replica applied.
  nats_->Kill((leader + 1) % 3);
  nats_->Kill((leader + 2) % 3);
  auto refused =
      client(0).SetPreference(testing::PreferenceOf("late", v1::PREFERENCE_STATE_OBJECTED));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();
  for (size_t i : {0, 1}) {
    auto decision = client(i).Check(testing::PublicPostCheck(acked.back().user));
    ASSERT_TRUE(decision.ok()) << decision.status();
    EXPECT_EQ(decision->decision().revision(), static_cast<int64_t>(events.size()));
  }
}

// Replication flags that do not make sense, and a NATS cluster that is not
// there, stop start-up with a message and exit status 1.
// consentd signs in to NATS servers that require an NKey user
// (--nats_nkey, --nats_nkey_seed_file), and takes writes through them.
TEST(ReplicationSecurityTest, AReplicaSignsInAsAnNKeyUser) {
  // An NKey pair made for this test (the seed "SU...", the public key "U...").
  const std::string nkey = "UAALTIE3GKO76BLJ4X3J2IR5TEVHBE557D277SYIJAKOKC5CTMNSXF3C";
  NatsCluster::Options cluster_options;
  cluster_options.nkey = nkey;
  auto nats = NatsCluster::Start(cluster_options);
  ASSERT_TRUE(nats.ok()) << nats.status();
  TempDir dir;
  testing::WriteFile(dir.Sub("consentd.nk"),
                     "SUAPOPSYE2UH3H5RUD4KVPEWCPP5ZMZSR5N3YWOQUYYCUKIS7HVKVIVG2I\n");
  ConsentdProcess::Options options;
  options.data_dir = dir.Sub("data");
  options.extra_args = {"--replication=jetstream",
                        "--nats_url=" + absl::StrJoin((*nats)->urls(), ","), "--nats_nkey=" + nkey,
                        "--nats_nkey_seed_file=" + dir.Sub("consentd.nk")};
  auto replica = ConsentdProcess::Start(options);
  ASSERT_TRUE(replica.ok()) << replica.status();
  auto client = Client::Connect((*replica)->address());
  auto written =
      client->SetPreference(testing::PreferenceOf("alice", v1::PREFERENCE_STATE_OBJECTED));
  ASSERT_TRUE(written.ok()) << written.status() << "\n" << (*replica)->Log();
  EXPECT_EQ(written->revision(), 1);
  EXPECT_THAT((*replica)->Log(), HasSubstr("nats_nkey=" + nkey));
}

TEST(ReplicationFlagsTest, BadFlagsAndAnUnreachableClusterStopStartUp) {
  TempDir dir;
  auto port = testing::FreeLoopbackPort();
  ASSERT_TRUE(port.ok()) << port.status();
  const std::string data = "--data_dir=" + dir.Sub("data");
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--replication=raft"}, "--replication must be standalone or jetstream"},
      {{"--replication=jetstream"}, "--replication=jetstream needs --nats_url"},
      {{"--nats_url=nats://127.0.0.1:4222"}, "--nats_url is for --replication=jetstream"},
      {{"--replication=jetstream", "--nats_url=nats://127.0.0.1:4222", "--apply_wait=0s"},
       "--apply_wait, --catch_up_timeout and --nats_timeout must be positive"},
      {{"--replication=jetstream", "--nats_url=nats://127.0.0.1:4222",
        "--nats_token_file=" + dir.Sub("missing")},
       "--nats_token_file cannot be read"},
      {{"--replication=jetstream", "--nats_url=nats://127.0.0.1:4222",
        "--nats_nkey=UAALTIE3GKO76BLJ4X3J2IR5TEVHBE557D277SYIJAKOKC5CTMNSXF3C"},
       "--nats_nkey and --nats_nkey_seed_file go together"},
      {{"--replication=jetstream", "--nats_url=nats://127.0.0.1:4222",
        "--nats_nkey=UAALTIE3GKO76BLJ4X3J2IR5TEVHBE557D277SYIJAKOKC5CTMNSXF3C",
        "--nats_nkey_seed_file=" + dir.Sub("missing")},
       "--nats_nkey_seed_file cannot be read"},
      {{"--replication=jetstream", "--nats_url=nats://127.0.0.1:4222",
        "--nats_nkey=SUAPOPSYE2UH3H5RUD4KVPEWCPP5ZMZSR5N3YWOQUYYCUKIS7HVKVIVG2I",
        "--nats_nkey_seed_file=" + dir.Sub("missing")},
       "--nats_nkey must be an NKey user's public key"},
      {{"--replication=jetstream", absl::StrCat("--nats_url=nats://127.0.0.1:", *port)},
       "replication: connecting to nats://127.0.0.1:"},
  };
  // A seed given as the public key is refused, and not logged.
  const std::string seed = "SUAPOPSYE2UH3H5RUD4KVPEWCPP5ZMZSR5N3YWOQUYYCUKIS7HVKVIVG2I";
  for (const auto& [flags, message] : cases) {
    std::vector<std::string> args = {data, "--listen=127.0.0.1:0", "--metrics_listen=",
                                     "--policy=" + testing::DefaultPolicyPath()};
    args.insert(args.end(), flags.begin(), flags.end());
    auto [code, log] = ConsentdProcess::RunToExit(args);
    EXPECT_EQ(code, 1) << absl::StrJoin(flags, " ");
    EXPECT_THAT(log, HasSubstr(message)) << absl::StrJoin(flags, " ");
    EXPECT_THAT(log, Not(HasSubstr(seed.substr(2)))) << absl::StrJoin(flags, " ");
  }
}

}  // namespace
}  // namespace consent
