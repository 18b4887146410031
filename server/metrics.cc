#include "server/metrics.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <iterator>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace consent {
namespace {

using metrics_internal::Counter;
using metrics_internal::Histogram;

// 50 µs to 5 s: a cached check takes tens of microseconds, a batch of
// 10,000 items or a synced write milliseconds.
const std::vector<double> kHandlingBuckets = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                              0.005,   0.01,   0.025,   0.05,   0.1,   0.25,
                                              0.5,     1,      2.5,     5};
// An fsync on a local SSD takes 0.1-2 ms; seconds mean the disk is failing.
const std::vector<double> kWalSyncBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                             0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5};
// Batches hold 1 to 10,000 items.
// An append waits for a quorum of NATS servers to store the command: a
// millisecond or so on one network; seconds during a leader election.
const std::vector<double> kAppendBuckets = {0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                            0.05,    0.1,    0.25,  0.5,    1,     2.5,  5};
const std::vector<double> kItemBuckets = {1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000};
constexpr double kNanos = 1e-9;

constexpr const char* kWriteKinds[] = {"preference", "attributes", "exclusion",
                                       "deletion",   "notice",     "import"};
static_assert(std::size(kWriteKinds) == static_cast<size_t>(WriteKind::kCount));
constexpr const char* kWriteResults[] = {"ok", "rejected", "error"};

std::atomic<uint64_t> g_generation{0};

int WriteResultIndex(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return 0;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED:
      return 1;
    default:
      return 2;
  }
}

bool IsReason(int reason) {
  return v1::DecisionReason_IsValid(reason) && reason != v1::DECISION_REASON_UNSPECIFIED;
}

// "DECISION_REASON_DENIED_OBJECTION" -> "DENIED_OBJECTION".
std::string ReasonLabel(int reason) {
  std::string name = v1::DecisionReason_Name(static_cast<v1::DecisionReason>(reason));
  absl::string_view view = name;
  absl::ConsumePrefix(&view, "DECISION_REASON_");
  return std::string(view);
}

prometheus::MetricFamily Family(std::string name, std::string help, prometheus::MetricType type) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  return family;
}

// Labels must be given sorted by name, as prometheus-cpp's own families
// expose them.
void AddCounter(prometheus::MetricFamily& family,
                std::vector<prometheus::ClientMetric::Label> labels, const Counter& counter) {
  prometheus::ClientMetric metric;
  metric.label = std::move(labels);
  metric.counter.value = static_cast<double>(counter.Value());
  family.metric.push_back(std::move(metric));
}

void AddHistogram(prometheus::MetricFamily& family,
                  std::vector<prometheus::ClientMetric::Label> labels, const Histogram& histogram) {
  prometheus::ClientMetric metric;
  metric.label = std::move(labels);
  metric.histogram = histogram.Snapshot();
  family.metric.push_back(std::move(metric));
}

}  // namespace

namespace metrics_internal {

int ShardOfThisThread() {
  thread_local const int shard =
      static_cast<int>(std::hash<std::thread::id>()(std::this_thread::get_id()) % kShards);
  return shard;
}

int64_t Counter::Value() const {
  int64_t total = 0;
  for (const Shard& s : shards_) total += s.value.load(std::memory_order_relaxed);
  return total;
}

Histogram::Histogram(const std::vector<double>& bounds, double scale)
    : exposed_bounds_(bounds), scale_(scale) {
  for (double b : bounds) bounds_.push_back(static_cast<int64_t>(std::llround(b / scale)));
  bounds_.resize(std::min<size_t>(bounds_.size(), kMaxBuckets - 1));
  exposed_bounds_.resize(bounds_.size());
}

void Histogram::Observe(int64_t value) {
  // Bucket i counts observations <= bounds_[i] (and above the one before);
  // the last counts the rest (+Inf).
  const size_t bucket = static_cast<size_t>(
      std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  Shard& shard = shards_[ShardOfThisThread()];
  shard.counts[bucket].fetch_add(1, std::memory_order_relaxed);
  shard.sum.fetch_add(value, std::memory_order_relaxed);
}

prometheus::ClientMetric::Histogram Histogram::Snapshot() const {
  prometheus::ClientMetric::Histogram out;
  std::vector<int64_t> counts(bounds_.size() + 1, 0);
  int64_t sum = 0;
  for (const Shard& shard : shards_) {
    for (size_t i = 0; i < counts.size(); ++i) {
      counts[i] += shard.counts[i].load(std::memory_order_relaxed);
    }
    sum += shard.sum.load(std::memory_order_relaxed);
  }
  uint64_t cumulative = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    cumulative += static_cast<uint64_t>(counts[i]);
    prometheus::ClientMetric::Bucket bucket;
    bucket.cumulative_count = cumulative;
    bucket.upper_bound =
        i < exposed_bounds_.size() ? exposed_bounds_[i] : std::numeric_limits<double>::infinity();
    out.bucket.push_back(bucket);
  }
  out.sample_count = cumulative;
  out.sample_sum = static_cast<double>(sum) * scale_;
  return out;
}

}  // namespace metrics_internal

absl::string_view GrpcCodeLabel(grpc::StatusCode code) {
  static constexpr const char* kNames[] = {
      "OK",       "Canceled",       "Unknown",          "InvalidArgument",   "DeadlineExceeded",
      "NotFound", "AlreadyExists",  "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
      "Aborted",  "OutOfRange",     "Unimplemented",    "Internal",          "Unavailable",
      "DataLoss", "Unauthenticated"};
  const int index = static_cast<int>(code);
  return index >= 0 && index < 17 ? kNames[index] : "Unknown";
}

MethodMetrics::MethodMetrics(std::string service, std::string method, std::string type, bool batch)
    : service_(std::move(service)),
      method_(std::move(method)),
      type_(std::move(type)),
      seconds_(kHandlingBuckets, kNanos),
      items_(batch ? std::make_unique<Histogram>(kItemBuckets, 1) : nullptr) {}

void MethodMetrics::Handled(grpc::StatusCode code, absl::Duration duration) {
  const int index = static_cast<int>(code);
  handled_[index >= 0 && index < kCodes ? index : static_cast<int>(grpc::StatusCode::UNKNOWN)]
      .Add();
  seconds_.Observe(absl::ToInt64Nanoseconds(duration));
}

void MethodMetrics::ObserveItems(int items) {
  if (items_ != nullptr) items_->Observe(items);
}

Metrics::Metrics()
    : generation_(++g_generation),
      wal_sync_(kWalSyncBuckets, kNanos),
      appends_(kAppendBuckets, kNanos) {}

Metrics::~Metrics() = default;

MethodMetrics* Metrics::Method(absl::string_view service, absl::string_view method,
                               absl::string_view type, bool batch) {
  absl::MutexLock lock(&mu_);
  for (const auto& m : methods_) {
    if (m->service_ == service && m->method_ == method) return m.get();
  }
  methods_.push_back(std::unique_ptr<MethodMetrics>(
      new MethodMetrics(std::string(service), std::string(method), std::string(type), batch)));
  return methods_.back().get();
}

Metrics::ReasonCounters* Metrics::DecisionCounters(const std::string& purpose) {
  // Per-thread cache: after a thread's first decision for a purpose, no
  // lock. Keyed by generation so a cache never serves another instance.
  struct Cache {
    uint64_t generation = 0;
    absl::flat_hash_map<std::string, ReasonCounters*> counters;
  };
  thread_local Cache cache;
  if (cache.generation != generation_) {
    cache.counters.clear();
    cache.generation = generation_;
  }
  auto it = cache.counters.find(purpose);
  if (it != cache.counters.end()) return it->second;
  absl::MutexLock lock(&mu_);
  auto& slot = purposes_[purpose];
  if (slot == nullptr) slot = std::make_unique<ReasonCounters>();
  cache.counters.emplace(purpose, slot.get());
  return slot.get();
}

void Metrics::CountDecision(const std::string& purpose, v1::DecisionReason reason) {
  if (IsReason(reason)) (*DecisionCounters(purpose))[reason].Add();
}

void Metrics::CountDecisions(const std::string& purpose,
                             const google::protobuf::RepeatedPtrField<v1::Decision>& decisions) {
  // Tallied locally first: one add per reason, not per item.
  std::array<int64_t, kReasons> tally{};
  for (const v1::Decision& d : decisions) {
    if (d.has_error()) {
      ++tally[v1::DECISION_REASON_UNSPECIFIED];
    } else if (IsReason(d.reason())) {
      ++tally[d.reason()];
    }
  }
  CountDecisions(purpose, tally);
}

void Metrics::CountDecisions(const std::string& purpose, absl::Span<const int64_t> tally) {
  ReasonCounters* counters = DecisionCounters(purpose);
  const int n = std::min(kReasons, static_cast<int>(tally.size()));
  // Index 0, no reason, counts the invalid items.
  for (int reason = 0; reason < n; ++reason) {
    if (tally[reason] > 0) (*counters)[reason].Add(tally[reason]);
  }
}

void Metrics::CountWrites(WriteKind kind, grpc::StatusCode code, int count) {
  writes_[static_cast<int>(kind)][WriteResultIndex(code)].Add(count);
}

void Metrics::CountPolicyReload(bool ok) { reloads_[ok ? 0 : 1].Add(); }

void Metrics::CountRejected(Rejection reason) { rejected_[static_cast<int>(reason)].Add(); }

void Metrics::CountAuthFailure(AuthFailure reason) {
  auth_failures_[static_cast<int>(reason)].Add();
}

CallerCallCounter* Metrics::CallerCalls(absl::string_view caller, absl::string_view method) {
  absl::MutexLock lock(&mu_);
  auto& counter = callers_[{std::string(caller), std::string(method)}];
  if (counter == nullptr) counter = std::make_unique<CallerCallCounter>();
  return counter.get();
}

void Metrics::ObserveWalSync(absl::Duration duration) {
  wal_sync_.Observe(absl::ToInt64Nanoseconds(duration));
}

void Metrics::ObserveAppend(absl::Duration duration, bool acknowledged) {
  if (acknowledged) {
    appends_.Observe(absl::ToInt64Nanoseconds(duration));
  } else {
    append_failures_.Add();
  }
}

void Metrics::CountRevisionWait(bool reached) { revision_waits_[reached ? 0 : 1].Add(); }

std::vector<prometheus::MetricFamily> Metrics::Collect() const {
  using prometheus::MetricType;
  auto started =
      Family("grpc_server_started_total", "RPCs started on the server.", MetricType::Counter);
  auto handled =
      Family("grpc_server_handled_total", "RPCs completed on the server, whatever their status.",
             MetricType::Counter);
  auto seconds = Family("grpc_server_handling_seconds",
                        "Time from the start of an RPC to its status, in seconds (streams: the "
                        "whole stream).",
                        MetricType::Histogram);
  auto items = Family("consent_batch_items", "Items per batch request or stream message.",
                      MetricType::Histogram);
  auto decisions = Family("consent_decisions_total", "Decisions answered, by purpose and reason.",
                          MetricType::Counter);
  auto invalid_items = Family("consent_check_items_invalid_total",
                              "BatchCheck and StreamCheck items answered with an error instead of "
                              "a decision (their own fields were invalid), by purpose.",
                              MetricType::Counter);
  auto writes = Family("consent_writes_total",
                       "Writes by kind and result (ok, rejected: the caller's error, error: the "
                       "server's).",
                       MetricType::Counter);
  auto reloads = Family("consent_policy_reloads_total",
                        "Policy reloads (SIGHUP, ReloadPolicy or a changed policy file) by result.",
                        MetricType::Counter);
  auto rejected = Family("consent_rejected_total",
                         "Calls turned away, or streams ended, by an admission limit "
                         "(RESOURCE_EXHAUSTED), by reason.",
                         MetricType::Counter);
  auto auth_failures = Family("consent_auth_failures_total",
                              "Calls refused by authentication (UNAUTHENTICATED) or authorization "
                              "(PERMISSION_DENIED), by reason. TLS handshake failures are not "
                              "seen by the server and not counted.",
                              MetricType::Counter);
  auto by_caller = Family("consent_calls_by_caller_total",
                          "Authorized calls by caller (a name from the auth file) and method.",
                          MetricType::Counter);
  auto wal = Family("consent_wal_sync_seconds",
                    "Duration of one synced RocksDB write (a group of commits sharing one WAL "
                    "sync), in seconds.",
                    MetricType::Histogram);
  auto appends = Family("consent_replication_append_seconds",
                        "Time from appending a write's command to the replicated log to its "
                        "quorum's acknowledgement, in seconds.",
                        MetricType::Histogram);
  auto append_failures = Family("consent_replication_append_failures_total",
                                "Appends to the replicated command log not acknowledged in time "
                                "(retried under the same message id).",
                                MetricType::Counter);
  auto revision_waits = Family("consent_min_revision_waits_total",
                               "Reads whose min_revision this replica had not applied, by whether "
                               "it was reached within --min_revision_wait or the read answered "
                               "UNAVAILABLE.",
                               MetricType::Counter);
  {
    absl::MutexLock lock(&mu_);
    for (const auto& m : methods_) {
      const std::vector<prometheus::ClientMetric::Label> labels = {
          {"grpc_method", m->method_}, {"grpc_service", m->service_}, {"grpc_type", m->type_}};
      AddCounter(started, labels, m->started_);
      for (int code = 0; code < MethodMetrics::kCodes; ++code) {
        std::vector<prometheus::ClientMetric::Label> with_code = {
            {"grpc_code", std::string(GrpcCodeLabel(static_cast<grpc::StatusCode>(code)))}};
        with_code.insert(with_code.end(), labels.begin(), labels.end());
        AddCounter(handled, std::move(with_code), m->handled_[code]);
      }
      AddHistogram(seconds, labels, m->seconds_);
      if (m->items_ != nullptr) AddHistogram(items, {{"grpc_method", m->method_}}, *m->items_);
    }
    for (const auto& [key, counter] : callers_) {
      AddCounter(by_caller, {{"caller", key.first}, {"method", key.second}}, *counter);
    }
    std::vector<std::string> purposes;
    for (const auto& [purpose, counters] : purposes_) purposes.push_back(purpose);
    std::sort(purposes.begin(), purposes.end());
    for (const std::string& purpose : purposes) {
      const ReasonCounters& counters = *purposes_.at(purpose);
      for (int reason = 0; reason < kReasons; ++reason) {
        if (!IsReason(reason)) continue;
        AddCounter(decisions, {{"purpose", purpose}, {"reason", ReasonLabel(reason)}},
                   counters[reason]);
      }
      AddCounter(invalid_items, {{"purpose", purpose}}, counters[v1::DECISION_REASON_UNSPECIFIED]);
    }
  }
  for (int k = 0; k < static_cast<int>(WriteKind::kCount); ++k) {
    for (int r = 0; r < 3; ++r) {
      AddCounter(writes, {{"kind", kWriteKinds[k]}, {"result", kWriteResults[r]}}, writes_[k][r]);
    }
  }
  AddCounter(reloads, {{"result", "error"}}, reloads_[1]);
  AddCounter(reloads, {{"result", "ok"}}, reloads_[0]);
  AddHistogram(wal, {}, wal_sync_);
  if (replicated_.load(std::memory_order_relaxed)) {
    AddHistogram(appends, {}, appends_);
    AddCounter(append_failures, {}, append_failures_);
    AddCounter(revision_waits, {{"result", "reached"}}, revision_waits_[0]);
    AddCounter(revision_waits, {{"result", "timeout"}}, revision_waits_[1]);
  }
  constexpr const char* kRejections[] = {"streams", "worker_queue", "commit_queue", "idle_watcher"};
  static_assert(std::size(kRejections) == static_cast<size_t>(Rejection::kCount));
  for (size_t r = 0; r < std::size(kRejections); ++r) {
    AddCounter(rejected, {{"reason", kRejections[r]}}, rejected_[r]);
  }

  constexpr const char* kAuthFailures[] = {"no_credentials", "unknown_token", "unknown_certificate",
                                           "missing_role"};
  static_assert(std::size(kAuthFailures) == static_cast<size_t>(AuthFailure::kCount));
  for (size_t r = 0; r < std::size(kAuthFailures); ++r) {
    AddCounter(auth_failures, {{"reason", kAuthFailures[r]}}, auth_failures_[r]);
  }

  std::vector<prometheus::MetricFamily> out;
  for (auto* family :
       {&started, &handled, &seconds, &items, &decisions, &invalid_items, &writes, &reloads,
        &rejected, &auth_failures, &by_caller, &wal, &appends, &append_failures, &revision_waits}) {
    if (!family->metric.empty()) out.push_back(std::move(*family));
  }
  return out;
}

}  // namespace consent
