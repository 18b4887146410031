// Unit tests of the log format, the metrics registry and /proc reading.
#include <unistd.h>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/process_stats.h"
#include "tests/test_util.h"

namespace consent {
namespace {

using ::consent::testing::SampleValue;
using ::testing::HasSubstr;

const absl::Time kTime = absl::FromUnixMillis(1795756743871);  // 2026-11-27T05:19:03.871Z

TEST(LogTest, HumanLineHasTimeLevelMessageAndFields) {
  EXPECT_EQ(FormatLogLine(LogFormat::kHuman, kTime, LogLevel::kWarning, "policy reload rejected",
                          {{"policy", "/etc/p.textproto"}, {"error", "line 2: no field"}}),
            "2026-11-27T05:19:03.871Z WARN policy reload rejected policy=/etc/p.textproto "
            "error=\"line 2: no field\"\n");
  EXPECT_EQ(FormatLogLine(LogFormat::kHuman, kTime, LogLevel::kInfo, "x", {{"empty", ""}}),
            "2026-11-27T05:19:03.871Z INFO x empty=\"\"\n");
}

TEST(LogTest, JsonLineEscapesEverything) {
  EXPECT_EQ(FormatLogLine(LogFormat::kJson, kTime, LogLevel::kDebug, "say \"hi\"\n",
                          {{"user_id", "a\\b"}, {"ctl", std::string("\x01", 1)}}),
            "{\"time\":\"2026-11-27T05:19:03.871Z\",\"level\":\"debug\",\"msg\":\"say "
            "\\\"hi\\\"\\n\",\"user_id\":\"a\\\\b\",\"ctl\":\"\\u0001\"}\n");
}

TEST(LogTest, LevelsAndFormatsParse) {
  LogLevel level;
  ASSERT_TRUE(ParseLogLevel("DEBUG", &level));
  EXPECT_EQ(level, LogLevel::kDebug);
  ASSERT_TRUE(ParseLogLevel("warn", &level));
  EXPECT_EQ(level, LogLevel::kWarning);
  ASSERT_TRUE(ParseLogLevel("warning", &level));
  EXPECT_EQ(level, LogLevel::kWarning);
  EXPECT_FALSE(ParseLogLevel("verbose", &level));
  LogFormat format;
  ASSERT_TRUE(ParseLogFormat("json", &format));
  EXPECT_EQ(format, LogFormat::kJson);
  EXPECT_FALSE(ParseLogFormat("JSON5", &format));
}

TEST(LogTest, LevelFiltersLines) {
  SetLogLevel(LogLevel::kWarning);
  EXPECT_FALSE(LogEnabled(LogLevel::kInfo));
  EXPECT_TRUE(LogEnabled(LogLevel::kError));
  SetLogLevel(LogLevel::kInfo);
  EXPECT_FALSE(LogEnabled(LogLevel::kDebug));
  EXPECT_TRUE(LogEnabled(LogLevel::kInfo));
}

std::string Expose(Metrics& metrics) {
  return prometheus::TextSerializer().Serialize(metrics.Collect());
}

TEST(MetricsTest, CodesAreNamedAsGrpcPrometheusNamesThem) {
  EXPECT_EQ(GrpcCodeLabel(grpc::StatusCode::OK), "OK");
  EXPECT_EQ(GrpcCodeLabel(grpc::StatusCode::CANCELLED), "Canceled");
  EXPECT_EQ(GrpcCodeLabel(grpc::StatusCode::INVALID_ARGUMENT), "InvalidArgument");
  EXPECT_EQ(GrpcCodeLabel(grpc::StatusCode::FAILED_PRECONDITION), "FailedPrecondition");
  EXPECT_EQ(GrpcCodeLabel(grpc::StatusCode::UNAUTHENTICATED), "Unauthenticated");
  EXPECT_EQ(GrpcCodeLabel(static_cast<grpc::StatusCode>(99)), "Unknown");
}

TEST(MetricsTest, MethodSeriesExistBeforeTheFirstCallAndCountEachCode) {
  Metrics metrics;
  MethodMetrics* check = metrics.Method("consent.v1.ConsentRegistry", "Check", "unary");
  EXPECT_EQ(check, metrics.Method("consent.v1.ConsentRegistry", "Check", "unary"));
  const std::string labels =
      "grpc_method=\"Check\",grpc_service=\"consent.v1.ConsentRegistry\",grpc_type=\"unary\"";
  std::string m = Expose(metrics);
  EXPECT_EQ(*SampleValue(m, "grpc_server_handled_total{grpc_code=\"Unavailable\"," + labels + "}"),
            0);
  check->Started();
  check->Handled(grpc::StatusCode::UNAVAILABLE, absl::Microseconds(300));
  check->Started();
  check->Handled(grpc::StatusCode::OK, absl::Microseconds(40));
  m = Expose(metrics);
  EXPECT_EQ(*SampleValue(m, "grpc_server_started_total{" + labels + "}"), 2);
  EXPECT_EQ(*SampleValue(m, "grpc_server_handled_total{grpc_code=\"Unavailable\"," + labels + "}"),
            1);
  EXPECT_EQ(*SampleValue(m, "grpc_server_handled_total{grpc_code=\"OK\"," + labels + "}"), 1);
  // Buckets from 50 µs: the 40 µs call is in the first, the 300 µs one from 500 µs on.
  EXPECT_EQ(*SampleValue(m, "grpc_server_handling_seconds_bucket{" + labels + ",le=\"5e-05\"}"), 1);
  EXPECT_EQ(*SampleValue(m, "grpc_server_handling_seconds_bucket{" + labels + ",le=\"0.00025\"}"),
            1);
  EXPECT_EQ(*SampleValue(m, "grpc_server_handling_seconds_bucket{" + labels + ",le=\"0.0005\"}"),
            2);
  EXPECT_EQ(*SampleValue(m, "grpc_server_handling_seconds_bucket{" + labels + ",le=\"5\"}"), 2);
  // Not a batch method: no consent_batch_items series.
  check->ObserveItems(10);
  EXPECT_FALSE(
      SampleValue(Expose(metrics), "consent_batch_items_count{grpc_method=\"Check\"}").ok());
}

TEST(MetricsTest, DecisionsAreTalliedByPurposeAndReason) {
  Metrics metrics;
  google::protobuf::RepeatedPtrField<v1::Decision> decisions;
  for (auto reason : {v1::DECISION_REASON_ALLOWED_DEFAULT, v1::DECISION_REASON_DENIED_OBJECTION,
                      v1::DECISION_REASON_ALLOWED_DEFAULT}) {
    decisions.Add()->set_reason(reason);
  }
  // An invalid item's answer: no reason, an error.
  decisions.Add()->mutable_error()->set_code(3);
  metrics.CountDecisions("ai_training", decisions);
  metrics.CountDecision("ai_training.generative", v1::DECISION_REASON_DENIED_MINOR);
  const std::string m = Expose(metrics);
  EXPECT_EQ(*SampleValue(m, "consent_check_items_invalid_total{purpose=\"ai_training\"}"), 1);
  EXPECT_EQ(
      *SampleValue(m, "consent_check_items_invalid_total{purpose=\"ai_training.generative\"}"), 0);
  EXPECT_EQ(*SampleValue(
                m, "consent_decisions_total{purpose=\"ai_training\",reason=\"ALLOWED_DEFAULT\"}"),
            2);
  EXPECT_EQ(*SampleValue(
                m, "consent_decisions_total{purpose=\"ai_training\",reason=\"DENIED_OBJECTION\"}"),
            1);
  EXPECT_EQ(
      *SampleValue(m, "consent_decisions_total{purpose=\"ai_training\",reason=\"DENIED_MINOR\"}"),
      0);
  EXPECT_EQ(
      *SampleValue(
          m, "consent_decisions_total{purpose=\"ai_training.generative\",reason=\"DENIED_MINOR\"}"),
      1);
  EXPECT_THAT(m, ::testing::Not(HasSubstr("reason=\"UNSPECIFIED\"")));
}

TEST(MetricsTest, WritesAreCountedByKindAndResult) {
  Metrics metrics;
  metrics.CountWrites(WriteKind::kPreference, grpc::StatusCode::OK, 100);
  metrics.CountWrites(WriteKind::kPreference, grpc::StatusCode::ABORTED, 1);
  metrics.CountWrites(WriteKind::kDeletion, grpc::StatusCode::ALREADY_EXISTS, 1);
  metrics.CountWrites(WriteKind::kExclusion, grpc::StatusCode::INTERNAL, 1);
  metrics.CountWrites(WriteKind::kAttributes, grpc::StatusCode::UNAVAILABLE, 1);
  const std::string m = Expose(metrics);
  EXPECT_EQ(*SampleValue(m, "consent_writes_total{kind=\"preference\",result=\"ok\"}"), 100);
  EXPECT_EQ(*SampleValue(m, "consent_writes_total{kind=\"preference\",result=\"rejected\"}"), 1);
  EXPECT_EQ(*SampleValue(m, "consent_writes_total{kind=\"deletion\",result=\"rejected\"}"), 1);
  EXPECT_EQ(*SampleValue(m, "consent_writes_total{kind=\"exclusion\",result=\"error\"}"), 1);
  EXPECT_EQ(*SampleValue(m, "consent_writes_total{kind=\"attributes\",result=\"error\"}"), 1);
  EXPECT_EQ(*SampleValue(m, "consent_writes_total{kind=\"attributes\",result=\"ok\"}"), 0);
}

TEST(MetricsTest, WalSyncAndReloads) {
  Metrics metrics;
  metrics.ObserveWalSync(absl::Microseconds(700));
  metrics.CountPolicyReload(false);
  const std::string m = Expose(metrics);
  EXPECT_EQ(*SampleValue(m, "consent_wal_sync_seconds_bucket{le=\"0.0005\"}"), 0);
  EXPECT_EQ(*SampleValue(m, "consent_wal_sync_seconds_bucket{le=\"0.001\"}"), 1);
  EXPECT_EQ(*SampleValue(m, "consent_policy_reloads_total{result=\"ok\"}"), 0);
  EXPECT_EQ(*SampleValue(m, "consent_policy_reloads_total{result=\"error\"}"), 1);
}

TEST(ProcessStatsTest, ReadsThisProcess) {
  auto stats = ReadProcessStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_GT(stats->resident_bytes, 1 << 20);
  EXPECT_GE(stats->virtual_bytes, stats->resident_bytes);
  EXPECT_GE(stats->open_fds, 3);  // stdin, stdout, stderr at least
  EXPECT_GT(stats->max_fds, stats->open_fds);
  EXPECT_GE(stats->threads, 1);
  EXPECT_GE(stats->cpu_seconds, 0);
  // Started within the last hour (ctest runs each case in its own process).
  const double now = absl::ToUnixSeconds(absl::Now());
  EXPECT_LE(stats->start_time_seconds, now + 1);
  EXPECT_GT(stats->start_time_seconds, now - 3600);
}

}  // namespace
}  // namespace consent
