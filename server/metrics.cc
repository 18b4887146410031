#include "server/metrics.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace consent {
namespace {

// 50 µs to 5 s: a cached check takes tens of microseconds, a batch of
// 10,000 items or a synced write milliseconds.
const prometheus::Histogram::BucketBoundaries kHandlingBuckets = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,   0.05,   0.1,     0.25,   0.5,   1,      2.5,   5};
// An fsync on a local SSD takes 0.1-2 ms; seconds mean the disk is failing.
const prometheus::Histogram::BucketBoundaries kWalSyncBuckets = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
// Batches hold 1 to 10,000 items.
const prometheus::Histogram::BucketBoundaries kItemBuckets = {1,   10,   50,   100,  250,
                                                              500, 1000, 2500, 5000, 10000};

constexpr const char* kWriteKinds[] = {"preference", "attributes", "exclusion", "deletion"};
constexpr const char* kWriteResults[] = {"ok", "rejected", "error"};

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

// "DECISION_REASON_DENIED_OBJECTION" -> "DENIED_OBJECTION".
std::string ReasonLabel(int reason) {
  std::string name = v1::DecisionReason_Name(static_cast<v1::DecisionReason>(reason));
  absl::string_view view = name;
  absl::ConsumePrefix(&view, "DECISION_REASON_");
  return std::string(view);
}

}  // namespace

absl::string_view GrpcCodeLabel(grpc::StatusCode code) {
  static constexpr const char* kNames[] = {
      "OK",       "Canceled",       "Unknown",          "InvalidArgument",   "DeadlineExceeded",
      "NotFound", "AlreadyExists",  "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
      "Aborted",  "OutOfRange",     "Unimplemented",    "Internal",          "Unavailable",
      "DataLoss", "Unauthenticated"};
  const int index = static_cast<int>(code);
  return index >= 0 && index < 17 ? kNames[index] : "Unknown";
}

void MethodMetrics::Handled(grpc::StatusCode code, double seconds) {
  const int index = static_cast<int>(code);
  handled_[index >= 0 && index < kCodes ? index : static_cast<int>(grpc::StatusCode::UNKNOWN)]
      ->Increment();
  seconds_->Observe(seconds);
}

void MethodMetrics::ObserveItems(int items) {
  if (items_ != nullptr) items_->Observe(items);
}

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      started_(prometheus::BuildCounter()
                   .Name("grpc_server_started_total")
                   .Help("RPCs started on the server.")
                   .Register(*registry_)),
      handled_(prometheus::BuildCounter()
                   .Name("grpc_server_handled_total")
                   .Help("RPCs completed on the server, whatever their status.")
                   .Register(*registry_)),
      handling_seconds_(prometheus::BuildHistogram()
                            .Name("grpc_server_handling_seconds")
                            .Help("Time from the start of an RPC to its status, in seconds "
                                  "(streams: the whole stream).")
                            .Register(*registry_)),
      batch_items_(prometheus::BuildHistogram()
                       .Name("consent_batch_items")
                       .Help("Items per batch request or stream message.")
                       .Register(*registry_)),
      decisions_(prometheus::BuildCounter()
                     .Name("consent_decisions_total")
                     .Help("Decisions answered, by purpose and reason.")
                     .Register(*registry_)),
      writes_(prometheus::BuildCounter()
                  .Name("consent_writes_total")
                  .Help("Writes by kind and result (ok, rejected: the caller's error, error: "
                        "the server's).")
                  .Register(*registry_)),
      policy_reloads_(prometheus::BuildCounter()
                          .Name("consent_policy_reloads_total")
                          .Help("Policy reloads (SIGHUP or ReloadPolicy) by result.")
                          .Register(*registry_)),
      wal_sync_seconds_(prometheus::BuildHistogram()
                            .Name("consent_wal_sync_seconds")
                            .Help("Duration of one synced RocksDB write (a group of commits "
                                  "sharing one WAL sync), in seconds.")
                            .Register(*registry_)
                            .Add({}, kWalSyncBuckets)) {
  for (int k = 0; k < 4; ++k) {
    for (int r = 0; r < 3; ++r) {
      write_counters_[k][r] =
          &writes_.Add({{"kind", kWriteKinds[k]}, {"result", kWriteResults[r]}});
    }
  }
  reload_counters_[0] = &policy_reloads_.Add({{"result", "ok"}});
  reload_counters_[1] = &policy_reloads_.Add({{"result", "error"}});
}

MethodMetrics* Metrics::Method(absl::string_view service, absl::string_view method,
                               absl::string_view type, bool batch) {
  absl::MutexLock lock(&mu_);
  auto& slot = methods_[absl::StrCat(service, "/", method)];
  if (slot != nullptr) return slot.get();
  slot = std::make_unique<MethodMetrics>();
  const prometheus::Labels labels = {{"grpc_service", std::string(service)},
                                     {"grpc_method", std::string(method)},
                                     {"grpc_type", std::string(type)}};
  slot->started_ = &started_.Add(labels);
  for (int code = 0; code < MethodMetrics::kCodes; ++code) {
    prometheus::Labels with_code = labels;
    with_code["grpc_code"] = std::string(GrpcCodeLabel(static_cast<grpc::StatusCode>(code)));
    slot->handled_[code] = &handled_.Add(with_code);
  }
  slot->seconds_ = &handling_seconds_.Add(labels, kHandlingBuckets);
  if (batch) slot->items_ = &batch_items_.Add({{"grpc_method", std::string(method)}}, kItemBuckets);
  return slot.get();
}

Metrics::ReasonCounters* Metrics::DecisionCounters(const std::string& purpose) {
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = purposes_.find(purpose);
    if (it != purposes_.end()) return it->second.get();
  }
  absl::MutexLock lock(&mu_);
  auto& slot = purposes_[purpose];
  if (slot == nullptr) {
    slot = std::make_unique<ReasonCounters>();
    for (int reason = 0; reason < kReasons; ++reason) {
      if (!v1::DecisionReason_IsValid(reason) || reason == v1::DECISION_REASON_UNSPECIFIED) {
        (*slot)[reason] = nullptr;
        continue;
      }
      (*slot)[reason] = &decisions_.Add({{"purpose", purpose}, {"reason", ReasonLabel(reason)}});
    }
  }
  return slot.get();
}

void Metrics::CountDecision(const std::string& purpose, v1::DecisionReason reason) {
  ReasonCounters* counters = DecisionCounters(purpose);
  if (reason >= 0 && reason < kReasons && (*counters)[reason] != nullptr) {
    (*counters)[reason]->Increment();
  }
}

void Metrics::CountDecisions(const std::string& purpose,
                             const google::protobuf::RepeatedPtrField<v1::Decision>& decisions) {
  // Tallied locally first: one atomic add per reason, not per item.
  std::array<int64_t, kReasons> tally{};
  for (const v1::Decision& d : decisions) {
    if (d.reason() >= 0 && d.reason() < kReasons) ++tally[d.reason()];
  }
  ReasonCounters* counters = DecisionCounters(purpose);
  for (int reason = 0; reason < kReasons; ++reason) {
    if (tally[reason] > 0 && (*counters)[reason] != nullptr) {
      (*counters)[reason]->Increment(static_cast<double>(tally[reason]));
    }
  }
}

void Metrics::CountWrites(WriteKind kind, grpc::StatusCode code, int count) {
  write_counters_[static_cast<int>(kind)][WriteResultIndex(code)]->Increment(count);
}

void Metrics::CountPolicyReload(bool ok) { reload_counters_[ok ? 0 : 1]->Increment(); }

void Metrics::ObserveWalSync(absl::Duration duration) {
  wal_sync_seconds_.Observe(absl::ToDoubleSeconds(duration));
}

}  // namespace consent
