// Metrics, logs and backups of a real consentd process on loopback.
#include <filesystem>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/consent_client.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace consent {
namespace {

using ::consent::testing::ConsentdProcess;
using ::consent::testing::SampleValue;
using ::consent::testing::TempDir;
using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr char kCheck[] =
    "grpc_method=\"Check\",grpc_service=\"consent.v1.ConsentRegistry\",grpc_type=\"unary\"";
constexpr char kSetPreference[] =
    "grpc_method=\"SetPreference\",grpc_service=\"consent.v1.ConsentRegistry\","
    "grpc_type=\"unary\"";

class ObservabilityTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> extra_args = {"--metrics_listen=127.0.0.1:0"},
             const std::string& data = "data") {
    ConsentdProcess::Options options;
    options.data_dir = dir_.Sub(data);
    options.policy = policy_path_;
    options.extra_args = std::move(extra_args);
    auto process = ConsentdProcess::Start(options);
    ASSERT_TRUE(process.ok()) << process.status();
    server_ = *std::move(process);
    ClientOptions client_options;
    client_options.timeout = absl::Seconds(20);
    client_ = Client::Connect(server_->address(), client_options);
  }

  std::string Scrape() {
    auto body = testing::HttpGet(server_->metrics_address(), "/metrics");
    EXPECT_TRUE(body.ok()) << body.status();
    return body.ok() ? *body : "";
  }

  double Sample(const std::string& exposition, const std::string& series) {
    auto value = SampleValue(exposition, series);
    EXPECT_TRUE(value.ok()) << value.status();
    return value.ok() ? *value : -1;
  }

  absl::Status Object(const std::string& user, const std::string& request_id = "") {
    v1::SetPreferenceRequest request;
    request.set_user_id(user);
    request.set_purpose("ai_training");
    request.set_state(v1::PREFERENCE_STATE_OBJECTED);
    request.set_request_id(request_id);
    return client_->SetPreference(request).status();
  }

  // A UK adult: ai_training is decided by objections (legitimate interest).
  absl::Status MakeUkAdult(const std::string& user) {
    return client_->UpdateSubject(testing::UkAdult(user)).status();
  }

  absl::StatusOr<v1::Decision> Check(const std::string& user) {
    auto response = client_->Check(testing::PublicPostCheck(user));
    if (!response.ok()) return response.status();
    return response->decision();
  }

  TempDir dir_;
  std::string policy_path_ = testing::DefaultPolicyPath();
  std::unique_ptr<ConsentdProcess> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(ObservabilityTest, MetricsCountCallsDecisionsWritesAndBatches) {
  Start({"--metrics_listen=127.0.0.1:0", "--rocksdb_statistics"});
  ASSERT_TRUE(MakeUkAdult("alice").ok());
  ASSERT_TRUE(Object("alice").ok());
  EXPECT_EQ(Object("").code(), absl::StatusCode::kInvalidArgument);  // rejected: no user_id
  for (int i = 0; i < 3; ++i) {
    auto decision = Check("alice");
    ASSERT_TRUE(decision.ok());
    ASSERT_EQ(decision->reason(), v1::DECISION_REASON_DENIED_OBJECTION);
  }
  v1::BatchCheckRequest batch;
  batch.set_purpose("ai_training");
  for (int i = 0; i < 4; ++i) {
    v1::CheckItem* item = batch.add_items();
    item->set_user_id(absl::StrCat("nobody-", i));  // unknown age: DENIED_MINOR
    item->mutable_content()->set_content_id("post-1");
    item->mutable_content()->set_content_type(v1::CONTENT_TYPE_POST);
    item->mutable_content()->set_visibility(v1::VISIBILITY_PUBLIC);
  }
  *batch.add_items() = batch.items(0);
  batch.mutable_items(4)->set_user_id("");  // answered with its error, not a decision
  ASSERT_TRUE(client_->BatchCheck(batch).ok());

  const std::string m = Scrape();
  EXPECT_EQ(Sample(m, absl::StrCat("grpc_server_started_total{", kCheck, "}")), 3);
  EXPECT_EQ(Sample(m, absl::StrCat("grpc_server_handled_total{grpc_code=\"OK\",", kCheck, "}")), 3);
  EXPECT_EQ(Sample(m, absl::StrCat("grpc_server_handled_total{grpc_code=\"InvalidArgument\",",
                                   kSetPreference, "}")),
            1);
  EXPECT_EQ(
      Sample(m, absl::StrCat("grpc_server_handled_total{grpc_code=\"OK\",", kSetPreference, "}")),
      1);
  EXPECT_EQ(Sample(m, absl::StrCat("grpc_server_handling_seconds_count{", kCheck, "}")), 3);
  EXPECT_EQ(
      Sample(m, absl::StrCat("grpc_server_handling_seconds_bucket{", kCheck, ",le=\"+Inf\"}")), 3);
  EXPECT_GT(Sample(m, absl::StrCat("grpc_server_handling_seconds_sum{", kCheck, "}")), 0);
  EXPECT_EQ(
      Sample(m, "consent_decisions_total{purpose=\"ai_training\",reason=\"DENIED_OBJECTION\"}"), 3);
  EXPECT_EQ(Sample(m, "consent_decisions_total{purpose=\"ai_training\",reason=\"DENIED_MINOR\"}"),
            4);
  EXPECT_EQ(
      Sample(m, "consent_decisions_total{purpose=\"ai_training\",reason=\"ALLOWED_DEFAULT\"}"), 0);
  EXPECT_EQ(Sample(m, "consent_batch_items_count{grpc_method=\"BatchCheck\"}"), 1);
  EXPECT_EQ(Sample(m, "consent_batch_items_sum{grpc_method=\"BatchCheck\"}"), 5);
  EXPECT_EQ(Sample(m, "consent_check_items_invalid_total{purpose=\"ai_training\"}"), 1);
  EXPECT_EQ(Sample(m, "consent_writes_total{kind=\"preference\",result=\"ok\"}"), 1);
  EXPECT_EQ(Sample(m, "consent_writes_total{kind=\"preference\",result=\"rejected\"}"), 1);
  EXPECT_EQ(Sample(m, "consent_writes_total{kind=\"preference\",result=\"error\"}"), 0);
  EXPECT_EQ(Sample(m, "consent_writes_total{kind=\"attributes\",result=\"ok\"}"), 1);
  EXPECT_EQ(Sample(m, "consent_registry_revision"), 2);
  EXPECT_EQ(Sample(m, "consent_wal_sync_seconds_count"), 2);  // two acknowledged writes
  EXPECT_EQ(Sample(m, "consent_policy_info{version=\"2026-11-27.1\"}"), 1);
  // The revision consentd was built from (server/build_info.cc.in), or
  // "unknown" outside git.
  EXPECT_THAT(m, ContainsRegex("consent_build_info\\{version=\"[0-9]+\\.[0-9]+\\.[0-9]+\","
                               "revision=\"([0-9a-f]{12}|unknown)\"\\} 1"));
  EXPECT_EQ(Sample(m, "consent_policy_reloads_total{result=\"ok\"}"), 0);

  // RocksDB, read at scrape time.
  EXPECT_GE(Sample(m, "consent_rocksdb_block_cache_hits_total"), 0);
  EXPECT_GE(Sample(m, "consent_rocksdb_block_cache_misses_total"), 0);
  EXPECT_EQ(Sample(m, "consent_rocksdb_write_stopped"), 0);
  EXPECT_GT(Sample(m, "consent_rocksdb_memtable_bytes"), 0);
  EXPECT_GE(Sample(m, "consent_rocksdb_live_sst_bytes"), 0);
  EXPECT_GE(Sample(m, "consent_rocksdb_estimated_subjects"), 1);  // an estimate
  EXPECT_GE(Sample(m, "consent_rocksdb_pending_compaction_bytes"), 0);
  EXPECT_GE(Sample(m, "consent_rocksdb_write_stall_seconds_total"), 0);
  // The subject index: loaded (from the empty store, long before the first
  // call) and holding alice, the one subject written.
  EXPECT_EQ(Sample(m, "consent_subject_index_ready"), 1);
  EXPECT_EQ(Sample(m, "consent_subject_index_subjects"), 1);
  EXPECT_GT(Sample(m, "consent_subject_index_bytes"), 0);
  // The two writes' history entries wait in memory for a bulk write.
  EXPECT_EQ(Sample(m, "consent_history_index_pending_entries"), 2);
  EXPECT_EQ(Sample(m, "consent_history_index_write_failures_total"), 0);

  // process_*, from /proc.
  const double resident = Sample(m, "process_resident_memory_bytes");
  EXPECT_GT(resident, 1 << 20);
  EXPECT_LT(resident, 4.0 * (1 << 30));
  EXPECT_GT(Sample(m, "process_open_fds"), 3);
  EXPECT_GT(Sample(m, "process_max_fds"), Sample(m, "process_open_fds"));
  EXPECT_GT(Sample(m, "process_cpu_seconds_total"), 0);
  EXPECT_NEAR(Sample(m, "process_start_time_seconds"), absl::ToUnixSeconds(absl::Now()), 120);
  // No user id in any label.
  EXPECT_THAT(m, Not(HasSubstr("alice")));
  EXPECT_THAT(m, Not(HasSubstr("nobody-")));
}

TEST_F(ObservabilityTest, PolicyReloadsAreCountedByResult) {
  policy_path_ = dir_.Sub("policy.textproto");
  testing::WriteFile(policy_path_, testing::ReadFile(testing::DefaultPolicyPath()));
  Start();
  ASSERT_TRUE(client_->ReloadPolicy().ok());  // unchanged: still a successful reload
  testing::WriteFile(policy_path_, "version: \"broken\"\nnot_a_field: 1\n");
  EXPECT_EQ(client_->ReloadPolicy().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(client_->ReloadPolicy().status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string m = Scrape();
  EXPECT_EQ(Sample(m, "consent_policy_reloads_total{result=\"ok\"}"), 1);
  EXPECT_EQ(Sample(m, "consent_policy_reloads_total{result=\"error\"}"), 2);
  EXPECT_EQ(Sample(m, "consent_policy_info{version=\"2026-11-27.1\"}"), 1);
  // Block cache tickers are opt-in (--rocksdb_statistics); stalls are not.
  EXPECT_EQ(SampleValue(m, "consent_rocksdb_block_cache_hits_total").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Sample(m, "consent_rocksdb_write_stall_seconds_total"), 0);
}

// docs/operations.md, "Policy rollout and rollback": roll out a new
// version, roll back by reloading the previous file; point-in-time checks
// keep each period's policy.
TEST_F(ObservabilityTest, PolicyRollbackReactivatesThePreviousVersion) {
  policy_path_ = dir_.Sub("policy.textproto");
  const std::string original = testing::ReadFile(testing::DefaultPolicyPath());
  testing::WriteFile(policy_path_, original);
  Start();
  ASSERT_TRUE(MakeUkAdult("alice").ok());
  std::string next = original;
  const std::string old_version = "version: \"2026-11-27.1\"";
  next.replace(next.find(old_version), old_version.size(), "version: \"2026-11-27.2\"");
  testing::WriteFile(policy_path_, next);
  auto rolled_out = client_->ReloadPolicy();
  ASSERT_TRUE(rolled_out.ok()) << rolled_out.status();
  EXPECT_EQ(rolled_out->version(), "2026-11-27.2");
  EXPECT_EQ(Check("alice")->policy_version(), "2026-11-27.2");

  testing::WriteFile(policy_path_, original);  // roll back
  auto rolled_back = client_->ReloadPolicy();
  ASSERT_TRUE(rolled_back.ok()) << rolled_back.status();
  EXPECT_EQ(rolled_back->version(), "2026-11-27.1");
  EXPECT_EQ(rolled_back->previous_version(), "2026-11-27.2");
  EXPECT_EQ(Check("alice")->policy_version(), "2026-11-27.1");
  const std::string m = Scrape();
  EXPECT_EQ(Sample(m, "consent_policy_reloads_total{result=\"ok\"}"), 2);
  EXPECT_EQ(Sample(m, "consent_policy_info{version=\"2026-11-27.1\"}"), 1);
  EXPECT_THAT(m, Not(HasSubstr("version=\"2026-11-27.2\"")));
  // After a restart the file on disk (the rolled-back version) is active.
  server_.reset();
  Start();
  EXPECT_EQ(Check("alice")->policy_version(), "2026-11-27.1");
}

TEST_F(ObservabilityTest, MetricsDisabledServeNothing) {
  Start({});
  EXPECT_EQ(server_->metrics_address(), "");
  EXPECT_THAT(server_->Log(), HasSubstr("metrics_listen=(disabled)"));
}

// Parses every line of `log` as a JSON object.
std::vector<google::protobuf::Struct> JsonLines(const std::string& log) {
  std::vector<google::protobuf::Struct> lines;
  for (absl::string_view line : absl::StrSplit(log, '\n', absl::SkipEmpty())) {
    google::protobuf::Struct parsed;
    auto status = google::protobuf::util::JsonStringToMessage(std::string(line), &parsed);
    EXPECT_TRUE(status.ok()) << "not JSON: " << line;
    lines.push_back(std::move(parsed));
  }
  return lines;
}

const google::protobuf::Struct* FindLine(const std::vector<google::protobuf::Struct>& lines,
                                         const std::string& msg) {
  for (const auto& line : lines) {
    auto it = line.fields().find("msg");
    if (it != line.fields().end() && it->second.string_value() == msg) return &line;
  }
  return nullptr;
}

std::string Field(const google::protobuf::Struct& line, const std::string& key) {
  auto it = line.fields().find(key);
  return it == line.fields().end() ? "<absent>" : it->second.string_value();
}

TEST_F(ObservabilityTest, JsonLogsAtInfoCarryConfigurationButNoUserIds) {
  Start({"--log_format=json"});
  ASSERT_TRUE(Object("secret-user-42", "req-7").ok());
  EXPECT_EQ(server_->Terminate(), 0);
  const std::string log = server_->Log();
  const auto lines = JsonLines(log);
  ASSERT_GE(lines.size(), 4u);
  const google::protobuf::Struct* start = FindLine(lines, "starting consentd");
  ASSERT_NE(start, nullptr);
  EXPECT_EQ(Field(*start, "level"), "info");
  EXPECT_EQ(Field(*start, "data_dir"), dir_.Sub("data"));
  EXPECT_EQ(Field(*start, "log_format"), "json");
  EXPECT_EQ(Field(*start, "log_level"), "info");
  EXPECT_EQ(Field(*start, "request_id_retention"), "24h");
  const google::protobuf::Struct* index =
      FindLine(lines, "subject index loaded: checks read it from now on");
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(Field(*index, "subjects"), "0");
  EXPECT_NE(FindLine(lines, "store closed cleanly"), nullptr);
  // Each write is logged at info with its caller (history's: here, without
  // authentication, the peer address), never with the user id.
  const google::protobuf::Struct* write = FindLine(lines, "write");
  ASSERT_NE(write, nullptr);
  EXPECT_EQ(Field(*write, "level"), "info");
  EXPECT_EQ(Field(*write, "method"), "SetPreference");
  EXPECT_THAT(Field(*write, "caller"), StartsWith("ipv4:127.0.0.1:"));
  EXPECT_EQ(Field(*write, "request_id"), "req-7");
  EXPECT_EQ(Field(*write, "revision"), "1");
  EXPECT_EQ(write->fields().count("user_id"), 0u);
  EXPECT_THAT(log, Not(HasSubstr("secret-user-42")));
}

TEST_F(ObservabilityTest, DebugLogsEachWriteWithRequestAndUserId) {
  Start({"--log_format=json", "--log_level=debug"});
  ASSERT_TRUE(Object("secret-user-42", "req-7").ok());
  EXPECT_EQ(Object("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(server_->Terminate(), 0);
  const auto lines = JsonLines(server_->Log());
  std::vector<const google::protobuf::Struct*> writes;
  for (const auto& line : lines) {
    if (Field(line, "msg") == "write") writes.push_back(&line);
  }
  ASSERT_EQ(writes.size(), 2u);
  EXPECT_EQ(Field(*writes[0], "level"), "debug");
  EXPECT_EQ(Field(*writes[0], "method"), "SetPreference");
  EXPECT_THAT(Field(*writes[0], "caller"), StartsWith("ipv4:127.0.0.1:"));
  EXPECT_EQ(Field(*writes[0], "code"), "OK");
  EXPECT_EQ(Field(*writes[0], "request_id"), "req-7");
  EXPECT_EQ(Field(*writes[0], "user_id"), "secret-user-42");
  EXPECT_EQ(Field(*writes[0], "revision"), "1");
  EXPECT_EQ(Field(*writes[1], "code"), "InvalidArgument");
  EXPECT_THAT(Field(*writes[1], "error"), HasSubstr("user_id"));
}

TEST_F(ObservabilityTest, HumanLogsAreOneLinePerEventWithLevel) {
  Start({});
  EXPECT_EQ(server_->Terminate(), 0);
  const std::string log = server_->Log();
  for (absl::string_view line : absl::StrSplit(log, '\n', absl::SkipEmpty())) {
    const std::vector<absl::string_view> words = absl::StrSplit(line, ' ');
    ASSERT_GE(words.size(), 3u) << line;
    EXPECT_EQ(words[0].size(), 24u) << line;  // 2026-11-27T05:39:03.871Z
    EXPECT_TRUE(words[1] == "INFO" || words[1] == "WARN" || words[1] == "ERROR") << line;
  }
  EXPECT_THAT(log, HasSubstr(" INFO starting consentd listen=127.0.0.1:0 data_dir="));
}

TEST(LogFlagsTest, UnknownFormatOrLevelStopsStartUp) {
  TempDir dir;
  auto [code, log] = ConsentdProcess::RunToExit(
      {"--log_format=xml", "--data_dir=" + dir.Sub("data"), "--metrics_listen="});
  EXPECT_EQ(code, 1);
  EXPECT_THAT(log, HasSubstr("--log_format must be human or json, not \"xml\""));
  std::tie(code, log) = ConsentdProcess::RunToExit(
      {"--log_level=verbose", "--data_dir=" + dir.Sub("data"), "--metrics_listen="});
  EXPECT_EQ(code, 1);
  EXPECT_THAT(log, HasSubstr("--log_level must be debug, info, warn or error, not \"verbose\""));
}

TEST_F(ObservabilityTest, BackupWhileWritingRestoresExactlyTheBackedUpRevision) {
  Start({"--backup_dir=" + dir_.Sub("backups")});
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(Object(absl::StrCat("before-", i)).ok());
  // Writers keep committing while the backup is taken.
  std::atomic<bool> stop{false};
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (int i = 0; !stop.load(); ++i) {
      if (Object(absl::StrCat("during-", i)).ok()) written.fetch_add(1);
    }
  });
  while (written.load() < 5) std::this_thread::yield();
  const std::string backup = dir_.Sub("backups/nightly");
  auto ctl =
      testing::RunCommand({CONSENTCTL_PATH, "--target=" + server_->address(), "backup", "nightly"});
  while (written.load() < 10) std::this_thread::yield();  // more writes after the backup
  stop.store(true);
  writer.join();
  ASSERT_EQ(ctl.exit_code, 0) << ctl.err;
  int64_t revision = 0;
  ASSERT_EQ(sscanf(ctl.out.c_str(), "backup of revision %ld written to", &revision), 1) << ctl.out;
  EXPECT_THAT(ctl.out, HasSubstr(absl::StrCat("written to ", backup, "\n")));
  EXPECT_GE(revision, 25);
  v1::GetSubjectRequest last;
  last.set_user_id("before-19");
  const int64_t final_revision = client_->GetSubject(last)->revision();
  ASSERT_GT(final_revision, revision);
  EXPECT_THAT(server_->Log(),
              HasSubstr(absl::StrCat("backup written directory=", backup, " revision=", revision)));
  server_.reset();

  // Restore: a copy of the backup is a data directory.
  std::filesystem::copy(backup, dir_.Sub("restored"), std::filesystem::copy_options::recursive);
  Start({}, "restored");
  v1::VerifyAuditLogRequest verify;
  auto report = client_->VerifyAuditLog(verify);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->ok()) << report->detail();
  EXPECT_EQ(report->verified_count(), revision);
  // Exactly the writes up to `revision`: each write made one revision, in
  // order, so the first 20 plus the first revision-20 "during" writes.
  const int64_t during = revision - 20;
  for (const std::string& user :
       {std::string("before-0"), std::string("before-19"), absl::StrCat("during-", during - 1)}) {
    v1::GetSubjectRequest request;
    request.set_user_id(user);
    auto subject = client_->GetSubject(request);
    ASSERT_TRUE(subject.ok()) << user << ": " << subject.status();
    EXPECT_EQ(subject->revision(), revision) << user;
  }
  v1::GetSubjectRequest after;
  after.set_user_id(absl::StrCat("during-", during));
  EXPECT_EQ(client_->GetSubject(after).status().code(), absl::StatusCode::kNotFound);
  // The restored registry takes writes, continuing the chain.
  ASSERT_TRUE(Object("after-restore").ok());
  report = client_->VerifyAuditLog(verify);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok());
  EXPECT_EQ(report->verified_count(), revision + 1);
}

// A backup is a new subdirectory of --backup_dir named by the request,
// never a path: nothing is written elsewhere on the server's disk. The
// data directory, the backup directory and each backup are owner-only.
TEST_F(ObservabilityTest, BackupsGoUnderTheBackupDirOnly) {
  Start({"--backup_dir=" + dir_.Sub("backups")});
  ASSERT_TRUE(Object("alice").ok());
  for (const std::string& bad :
       {std::string("relative/dir"), dir_.Sub("elsewhere"), std::string(".."), std::string("."),
        std::string(""), std::string(129, 'a'), std::string("a b")}) {
    auto refused = client_->CreateBackup(bad);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    if (!bad.empty()) {
      EXPECT_THAT(FieldViolations(refused.status()),
                  ElementsAre(HasSubstr("directory: must be the name of a new directory under "
                                        "the server's --backup_dir")))
          << bad;
    }
  }
  EXPECT_FALSE(std::filesystem::exists(dir_.Sub("elsewhere")));
  auto ok = client_->CreateBackup("first");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->revision(), 1);
  EXPECT_EQ(ok->directory(), dir_.Sub("backups/first"));
  auto again = client_->CreateBackup("first");
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
  namespace fs = std::filesystem;
  for (const char* directory : {"data", "backups", "backups/first"}) {
    EXPECT_EQ(fs::status(dir_.Sub(directory)).permissions() & fs::perms::all, fs::perms::owner_all)
        << directory;
  }
}

TEST_F(ObservabilityTest, BackupsAreRefusedWithoutABackupDir) {
  Start({});
  auto refused = client_->CreateBackup("first");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(refused.status().message(),
            "backups are disabled: consentd was started without --backup_dir");
}

}  // namespace
}  // namespace consent
