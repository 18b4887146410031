// The JetStream command log against a real three-node NATS cluster.
#include "storage/jetstream_log.h"

#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/nats_cluster.h"
#include "tests/test_certs.h"
#include "tests/test_util.h"

namespace consent::storage {
namespace {

constexpr int64_t kMaxPayload = 8 << 20;

class JetStreamLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto cluster = testing::NatsCluster::Start(3, kMaxPayload);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = std::move(*cluster);
  }

  JetStreamLogOptions Options() const {
    JetStreamLogOptions options;
    options.urls = cluster_->urls();
    options.max_message_bytes = kMaxPayload;
    options.timeout = absl::Seconds(10);
    return options;
  }

  std::unique_ptr<JetStreamLog> OpenLog() {
    auto log = JetStreamLog::Open(Options());
    EXPECT_TRUE(log.ok()) << log.status() << "\nnode 0's log:\n" << cluster_->Log(0);
    return log.ok() ? std::move(*log) : nullptr;
  }

  std::unique_ptr<testing::NatsCluster> cluster_;
};

TEST_F(JetStreamLogTest, CommandsAreReadBackInOrderFromAnySequence) {
  auto log = OpenLog();
  ASSERT_NE(log, nullptr);
  for (int i = 1; i <= 5; ++i) {
    auto appended = log->Append(absl::StrCat("req-", i), absl::StrCat("command ", i));
    ASSERT_TRUE(appended.ok()) << appended.status();
    EXPECT_EQ(appended->sequence, static_cast<uint64_t>(i));
    EXPECT_FALSE(appended->duplicate);
  }
  EXPECT_EQ(*log->LastSequence(), 5u);
  auto state = log->GetState();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->first_sequence, 1u);
  EXPECT_EQ(state->last_sequence, 5u);
  EXPECT_THAT(state->leader, ::testing::MatchesRegex("n[0-2]"));

  auto reader = log->ReadFrom(3);
  ASSERT_TRUE(reader.ok()) << reader.status();
  for (uint64_t expected = 3; expected <= 5; ++expected) {
    auto next = (*reader)->Next(absl::Seconds(10));
    ASSERT_TRUE(next.ok()) << next.status();
    ASSERT_TRUE(next->has_value());
    EXPECT_EQ((*next)->sequence, expected);
    EXPECT_EQ((*next)->msg_id, absl::StrCat("req-", expected));
    EXPECT_EQ((*next)->bytes, absl::StrCat("command ", expected));
  }
  // Nothing more until something is appended; then exactly that.
  auto idle = (*reader)->Next(absl::Milliseconds(200));
  ASSERT_TRUE(idle.ok()) << idle.status();
  EXPECT_FALSE(idle->has_value());
  ASSERT_TRUE(log->Append("", "command 6").ok());
  auto sixth = (*reader)->Next(absl::Seconds(10));
  ASSERT_TRUE(sixth.ok() && sixth->has_value());
  EXPECT_EQ((*sixth)->sequence, 6u);
  EXPECT_EQ((*sixth)->msg_id, "");

  auto second = log->Get(2);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->bytes, "command 2");
  EXPECT_EQ(second->msg_id, "req-2");
  EXPECT_EQ(log->Get(7).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(JetStreamLogTest, ARepeatedMessageIdIsADuplicateOfTheFirst) {
  auto log = OpenLog();
  ASSERT_NE(log, nullptr);
  auto first = log->Append("req-a", "objection");
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(log->Append("req-b", "consent").ok());
  auto again = log->Append("req-a", "objection");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(again->sequence, first->sequence);
  EXPECT_EQ(*log->LastSequence(), 2u);
}

TEST_F(JetStreamLogTest, ALargestWriteFitsAndALargerOneIsRefused) {
  auto log = OpenLog();
  ASSERT_NE(log, nullptr);
  const std::string largest(kMaxPayload - 4096, 'x');
  auto stored = log->Append("big", largest);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(log->Get(stored->sequence)->bytes.size(), largest.size());
  auto refused = log->Append("bigger", std::string(kMaxPayload + 1, 'x'));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
}

TEST_F(JetStreamLogTest, OpeningAgainKeepsTheStreamAndItsCommands) {
  {
    auto log = OpenLog();
    ASSERT_NE(log, nullptr);
    ASSERT_TRUE(log->Append("req-1", "one").ok());
  }
  auto log = OpenLog();
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(*log->LastSequence(), 1u);
  JetStreamLogOptions other = Options();
  other.replicas = 1;
  EXPECT_EQ(JetStreamLog::Open(other).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(JetStreamLogTest, AppendsGoOnWithOneNodeDownAndStopWithTwo) {
  auto log = OpenLog();
  ASSERT_NE(log, nullptr);
  ASSERT_TRUE(log->Append("before", "0").ok());
  auto reader = log->ReadFrom(1);
  ASSERT_TRUE(reader.ok()) << reader.status();
  auto first = (*reader)->Next(absl::Seconds(10));
  ASSERT_TRUE(first.ok() && first->has_value());
  EXPECT_EQ((*first)->sequence, 1u);
  cluster_->Kill(0);
  // A new stream leader may have to be elected: retried under the same id,
  // the command is stored once.
  absl::StatusOr<JetStreamLog::Appended> appended;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  do {
    appended = log->Append("after-one", "1");
  } while (!appended.ok() && absl::IsUnavailable(appended.status()) && absl::Now() < deadline);
  ASSERT_TRUE(appended.ok()) << appended.status();
  EXPECT_EQ(appended->sequence, 2u);
  // The reader goes on after the failover: the next command, once.
  std::optional<LoggedCommand> second;
  const absl::Time read_deadline = absl::Now() + absl::Seconds(60);
  while (!second && absl::Now() < read_deadline) {
    auto next = (*reader)->Next(absl::Seconds(1));
    ASSERT_TRUE(next.ok()) << next.status();
    second = *next;
  }
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->sequence, 2u);
  EXPECT_EQ(second->msg_id, "after-one");

  cluster_->Kill(1);
  auto without_quorum = log->Append("after-two", "2");
  EXPECT_EQ(without_quorum.status().code(), absl::StatusCode::kUnavailable)
      << without_quorum.status();
}

// Open with `options` succeeds, and an append is read back.
void ExpectOpensAndAppends(const JetStreamLogOptions& options, testing::NatsCluster& cluster) {
  auto log = JetStreamLog::Open(options);
  ASSERT_TRUE(log.ok()) << log.status() << "\n" << cluster.Log(0);
  auto appended = (*log)->Append("req-1", "command 1");
  ASSERT_TRUE(appended.ok()) << appended.status();
  EXPECT_EQ((*log)->Get(appended->sequence)->bytes, "command 1");
}

// Open with `options` is refused by the servers' authorization.
void ExpectUnauthorized(const JetStreamLogOptions& options) {
  auto refused = JetStreamLog::Open(options);
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), ::testing::HasSubstr("uthorization"));
}

// Servers that take clients over TLS only, with a client certificate and a
// token: the log connects with all three, and not without any one of them.
TEST(JetStreamLogSecurityTest, ConnectsWithTlsAClientCertificateAndAToken) {
  testing::TestCertificates certs;
  certs.MakeCa("nats");
  certs.MakeCert("nats", "server", testing::ServerExtensions());
  certs.MakeCa("clients");
  certs.MakeCert("clients", "consentd", testing::ClientExtensions(""));
  testing::NatsCluster::Options cluster_options;
  cluster_options.tls_cert_file = certs.Path("server.pem");
  cluster_options.tls_key_file = certs.Path("server.key");
  cluster_options.tls_ca_file = certs.Path("clients-ca.pem");
  cluster_options.token = "s3cret-token";
  auto cluster = testing::NatsCluster::Start(cluster_options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();

  JetStreamLogOptions options;
  options.urls = (*cluster)->urls();
  options.tls_ca_file = certs.Path("nats-ca.pem");
  options.tls_cert_file = certs.Path("consentd.pem");
  options.tls_key_file = certs.Path("consentd.key");
  options.token = "s3cret-token";
  ASSERT_NO_FATAL_FAILURE(ExpectOpensAndAppends(options, **cluster));

  options.open_timeout = absl::Seconds(2);
  options.timeout = absl::Seconds(2);
  JetStreamLogOptions wrong_token = options;
  wrong_token.token = "guess";
  ExpectUnauthorized(wrong_token);
  JetStreamLogOptions no_certificate = options;
  no_certificate.tls_cert_file.clear();
  no_certificate.tls_key_file.clear();
  EXPECT_FALSE(JetStreamLog::Open(no_certificate).ok());
  JetStreamLogOptions plain = options;
  plain.tls_ca_file.clear();
  plain.tls_cert_file.clear();
  plain.tls_key_file.clear();
  EXPECT_FALSE(JetStreamLog::Open(plain).ok());
  JetStreamLogOptions key_without_certificate = options;
  key_without_certificate.tls_cert_file.clear();
  EXPECT_EQ(JetStreamLog::Open(key_without_certificate).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// NKey pairs made for these tests (Ed25519 keys in NATS's NKey encoding:
// the public key "U...", the seed "SU...").
constexpr char kUserNKey[] = "UAALTIE3GKO76BLJ4X3J2IR5TEVHBE557D277SYIJAKOKC5CTMNSXF3C";
constexpr char kUserSeed[] = "SUAPOPSYE2UH3H5RUD4KVPEWCPP5ZMZSR5N3YWOQUYYCUKIS7HVKVIVG2I";
constexpr char kOtherNKey[] = "UANMFG737LM2SKPMGLN5NUPY2Q3ON7SB2TJ7OG2XSB436MKX5FZAYOKZ";
constexpr char kOtherSeed[] = "SUAJS22CIQ5YA34EEN4YRH6BE2JOUS3UBIE2BKGFW6WLUKX3Z4WTYHNT3U";

// Servers that know one NKey user: the log signs in as that user with its
// seed, and not as another user, nor with a seed that is not the key's.
TEST(JetStreamLogSecurityTest, ConnectsAsAnNKeyUser) {
  testing::NatsCluster::Options cluster_options;
  cluster_options.nkey = kUserNKey;
  auto cluster = testing::NatsCluster::Start(cluster_options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  testing::TempDir dir;
  testing::WriteFile(dir.Sub("user.nk"), absl::StrCat(kUserSeed, "\n"));
  testing::WriteFile(dir.Sub("other.nk"), absl::StrCat(kOtherSeed, "\n"));

  JetStreamLogOptions options;
  options.urls = (*cluster)->urls();
  options.nkey = kUserNKey;
  options.nkey_seed_file = dir.Sub("user.nk");
  ASSERT_NO_FATAL_FAILURE(ExpectOpensAndAppends(options, **cluster));

  options.open_timeout = absl::Seconds(2);
  options.timeout = absl::Seconds(2);
  JetStreamLogOptions other_user = options;
  other_user.nkey = kOtherNKey;
  other_user.nkey_seed_file = dir.Sub("other.nk");
  ExpectUnauthorized(other_user);
  JetStreamLogOptions wrong_seed = options;
  wrong_seed.nkey_seed_file = dir.Sub("other.nk");
  ExpectUnauthorized(wrong_seed);
  JetStreamLogOptions anonymous = options;
  anonymous.nkey.clear();
  anonymous.nkey_seed_file.clear();
  EXPECT_FALSE(JetStreamLog::Open(anonymous).ok());

  // Options that cannot work are refused before connecting.
  JetStreamLogOptions no_seed = options;
  no_seed.nkey_seed_file.clear();
  EXPECT_EQ(JetStreamLog::Open(no_seed).status().code(), absl::StatusCode::kInvalidArgument);
  JetStreamLogOptions with_token = options;
  with_token.token = "s3cret-token";
  EXPECT_EQ(JetStreamLog::Open(with_token).status().code(), absl::StatusCode::kInvalidArgument);
  JetStreamLogOptions seed_as_key = options;
  seed_as_key.nkey = kUserSeed;
  auto malformed = JetStreamLog::Open(seed_as_key);
  EXPECT_EQ(malformed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(malformed.status().message(), ::testing::HasSubstr("56 characters starting with U"));
  EXPECT_THAT(malformed.status().message(), ::testing::Not(::testing::HasSubstr("SUAP")));
}

}  // namespace
}  // namespace consent::storage
