// consentd's Prometheus metrics. Their names are part of the service's
// contract: dashboards and alerts rely on them (reference in
// docs/operations.md).
//
// The hot path must not slow down measurably (docs/operations.md,
// "Overhead"), so counters and histograms here are sharded: each is a few
// cache-line-aligned slots, a thread adds to the slot of its own shard with
// one relaxed atomic add, and a scrape sums the slots. prometheus-cpp's own
// Counter (a compare-and-swap loop on one shared double) and Histogram (a
// mutex) made every check contend for the same cache lines across cores.
// Everything a call touches is resolved once at start-up (MethodMetrics) or
// cached per thread (decision counters per purpose), so a call pays no
// lock and no label lookup.
//
// Thread safe. Gauges that describe state (revision, policy, RocksDB,
// process) are not here: they are read at scrape time (server.cc).
#ifndef CONSENT_SERVER_METRICS_H_
#define CONSENT_SERVER_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "consent/v1/types.pb.h"
#include "google/protobuf/repeated_field.h"
#include "grpcpp/support/status.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace consent {

// gRPC's status code names as Go's grpc-prometheus spells them ("OK",
// "InvalidArgument", ...), so standard dashboards and alerts apply.
absl::string_view GrpcCodeLabel(grpc::StatusCode code);

namespace metrics_internal {

inline constexpr int kShards = 8;
// This thread's shard, fixed for the thread's life.
int ShardOfThisThread();

// A counter sharded by thread (kShards cache lines), so that threads
// counting at once do not share a line. Add is wait-free; Value sums the
// shards (a scrape's view, not a snapshot of one instant). Thread safe.
class Counter {
 public:
  void Add(int64_t n = 1) {
    shards_[ShardOfThisThread()].value.fetch_add(n, std::memory_order_relaxed);
  }
  int64_t Value() const;

 private:
  struct alignas(64) Shard {
    std::atomic<int64_t> value{0};
  };
  std::array<Shard, kShards> shards_;
};

// Observations are integers in the histogram's own unit (nanoseconds for
// durations, items for sizes); `scale` turns them into the exposed unit.
class Histogram {
 public:
  // `bounds`: upper bounds in the exposed unit, increasing.
  Histogram(const std::vector<double>& bounds, double scale);
  void Observe(int64_t value);
  prometheus::ClientMetric::Histogram Snapshot() const;

 private:
  static constexpr int kMaxBuckets = 20;  // including +Inf
  struct alignas(64) Shard {
    std::array<std::atomic<int64_t>, kMaxBuckets> counts{};
    std::atomic<int64_t> sum{0};
  };
  std::vector<int64_t> bounds_;  // in observation units
  std::vector<double> exposed_bounds_;
  double scale_;
  std::array<Shard, kShards> shards_;
};

}  // namespace metrics_internal

// The metrics of one RPC method. Started/Handled bracket every call
// (streams: the whole stream).
class MethodMetrics {
 public:
  void Started() { started_.Add(); }
  void Handled(grpc::StatusCode code, absl::Duration duration);
  // consent_batch_items: the number of items in one request or message.
  // Only for batch methods (no-op otherwise).
  void ObserveItems(int items);

 private:
  friend class Metrics;
  static constexpr int kCodes = 17;
  MethodMetrics(std::string service, std::string method, std::string type, bool batch);

  const std::string service_, method_, type_;
  metrics_internal::Counter started_;
  std::array<metrics_internal::Counter, kCodes> handled_;
  metrics_internal::Histogram seconds_;
  std::unique_ptr<metrics_internal::Histogram> items_;  // batch methods only
};

// What a write changed, the `kind` label of consent_writes_total.
enum class WriteKind { kPreference, kAttributes, kExclusion, kDeletion, kNotice, kImport, kCount };

// Why a call was turned away or ended by an admission limit, the `reason`
// label of consent_rejected_total.
enum class Rejection {
  kStreams,      // --max_streams open StreamCheck and WatchChanges streams
  kWorkerQueue,  // the GetSubject/ListHistory queue is full
  kCommitQueue,  // the store's commit queue is full
  kIdleWatcher,  // a WatchChanges client read nothing for --watch_idle_timeout
  kCount,
};

// Why a call was refused by authentication or authorization, the `reason`
// label of consent_auth_failures_total.
enum class AuthFailure {
  kNoCredentials,       // neither a token nor a client certificate
  kUnknownToken,        // a bearer token not in the auth file (or malformed)
  kUnknownCertificate,  // a verified certificate whose identity is not listed
  kMissingRole,         // a known caller without the RPC's role
  kCount,
};

// consent_calls_by_caller_total{caller,method}: one caller's calls of one method.
using CallerCallCounter = metrics_internal::Counter;

// Every metric consentd exports (docs/operations.md lists them), collected
// by the /metrics endpoint (http_endpoints.h) on each scrape. Series are created once and
// their pointers live as long as this object; recording is lock-free
// (sharded counters and histograms), so the hot paths never wait for a
// scrape. Thread safe.
class Metrics final : public prometheus::Collectable {
 public:
  Metrics();
  ~Metrics() override;
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Every family, for the /metrics endpoint.
  std::vector<prometheus::MetricFamily> Collect() const override;

  // Creates (once) the series of a method; `type` is grpc-prometheus's
  // grpc_type ("unary", "server_stream", "bidi_stream"). `batch` methods
  // also observe consent_batch_items. The pointer lives as long as this.
  MethodMetrics* Method(absl::string_view service, absl::string_view method, absl::string_view type,
                        bool batch = false);

  // consent_decisions_total{purpose,reason}. The purpose is one the policy
  // defines (callers count only decisions that were made), so the label
  // stays bounded by the policy's taxonomy.
  void CountDecision(const std::string& purpose, v1::DecisionReason reason);
  void CountDecisions(const std::string& purpose,
                      const google::protobuf::RepeatedPtrField<v1::Decision>& decisions);
  // Decisions already tallied: tally[r] decisions with reason r; tally[0]
  // (no reason) counts the items answered with an error instead, as
  // consent_check_items_invalid_total{purpose}. The RepeatedPtrField form
  // counts a decision holding an error the same way.
  void CountDecisions(const std::string& purpose, absl::Span<const int64_t> tally);

  // consent_writes_total{kind,result}: `count` writes (a batch of
  // preferences counts each; kind "import" counts an import's records)
  // ended with `code`: result "ok", "rejected"
  // (the caller's error: INVALID_ARGUMENT, FAILED_PRECONDITION, ABORTED,
  // ALREADY_EXISTS, NOT_FOUND, ...) or "error" (the server's).
  void CountWrites(WriteKind kind, grpc::StatusCode code, int count);

  // consent_policy_reloads_total{result="ok"|"error"}.
  void CountPolicyReload(bool ok);

  // consent_wal_sync_seconds: one synced RocksDB write (a group commit).
  void ObserveWalSync(absl::Duration duration);

  // Exposes the replication metrics below (standalone has none). Set
  // before serving.
  void set_replicated() { replicated_.store(true, std::memory_order_relaxed); }
  // consent_replication_append_seconds: one append to the replicated
  // command log that its quorum acknowledged; failed appends count in
  // consent_replication_append_failures_total.
  void ObserveAppend(absl::Duration duration, bool acknowledged);

  // consent_min_revision_waits_total{result="reached"|"timeout"}: reads
  // that waited for this replica to apply their min_revision.
  void CountRevisionWait(bool reached);

  // consent_rejected_total{reason}.
  void CountRejected(Rejection reason);

  // consent_auth_failures_total{reason}.
  void CountAuthFailure(AuthFailure reason);

  // consent_calls_by_caller_total{caller,method}: the counter of one pair,
  // created on first use and kept (callers come from the auth file, so the
  // label set is bounded). The pointer lives as long as this.
  CallerCallCounter* CallerCalls(absl::string_view caller, absl::string_view method);

 private:
  static constexpr int kReasons = v1::DecisionReason_ARRAYSIZE;
  using ReasonCounters = std::array<metrics_internal::Counter, kReasons>;
  ReasonCounters* DecisionCounters(const std::string& purpose);

  // Distinguishes instances in the per-thread purpose cache.
  const uint64_t generation_;
  std::array<std::array<metrics_internal::Counter, 3>, static_cast<int>(WriteKind::kCount)> writes_;
  std::array<metrics_internal::Counter, 2> reloads_;
  std::array<metrics_internal::Counter, static_cast<int>(Rejection::kCount)> rejected_;
  std::array<metrics_internal::Counter, static_cast<int>(AuthFailure::kCount)> auth_failures_;
  metrics_internal::Histogram wal_sync_;
  metrics_internal::Histogram appends_;
  metrics_internal::Counter append_failures_;
  std::array<metrics_internal::Counter, 2> revision_waits_;  // reached, timeout
  std::atomic<bool> replicated_{false};

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<MethodMetrics>> methods_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::unique_ptr<ReasonCounters>> purposes_ ABSL_GUARDED_BY(mu_);
  // (caller, method) -> counter; std::map for a sorted exposition.
  std::map<std::pair<std::string, std::string>, std::unique_ptr<CallerCallCounter>> callers_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace consent

#endif  // CONSENT_SERVER_METRICS_H_
