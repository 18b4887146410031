// What operators and orchestrators use, against a real consentd process on
// loopback: the HTTP probes beside /metrics, the policy file reloaded when
// it is swapped the way Kubernetes swaps a ConfigMap, backups pruned to
// --backup_keep, consentctl health for exec probes, and --version.
#include <algorithm>
#include <atomic>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/consent_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/build_info.h"
#include "server/http_endpoints.h"
#include "tests/test_util.h"

namespace consent {
namespace {

using ::consent::testing::ConsentdProcess;
using ::consent::testing::HttpRequest;
using ::consent::testing::ReadFile;
using ::consent::testing::RunCommand;
using ::consent::testing::TempDir;
using ::consent::testing::WriteFile;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

namespace fs = std::filesystem;

// The shipped policy under another version.
std::string PolicyVersion(const std::string& version) {
  std::string text = ReadFile(testing::DefaultPolicyPath());
  const size_t at = text.find("\nversion: \"");
  const size_t end = text.find('\n', at + 1);
  return text.substr(0, at) + "\nversion: \"" + version + "\"" + text.substr(end);
}

// A ConfigMap volume as the kubelet lays it out: the file the pod names is a
// symlink through `..data`, itself a symlink to a timestamped directory.
// Update writes a new directory and renames a new `..data` over the old.
class ConfigMapDir {
 public:
  explicit ConfigMapDir(const std::string& root) : root_(root) {
    fs::create_directories(root_);
    Update(PolicyVersion("configmap-1"));
    fs::create_symlink("..data/policy.textproto", path());
  }
  std::string path() const { return root_ + "/policy.textproto"; }
  void Update(const std::string& text) {
    const std::string generation = absl::StrCat("..2026_12_04_", ++generation_);
    fs::create_directories(root_ + "/" + generation);
    WriteFile(root_ + "/" + generation + "/policy.textproto", text);
    fs::create_symlink(generation, root_ + "/..data_tmp");
    fs::rename(root_ + "/..data_tmp", root_ + "/..data");
  }

 private:
  std::string root_;
  int generation_ = 0;
};

class OperationsTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> extra_args, const std::string& policy = "") {
    ConsentdProcess::Options options;
    options.data_dir = dir_.Sub("data");
    if (!policy.empty()) options.policy = policy;
    options.extra_args = {"--metrics_listen=127.0.0.1:0"};
    options.extra_args.insert(options.extra_args.end(), extra_args.begin(), extra_args.end());
    auto process = ConsentdProcess::Start(options);
    ASSERT_TRUE(process.ok()) << process.status();
    server_ = *std::move(process);
    client_ = Client::Connect(server_->address());
  }

  testing::HttpResponse Http(const std::string& method, const std::string& path) {
    auto response = HttpRequest(server_->metrics_address(), method, path);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? *response : testing::HttpResponse();
  }

  // Waits (up to 30 s) until the active policy has `version`.
  bool AwaitPolicy(const std::string& version) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      auto policy = client_->GetPolicy();
      if (policy.ok() && policy->version() == version) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  double Metric(const std::string& series) {
    auto body = testing::HttpGet(server_->metrics_address(), "/metrics");
    auto value = testing::SampleValue(body.ok() ? *body : "", series);
    return value.ok() ? *value : -1;
  }

  TempDir dir_;
  std::unique_ptr<ConsentdProcess> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(OperationsTest, ProbesAnswerPlainTextBesideMetrics) {
  Start({});
  const std::string version = client_->GetPolicy()->version();

  testing::HttpResponse live = Http("GET", "/healthz");
  EXPECT_EQ(live.code, 200);
  EXPECT_EQ(live.body, "ok\n");
  EXPECT_THAT(live.headers, HasSubstr("Content-Type: text/plain; charset=utf-8\r\n"));

  testing::HttpResponse ready = Http("GET", "/readyz");
  EXPECT_EQ(ready.code, 200);
  EXPECT_EQ(ready.body, "ready\npolicy: " + version + "\nwrites: accepted\n");

  testing::HttpResponse head = Http("HEAD", "/readyz");
  EXPECT_EQ(head.code, 200);
  EXPECT_EQ(head.body, "");

  testing::HttpResponse post = Http("POST", "/healthz");
  EXPECT_EQ(post.code, 405);
  EXPECT_THAT(post.headers, HasSubstr("Allow: GET, HEAD\r\n"));
  EXPECT_EQ(Http("GET", "/healthz/more").code, 404);
  EXPECT_EQ(Http("GET", "/").code, 404);

  testing::HttpResponse metrics = Http("GET", "/metrics");
  EXPECT_EQ(metrics.code, 200);
  EXPECT_THAT(metrics.headers,
              HasSubstr("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
  EXPECT_THAT(metrics.body, HasSubstr(absl::StrCat("consent_build_info{version=\"", kBuildVersion,
                                                   "\",revision=\"", kBuildRevision, "\"} 1")));
}

// /readyz's 503 and its body, from the endpoint itself: a real server is
// not ready only for the instants of starting and draining.
TEST(HttpEndpointsTest, NotReadyIs503WithTheReason) {
  std::atomic<bool> ready{false};  // read on civetweb's threads
  auto endpoints = HttpEndpoints::Start("127.0.0.1:0", {}, [&ready] {
    return ready.load() ? Readiness{true, "ready\n"} : Readiness{false, "not ready: draining\n"};
  });
  ASSERT_TRUE(endpoints.ok()) << endpoints.status();
  const std::string address = absl::StrCat("127.0.0.1:", (*endpoints)->port());
  auto answer = HttpRequest(address, "GET", "/readyz");
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->code, 503);
  EXPECT_EQ(answer->body, "not ready: draining\n");
  ready = true;
  answer = HttpRequest(address, "GET", "/readyz");
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->code, 200);
  EXPECT_EQ(answer->body, "ready\n");
  EXPECT_EQ(HttpRequest(address, "GET", "/healthz")->code, 200);
}

TEST(HttpEndpointsTest, AnAddressInUseIsAClearError) {
  auto first = HttpEndpoints::Start("127.0.0.1:0", {}, [] { return Readiness{true, ""}; });
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string taken = absl::StrCat("127.0.0.1:", (*first)->port());
  auto second = HttpEndpoints::Start(taken, {}, [] { return Readiness{true, ""}; });
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(second.status().message()),
              StartsWith("cannot serve HTTP on --metrics_listen " + taken + ": "));
}

// Kubernetes updates a ConfigMap volume by renaming a symlink: the watcher
// reloads the new file, and a bad one is counted and left inactive.
TEST_F(OperationsTest, APolicyFileSwappedLikeAConfigMapIsReloaded) {
  ConfigMapDir config(dir_.Sub("configmap"));
  Start({"--policy_watch_interval=50ms"}, config.path());
  ASSERT_EQ(client_->GetPolicy()->version(), "configmap-1");

  config.Update(PolicyVersion("configmap-2"));
  ASSERT_TRUE(AwaitPolicy("configmap-2"));
  EXPECT_EQ(Metric("consent_policy_reloads_total{result=\"ok\"}"), 1);
  EXPECT_EQ(Http("GET", "/readyz").body, "ready\npolicy: configmap-2\nwrites: accepted\n");

  config.Update("version: \"broken\"\nno_such_field: 1\n");
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (Metric("consent_policy_reloads_total{result=\"error\"}") < 1 && absl::Now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(Metric("consent_policy_reloads_total{result=\"error\"}"), 1);
  EXPECT_EQ(client_->GetPolicy()->version(), "configmap-2");
  EXPECT_THAT(server_->Log(), HasSubstr("policy reload rejected, the active policy stays"));

  // The next good file is taken, and the broken one was not retried.
  config.Update(PolicyVersion("configmap-3"));
  ASSERT_TRUE(AwaitPolicy("configmap-3"));
  EXPECT_EQ(Metric("consent_policy_reloads_total{result=\"ok\"}"), 2);
  EXPECT_EQ(Metric("consent_policy_reloads_total{result=\"error\"}"), 1);
}

TEST_F(OperationsTest, BackupKeepRemovesTheOldestBackupsOnly) {
  const std::string backups = dir_.Sub("backups");
  Start({"--backup_dir=" + backups, "--backup_keep=2"});
  fs::create_directories(backups + "/not-a-backup");
  WriteFile(backups + "/notes.txt", "kept\n");
  for (const char* name : {"2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"}) {
    auto made = client_->CreateBackup(name);
    ASSERT_TRUE(made.ok()) << made.status();
  }
  std::vector<std::string> left;
  for (const auto& entry : fs::directory_iterator(backups)) {
    left.push_back(entry.path().filename().string());
  }
  std::sort(left.begin(), left.end());
  EXPECT_THAT(left, ElementsAre("2026-12-03", "2026-12-04", "not-a-backup", "notes.txt"));
  EXPECT_THAT(server_->Log(), HasSubstr("removed an old backup (--backup_keep)"));
}

TEST_F(OperationsTest, ConsentctlHealthExitsZeroOnlyWhenServing) {
  Start({});
  auto health = RunCommand({CONSENTCTL_PATH, "--target=" + server_->address(), "health"});
  EXPECT_EQ(health.exit_code, 0) << health.err;
  EXPECT_EQ(health.out, "consentd: SERVING\n");
  health = RunCommand(
      {CONSENTCTL_PATH, "--target=" + server_->address(), "health", "consent.v1.ConsentRegistry"});
  EXPECT_EQ(health.exit_code, 0) << health.err;
  EXPECT_EQ(health.out, "consent.v1.ConsentRegistry: SERVING\n");
  health = RunCommand({CONSENTCTL_PATH, "--target=" + server_->address(), "--json", "health"});
  EXPECT_EQ(health.out, "{\"status\":\"SERVING\"}\n");
  health = RunCommand({CONSENTCTL_PATH, "--target=" + server_->address(), "health", "no.Such"});
  EXPECT_EQ(health.exit_code, 1);
  EXPECT_EQ(health.err, "consentctl: NOT_FOUND: service name unknown\n");
  server_->Terminate();
  health =
      RunCommand({CONSENTCTL_PATH, "--target=" + server_->address(), "--timeout=2s", "health"});
  EXPECT_EQ(health.exit_code, 1);
  EXPECT_THAT(health.err, StartsWith("consentctl: UNAVAILABLE: "));
}

TEST(ConsentdFlagsTest, VersionNamesTheBuild) {
  auto version = RunCommand({CONSENTD_PATH, "--version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_EQ(version.out,
            absl::StrCat("consentd ", kBuildVersion, " (revision ", kBuildRevision, ")\n"));
}

TEST(ConsentdFlagsTest, BadOperatorFlagsStopStartUp) {
  TempDir dir;
  for (const std::string& flag :
       {std::string("--block_cache_mib=4"), std::string("--policy_watch_interval=-1s"),
        std::string("--backup_keep=-1"), std::string("--malloc_retain_mib=33"),
        std::string("--malloc_retain_mib=-1")}) {
    auto run = RunCommand({CONSENTD_PATH, "--data_dir=" + dir.Sub("data"),
                           "--policy=" + testing::DefaultPolicyPath(), flag});
    EXPECT_EQ(run.exit_code, 1) << flag;
    EXPECT_THAT(run.err + run.out, HasSubstr(flag.substr(0, flag.find('=')))) << flag;
  }
}

}  // namespace
}  // namespace consent
