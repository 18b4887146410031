// consentd's Prometheus metrics (names fixed by DESIGN.md; reference in
// docs/operations.md). Everything a call touches is resolved once at
// start-up (MethodMetrics) or once per call and purpose, so the hot path
// pays a few atomic adds and one histogram observation per call, never a
// label lookup per item.
//
// Thread safe. Gauges that describe state (revision, policy, RocksDB,
// process) are not here: they are read at scrape time (server.cc).
#ifndef CONSENT_SERVER_METRICS_H_
#define CONSENT_SERVER_METRICS_H_

#include <array>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "consent/v1/types.pb.h"
#include "google/protobuf/repeated_field.h"
#include "grpcpp/support/status.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace consent {

// gRPC's status code names as Go's grpc-prometheus spells them ("OK",
// "InvalidArgument", ...), so standard dashboards and alerts apply.
absl::string_view GrpcCodeLabel(grpc::StatusCode code);

// The metrics of one RPC method. Started/Handled bracket every call
// (streams: the whole stream).
class MethodMetrics {
 public:
  void Started() { started_->Increment(); }
  void Handled(grpc::StatusCode code, double seconds);
  // consent_batch_items: the number of items in one request or message.
  // Only for batch methods (no-op otherwise).
  void ObserveItems(int items);

 private:
  friend class Metrics;
  static constexpr int kCodes = 17;
  prometheus::Counter* started_ = nullptr;
  std::array<prometheus::Counter*, kCodes> handled_{};
  prometheus::Histogram* seconds_ = nullptr;
  prometheus::Histogram* items_ = nullptr;
};

// What a write changed, the `kind` label of consent_writes_total.
enum class WriteKind { kPreference, kAttributes, kExclusion, kDeletion };

class Metrics {
 public:
  Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // What the /metrics endpoint serves.
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

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

  // consent_writes_total{kind,result}: `count` writes (a batch of
  // preferences counts each) ended with `code`: result "ok", "rejected"
  // (the caller's error: INVALID_ARGUMENT, FAILED_PRECONDITION, ABORTED,
  // ALREADY_EXISTS, NOT_FOUND, ...) or "error" (the server's).
  void CountWrites(WriteKind kind, grpc::StatusCode code, int count);

  // consent_policy_reloads_total{result="ok"|"error"}.
  void CountPolicyReload(bool ok);

  // consent_wal_sync_seconds: one synced RocksDB write (a group commit).
  void ObserveWalSync(absl::Duration duration);

 private:
  static constexpr int kReasons = v1::DecisionReason_ARRAYSIZE;
  using ReasonCounters = std::array<prometheus::Counter*, kReasons>;
  ReasonCounters* DecisionCounters(const std::string& purpose);

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& started_;
  prometheus::Family<prometheus::Counter>& handled_;
  prometheus::Family<prometheus::Histogram>& handling_seconds_;
  prometheus::Family<prometheus::Histogram>& batch_items_;
  prometheus::Family<prometheus::Counter>& decisions_;
  prometheus::Family<prometheus::Counter>& writes_;
  prometheus::Family<prometheus::Counter>& policy_reloads_;
  prometheus::Histogram& wal_sync_seconds_;
  std::array<std::array<prometheus::Counter*, 3>, 4> write_counters_{};
  std::array<prometheus::Counter*, 2> reload_counters_{};

  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<MethodMetrics>> methods_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::unique_ptr<ReasonCounters>> purposes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace consent

#endif  // CONSENT_SERVER_METRICS_H_
