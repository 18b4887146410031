// consent-bench, the binary, against a real consentd on a preloaded store:
// every mode runs, reports JSON, and finds no errors; mixed mode finds no
// read-your-writes violations. consent-empty-server, on both of its server
// APIs, answers the check modes, and the write modes on the callback API. (Speed is measured by
// bench/run.sh, not here.)
#include "absl/strings/str_cat.h"
#include "client/consent_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace consent {
namespace {

using ::consent::testing::CommandResult;
using ::consent::testing::ConsentdProcess;
using ::consent::testing::RunCommand;
using ::consent::testing::TempDir;
using ::testing::HasSubstr;

// Runs consent-bench in `mode` briefly against `target` (20,000 users, 8
// in flight, batches of 50) and checks that it reported a JSON line with
// calls and no errors; returns that line.
std::string RunBench(const std::string& target, const std::string& mode,
                     std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {CONSENT_BENCH_PATH, "--target=" + target, "--users=20000",
                                   "--duration=1s",    "--warmup=200ms",     "--concurrency=8",
                                   "--batch=50"};
  args.insert(args.end(), extra.begin(), extra.end());
  args.push_back(mode);
  CommandResult result = RunCommand(args);
  EXPECT_EQ(result.exit_code, 0) << mode << ": " << result.err;
  EXPECT_THAT(result.out, HasSubstr(absl::StrCat("{\"mode\":\"", mode, "\"")));
  EXPECT_THAT(result.out, HasSubstr("\"errors\":{}"));
  EXPECT_THAT(result.out, HasSubstr("\"read_your_writes_violations\":0"));
  EXPECT_THAT(result.out, HasSubstr("\"latency_us\":{\"p50\":"));
  EXPECT_THAT(result.out, ::testing::Not(HasSubstr("\"calls\":0,")));
  return result.out;
}

class BenchTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    CommandResult preload = RunCommand(
        {CONSENT_BENCH_PATH, "--data_dir=" + dir_->Sub("data"), "--users=20000", "preload"});
    ASSERT_EQ(preload.exit_code, 0) << preload.err;
    ASSERT_THAT(preload.out, HasSubstr("\"subjects\":20000,\"objecting\":2000,"));
    ConsentdProcess::Options options;
    options.data_dir = dir_->Sub("data");
    auto process = ConsentdProcess::Start(options);
    ASSERT_TRUE(process.ok()) << process.status();
    server_ = process->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    delete dir_;
  }

  // Runs one mode briefly; returns its JSON line.
  static std::string Bench(const std::string& mode, std::vector<std::string> extra = {}) {
    return RunBench(server_->address(), mode, std::move(extra));
  }

  static TempDir* dir_;
  static ConsentdProcess* server_;
};
TempDir* BenchTest::dir_ = nullptr;
ConsentdProcess* BenchTest::server_ = nullptr;

TEST_F(BenchTest, Unary) { Bench("unary"); }
TEST_F(BenchTest, UnaryAtFixedRateZipf) {
  EXPECT_THAT(Bench("unary", {"--rate=500", "--distribution=zipf"}), HasSubstr("\"rate\":500"));
}
TEST_F(BenchTest, Batch) {
  // 50 decisions per call.
  const std::string out = Bench("batch");
  EXPECT_THAT(out, HasSubstr("\"batch\":50"));
}
TEST_F(BenchTest, Stream) { Bench("stream"); }
TEST_F(BenchTest, Write) { Bench("write"); }
TEST_F(BenchTest, WriteBatch) { Bench("write-batch"); }
TEST_F(BenchTest, Notices) { Bench("notices"); }
TEST_F(BenchTest, MixedVerifiesReadYourWrites) { Bench("mixed", {"--read_ratio=0.5"}); }

// The same read-your-writes check against consentd reading subjects from
// RocksDB (--subject_index=false) rather than its in-memory index (the
// default, above): every acknowledged write must be visible either way.
TEST_F(BenchTest, MixedVerifiesReadYourWritesWithoutSubjectIndex) {
  const std::string data = dir_->Sub("plain");
  CommandResult preload =
      RunCommand({CONSENT_BENCH_PATH, "--data_dir=" + data, "--users=20000", "preload"});
  ASSERT_EQ(preload.exit_code, 0) << preload.err;
  ConsentdProcess::Options options;
  options.data_dir = data;
  options.extra_args = {"--subject_index=false"};
  auto plain = ConsentdProcess::Start(options);
  ASSERT_TRUE(plain.ok()) << plain.status();
  CommandResult result = RunCommand({CONSENT_BENCH_PATH, "--target=" + (*plain)->address(),
                                     "--users=20000", "--duration=2s", "--warmup=200ms",
                                     "--concurrency=16", "--read_ratio=0.5", "mixed"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("\"errors\":{}"));
  EXPECT_THAT(result.out, HasSubstr("\"read_your_writes_violations\":0"));
  EXPECT_THAT(result.out, ::testing::Not(HasSubstr("\"calls\":0,")));
}

// The request bench/run.sh's h2load rows replay: one gRPC-framed Check,
// which consentd answers as the Check it encodes.
TEST(CheckRequestTest, IsAFramedCheckThatConsentdAnswers) {
  CommandResult result = RunCommand({CONSENT_BENCH_PATH, "--users=20000", "check-request"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const std::string& frame = result.out;
  ASSERT_GE(frame.size(), 5u);
  EXPECT_EQ(frame[0], '\0');  // not compressed
  const size_t length = (static_cast<size_t>(static_cast<uint8_t>(frame[1])) << 24) |
                        (static_cast<size_t>(static_cast<uint8_t>(frame[2])) << 16) |
                        (static_cast<size_t>(static_cast<uint8_t>(frame[3])) << 8) |
                        static_cast<size_t>(static_cast<uint8_t>(frame[4]));
  ASSERT_EQ(length, frame.size() - 5);
  v1::CheckRequest request;
  ASSERT_TRUE(request.ParseFromString(frame.substr(5)));
  EXPECT_EQ(request.user_id(), "user-10000");
  EXPECT_EQ(request.purpose(), "ai_training");
  TempDir dir;
  ConsentdProcess::Options options;
  options.data_dir = dir.Sub("data");
  auto server = ConsentdProcess::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  std::unique_ptr<Client> client = Client::Connect((*server)->address());
  absl::StatusOr<v1::CheckResponse> response = client->Check(request);
  ASSERT_TRUE(response.ok()) << response.status();
  // No such subject: its age is unknown, which the shipped policy denies.
  EXPECT_EQ(response->decision().reason(), v1::DECISION_REASON_DENIED_MINOR);
}

TEST_F(BenchTest, BadUsage) {
  EXPECT_EQ(RunCommand({CONSENT_BENCH_PATH, "nonsense"}).exit_code, 2);
  EXPECT_EQ(RunCommand({CONSENT_BENCH_PATH, "--distribution=pareto", "unary"}).exit_code, 2);
}

// consent-empty-server, the floor bench/run.sh measures consentd against,
// on each of its server APIs: every check mode it serves is answered, with
// no errors.
class EmptyServerTest : public ::testing::TestWithParam<std::string> {};

TEST_P(EmptyServerTest, AnswersEveryCheckMode) {
  TempDir dir;
  ConsentdProcess::Options options;
  options.data_dir = dir.Sub("empty");
  options.command = {CONSENT_EMPTY_SERVER_PATH, "--listen=127.0.0.1:0", "--api=" + GetParam()};
  auto server = ConsentdProcess::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string target = (*server)->address();
  RunBench(target, "unary");
  EXPECT_THAT(RunBench(target, "batch"), HasSubstr("\"batch\":50"));
  RunBench(target, "stream");
}

INSTANTIATE_TEST_SUITE_P(Apis, EmptyServerTest, ::testing::Values("callback", "cq"));

// The write ceiling: SetPreference and BatchSetPreferences answered, as
// consentd answers them, with nothing written; answered on the thread
// that received them, or from another one (--answer_writes).
class EmptyServerWritesTest : public ::testing::TestWithParam<std::string> {};

TEST_P(EmptyServerWritesTest, AnswersWritesWithoutWriting) {
  TempDir dir;
  ConsentdProcess::Options options;
  options.data_dir = dir.Sub("empty");
  options.command = {CONSENT_EMPTY_SERVER_PATH, "--listen=127.0.0.1:0",
                     "--answer_writes=" + GetParam()};
  auto server = ConsentdProcess::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  RunBench((*server)->address(), "write");
  EXPECT_THAT(RunBench((*server)->address(), "write-batch"), HasSubstr("\"batch\":50"));
}

INSTANTIATE_TEST_SUITE_P(Answers, EmptyServerWritesTest, ::testing::Values("inline", "deferred"));

TEST(EmptyServerUsageTest, BadFlagValueExitsWithUsageError) {
  EXPECT_EQ(RunCommand({CONSENT_EMPTY_SERVER_PATH, "--api=sync"}).exit_code, 2);
  EXPECT_EQ(RunCommand({CONSENT_EMPTY_SERVER_PATH, "--api=cq", "--cq_threads=0"}).exit_code, 2);
  EXPECT_EQ(RunCommand({CONSENT_EMPTY_SERVER_PATH, "--answer_writes=later"}).exit_code, 2);
  EXPECT_EQ(RunCommand({CONSENT_EMPTY_SERVER_PATH, "--malloc_retain_mib=33"}).exit_code, 2);
}

}  // namespace
}  // namespace consent
