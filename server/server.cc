#include "server/server.h"

#include <malloc.h>

#include <exception>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "core/policy.h"
#include "core/snapshot_signing.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "server/authenticator.h"
#include "server/build_info.h"
#include "server/http_endpoints.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/policy_watcher.h"
#include "server/process_stats.h"
#include "server/reflection.h"
#include "server/registry.h"
#include "server/registry_service.h"
#include "storage/consent_store.h"

namespace consent {
namespace {

// Metric families built at scrape time from state the server already has,
// so they cost nothing on the hot path.
class ScrapeCollector final : public prometheus::Collectable {
 public:
  // `replicator` is null standalone.
  ScrapeCollector(storage::ConsentStore* store, const PolicyHolder* policies,
                  const Replicator* replicator)
      : store_(store), policies_(policies), replicator_(replicator) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<prometheus::MetricFamily> out;
    auto add = [&out](std::string name, std::string help, prometheus::MetricType type, double value,
                      std::vector<prometheus::ClientMetric::Label> labels = {}) {
      prometheus::MetricFamily family;
      family.name = std::move(name);
      family.help = std::move(help);
      family.type = type;
      prometheus::ClientMetric metric;
      metric.label = std::move(labels);
      if (type == prometheus::MetricType::Counter) {
        metric.counter.value = value;
      } else {
        metric.gauge.value = value;
      }
      family.metric.push_back(std::move(metric));
      out.push_back(std::move(family));
    };
    const auto gauge = prometheus::MetricType::Gauge;
    const auto counter = prometheus::MetricType::Counter;
    add("consent_build_info", "Build of consentd; the value is always 1.", gauge, 1,
        {{"version", kBuildVersion}, {"revision", kBuildRevision}});
    add("consent_registry_revision", "Revision of the last acknowledged write.", gauge,
        static_cast<double>(store_->CurrentRevision()));
    add("consent_policy_info", "Active policy; the value is always 1.", gauge, 1,
        {{"version", policies_->Get()->version()}});

    if (auto stats = store_->Stats(); stats.ok()) {
      if (stats->rocksdb.block_cache_hits >= 0) {
        add("consent_rocksdb_block_cache_hits_total", "RocksDB block cache hits.", counter,
            static_cast<double>(stats->rocksdb.block_cache_hits));
        add("consent_rocksdb_block_cache_misses_total", "RocksDB block cache misses.", counter,
            static_cast<double>(stats->rocksdb.block_cache_misses));
      }
      add("consent_rocksdb_write_stall_seconds_total",
          "Time RocksDB delayed or stopped writes, in seconds.", counter,
          static_cast<double>(stats->rocksdb.write_stall_micros) / 1e6);
      add("consent_rocksdb_write_stopped", "1 while RocksDB stops writes.", gauge,
          static_cast<double>(stats->rocksdb.write_stopped));
      add("consent_rocksdb_live_sst_bytes", "Bytes of live SST files.", gauge,
          static_cast<double>(stats->rocksdb.live_sst_bytes));
      add("consent_rocksdb_memtable_bytes", "Bytes of all memtables.", gauge,
          static_cast<double>(stats->rocksdb.memtable_bytes));
      add("consent_rocksdb_pending_compaction_bytes",
          "Bytes RocksDB estimates compaction must rewrite.", gauge,
          static_cast<double>(stats->rocksdb.pending_compaction_bytes));
      add("consent_rocksdb_estimated_subjects", "RocksDB's estimate of the subject records.", gauge,
          static_cast<double>(stats->estimated_subjects));
      if (stats->index_ready >= 0) {
        add("consent_subject_index_ready",
            "1 once the in-memory subject index is loaded and serves checks.", gauge,
            static_cast<double>(stats->index_ready));
        add("consent_subject_index_subjects", "Subjects in the in-memory subject index.", gauge,
            static_cast<double>(stats->index_subjects));
        add("consent_subject_index_bytes",
            "Bytes of the in-memory subject index's entries and tables.", gauge,
            static_cast<double>(stats->index_bytes));
      }
      add("consent_history_index_pending_entries",
          "User history index entries in memory, waiting for a bulk write to RocksDB.", gauge,
          static_cast<double>(stats->history_pending));
      add("consent_history_index_write_failures_total",
          "Bulk writes of the user history index that failed.", counter,
          static_cast<double>(stats->history_write_failures));
      add("consent_store_writes_refused",
          "1 while writes are refused after a failed synced write, until the database is "
          "reopened.",
          gauge, static_cast<double>(stats->writes_refused));
      add("consent_store_write_failures_total", "Synced writes (WAL append or sync) that failed.",
          counter, static_cast<double>(stats->write_failures));
      add("consent_store_reopens_total",
          "Times the store reopened its database to accept writes again after a failed write.",
          counter, static_cast<double>(stats->reopens));
    }

    if (replicator_ != nullptr) {
      const Replicator::Stats r = replicator_->stats();
      add("consent_replication_log_sequence",
          "Last sequence of the replicated command log (read about once a second).", gauge,
          static_cast<double>(r.log_sequence));
      add("consent_replication_applied_sequence",
          "Last sequence of the replicated command log this replica applied.", gauge,
          static_cast<double>(r.applied_sequence));
      add("consent_replication_lag_commands",
          "Commands of the replicated log this replica has not applied yet.", gauge,
          static_cast<double>(std::max<int64_t>(0, r.log_sequence - r.applied_sequence)));
      add("consent_replication_applied_commands_total",
          "Commands of the replicated log applied (written, replayed or refused) since start.",
          counter, static_cast<double>(r.applied_commands));
      add("consent_replication_reapplied_commands_total",
          "Commands that failed to apply for a storage failure and were applied again.", counter,
          static_cast<double>(r.reapplied_commands));
      add("consent_replication_malformed_commands_total",
          "Commands of the replicated log that did not parse and were skipped.", counter,
          static_cast<double>(r.malformed_commands));
      add("consent_replication_waiting_writes",
          "Writes taken here waiting for their command to be applied here.", gauge,
          static_cast<double>(r.waiting_writes));
      add("consent_replication_log_lost",
          "1 once the replicated log was seen to end before what this replica applied (the NATS "
          "cluster lost acknowledged commands): it applies nothing more and refuses writes.",
          gauge, r.log_lost ? 1 : 0);
    }

    if (auto process = ReadProcessStats(); process.ok()) {
      add("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", counter,
          process->cpu_seconds);
      add("process_resident_memory_bytes", "Resident memory size in bytes.", gauge,
          static_cast<double>(process->resident_bytes));
      add("process_virtual_memory_bytes", "Virtual memory size in bytes.", gauge,
          static_cast<double>(process->virtual_bytes));
      add("process_open_fds", "Number of open file descriptors.", gauge,
          static_cast<double>(process->open_fds));
      add("process_max_fds", "Maximum number of open file descriptors.", gauge,
          static_cast<double>(process->max_fds));
      add("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
          gauge, process->start_time_seconds);
      add("process_threads", "Number of OS threads in the process.", gauge,
          static_cast<double>(process->threads));
    }
    return out;
  }

 private:
  storage::ConsentStore* store_;
  const PolicyHolder* policies_;
  const Replicator* replicator_;
};

class ServerImpl final : public ConsentServer {
 public:
  ~ServerImpl() override { Shutdown().IgnoreError(); }

  std::string listen_address() const override { return listen_address_; }
  std::string metrics_address() const override { return metrics_address_; }
  absl::Status ReloadPolicy() override { return reloader_->Reload().status(); }
  absl::Status ReloadAuth() override {
    return auth_ == nullptr ? absl::OkStatus() : auth_->Reload();
  }
  absl::Status Shutdown() override;

  // The store's on_write_state: health of consent.v1.ConsentRegistry
  // follows whether writes are accepted, and the log says why.
  void OnWriteState(bool writable, const absl::Status& cause) {
    if (writable) {
      LogInfo("the store reopened its database: writes are accepted again");
    } else {
      LogError(
          "a synced write failed: writes are refused until the store reopens its database "
          "(tried on the next write); checks go on",
          {{"error", std::string(cause.message())}});
    }
    absl::MutexLock lock(&health_mu_);
    registry_writable_ = writable;
    if (grpc_server_ != nullptr && !shut_down_) {
      grpc_server_->GetHealthCheckService()->SetServingStatus(
          v1::ConsentRegistry::service_full_name(), writable);
    }
  }

  // /readyz: ready once every part started (store open, policy loaded,
  // gRPC serving) and until shutdown starts. Refused writes are reported
  // but leave the server ready: checks go on without them.
  Readiness ReadinessNow() {
    absl::MutexLock lock(&health_mu_);
    if (shut_down_) return {false, "not ready: draining (shutting down)\n"};
    if (!serving_) return {false, "not ready: starting\n"};
    std::string body = absl::StrCat("ready\npolicy: ", policies_->Get()->version(), "\n");
    absl::StrAppend(&body, registry_writable_
                               ? "writes: accepted\n"
                               : "writes: refused (a synced write failed; checks go on)\n");
    return {true, std::move(body)};
  }

  ServerOptions options_;
  RealClock real_clock_;
  // Before store_: the store's synced-write callback observes into it.
  std::shared_ptr<Metrics> metrics_;  // null when --metrics_listen is empty
  std::unique_ptr<storage::ConsentStore> store_;
  std::unique_ptr<PolicyHolder> policies_;
  std::unique_ptr<PolicyReloader> reloader_;
  std::unique_ptr<PolicyWatcher> policy_watcher_;  // null when not watching
  std::unique_ptr<AuthHolder> auth_;               // null without --auth_file
  std::unique_ptr<Registry> registry_;
  // After registry_, whose command applier it calls; null standalone.
  std::unique_ptr<Replicator> replicator_;
  DrainGate gate_;
  std::unique_ptr<CallAccounting> calls_;
  std::unique_ptr<RegistryService> registry_service_;
  std::unique_ptr<AdminService> admin_service_;
  std::unique_ptr<ReflectionService> reflection_service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  std::shared_ptr<ScrapeCollector> collector_;
  std::unique_ptr<HttpEndpoints> http_;
  std::string listen_address_;
  std::string metrics_address_;
  // Guards the health statuses against the store's threads (OnWriteState).
  absl::Mutex health_mu_;
  bool shut_down_ ABSL_GUARDED_BY(health_mu_) = false;
  bool registry_writable_ ABSL_GUARDED_BY(health_mu_) = true;
  bool serving_ ABSL_GUARDED_BY(health_mu_) = false;
  absl::Notification stop_maintenance_;
  std::thread maintenance_;

  // Replication: applies the command log up to where it stood; then, for
  // the registry's first start, makes the policy file's policy active
  // through the log. Later a replica's start activates nothing: one
  // starting with an older file must not set the policy back for every
  // replica. A changed file is activated by the watcher, SIGHUP or
  // ReloadPolicy, as standalone.
  absl::Status StartReplication(std::shared_ptr<const CompiledPolicy> file_policy) {
    if (absl::Status s = registry_->LoadStoredPolicies(); !s.ok()) return s;
    auto replicator =
        Replicator::Start(options_.replication, store_.get(), registry_->command_applier());
    if (!replicator.ok()) {
      return absl::Status(replicator.status().code(),
                          absl::StrCat("replication: ", replicator.status().message()));
    }
    replicator_ = *std::move(replicator);
    std::function<void(bool)> on_revision_wait;
    if (Metrics* metrics = metrics_.get()) {
      metrics->set_replicated();
      replicator_->set_on_append([metrics](absl::Duration took, bool acknowledged) {
        metrics->ObserveAppend(took, acknowledged);
      });
      on_revision_wait = [metrics](bool reached) { metrics->CountRevisionWait(reached); };
    }
    registry_->set_replicator(replicator_.get(), options_.min_revision_wait,
                              std::move(on_revision_wait));
    LogInfo("replication: applying the command log before serving",
            {{"nats", absl::StrJoin(options_.replication.log.urls, ",")},
             {"stream", options_.replication.log.stream}});
    const absl::Time start = absl::Now();
    absl::Status caught_up =
        replicator_->AwaitCaughtUp(options_.catch_up_timeout, [](int64_t applied, int64_t target) {
          LogInfo("replication: catching up",
                  {{"applied", absl::StrCat(applied)}, {"target", absl::StrCat(target)}});
        });
    if (!caught_up.ok()) {
      return absl::Status(caught_up.code(),
                          absl::StrCat("replication: catching up: ", caught_up.message()));
    }
    const Replicator::Stats stats = replicator_->stats();
    LogInfo("replication: caught up", {{"applied_sequence", absl::StrCat(stats.applied_sequence)},
                                       {"revision", absl::StrCat(store_->CurrentRevision())},
                                       {"took", absl::FormatDuration(absl::Now() - start)}});
    if (const auto active = policies_->Get(); active != nullptr) {
      if (active->text() != file_policy->text()) {
        LogWarning(
            "replication: the policy file differs from the registry's active policy, which "
            "stays active; reload (SIGHUP, ReloadPolicy) to activate the file's on every replica",
            {{"active_version", active->version()}, {"file_version", file_policy->version()}});
      }
      return absl::OkStatus();
    }
    auto activated = registry_->ActivatePolicy(std::move(file_policy));
    if (!activated.ok()) return activated.status();
    LogInfo("replication: activated the policy file's policy through the command log",
            {{"version", activated->version}, {"previous_version", activated->previous_version}});
    return absl::OkStatus();
  }

  // Forgets expired request ids now and then every hour.
  void StartMaintenance(const Clock* clock) {
    maintenance_ = std::thread([this, clock] {
      do {
        auto purged = store_->PurgeRequestIds(clock->Now() - options_.request_id_retention);
        if (!purged.ok()) {
          LogWarning("purging expired request ids failed",
                     {{"error", std::string(purged.status().message())}});
        } else if (*purged > 0) {
          LogInfo("purged expired request ids", {{"count", absl::StrCat(*purged)}});
        }
      } while (!stop_maintenance_.WaitForNotificationWithTimeout(absl::Hours(1)));
    });
  }
};

absl::Status ServerImpl::Shutdown() {
  {
    absl::MutexLock lock(&health_mu_);
    if (shut_down_) return absl::OkStatus();
    shut_down_ = true;
    if (grpc_server_ != nullptr) grpc_server_->GetHealthCheckService()->SetServingStatus(false);
  }
  if (grpc_server_ != nullptr) {
    // New calls now get UNAVAILABLE; those in flight may finish within the
    // grace period. Then the server stops at once: whatever is still running
    // is cancelled and idle connections are closed.
    // Change-feed streams would otherwise wait for commits that will not
    // come; they end now, telling clients where to resume.
    registry_->CloseWatchers();
    registry_service_->CancelStreams();
    const int64_t left = gate_.DrainUntil(absl::Now() + options_.shutdown_grace);
    if (left > 0) {
      LogWarning("calls still in flight after the grace period; cancelling them",
                 {{"calls", absl::StrCat(left)},
                  {"shutdown_grace", absl::FormatDuration(options_.shutdown_grace)}});
    }
    grpc_server_->Shutdown(std::chrono::system_clock::now());
    grpc_server_->Wait();
  }
  http_.reset();
  policy_watcher_.reset();
  if (maintenance_.joinable()) {
    stop_maintenance_.Notify();
    maintenance_.join();
  }
  if (replicator_ != nullptr) replicator_->Stop();  // before the store closes
  if (store_ == nullptr) return absl::OkStatus();   // start-up failed before opening it
  absl::Status status = store_->Close();
  if (status.ok()) {
    LogInfo("store closed cleanly");
  } else {
    LogError("closing the store failed", {{"error", std::string(status.message())}});
  }
  return status;
}

// Splits "host:port" / "[v6]:port".
bool SplitHostPort(absl::string_view address, absl::string_view* host, absl::string_view* port) {
  size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) return false;
  *host = address.substr(0, colon);
  *port = address.substr(colon + 1);
  if (absl::ConsumePrefix(host, "[")) {
    if (!absl::ConsumeSuffix(host, "]")) return false;
  }
  int port_number;
  return !host->empty() && absl::SimpleAtoi(*port, &port_number) && port_number >= 0 &&
         port_number <= 65535;
}

}  // namespace

bool IsLoopbackAddress(absl::string_view listen) {
  absl::string_view host, port;
  if (!SplitHostPort(listen, &host, &port)) return false;
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

absl::Status RetainFreedMemory(int64_t mib) {
  if (mib < 0 || mib > kMaxMallocRetainMib) {
    return absl::InvalidArgumentError(
        absl::StrCat("--malloc_retain_mib must be 0 to ", kMaxMallocRetainMib, ", not ", mib));
  }
  if (mib == 0) return absl::OkStatus();
  const int bytes = static_cast<int>(mib << 20);
  // Setting either threshold also stops glibc from adjusting the mmap
  // threshold itself, so both are set.
  if (mallopt(M_MMAP_THRESHOLD, bytes) != 1 || mallopt(M_TRIM_THRESHOLD, bytes) != 1) {
    return absl::UnavailableError(
        absl::StrCat("the allocator does not take malloc thresholds; --malloc_retain_mib=", mib,
                     " has no effect"));
  }
  return absl::OkStatus();
}

void ConfigureServerBuilder(const ServerOptions& options, grpc::ServerBuilder* builder) {
  builder->SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  auto ms = [](absl::Duration d) {
    return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(d), INT32_MAX));
  };
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, ms(options.max_connection_idle));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, ms(options.keepalive_time));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ms(options.keepalive_timeout));
  // Clients may keep idle connections alive with pings every 10 s or more
  // (more often is answered with GOAWAY after two strikes).
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10'000);
  // The synchronous API serves the streams (StreamCheck, WatchChanges) and
  // ConsentAdmin. With gRPC's defaults (a completion queue per core, at
  // most 2 idle pollers each) a handler thread that finishes a call while
  // others poll exits, and the next call starts a new one, with a cold
  // malloc cache. One queue with 4 to 32 pollers keeps the threads: +20-30%
  // single checks when Check was served on this API (docs/performance.md,
  // "Handler threads").
  using Option = grpc::ServerBuilder::SyncServerOption;
  builder->SetSyncServerOption(Option::NUM_CQS, 1);
  builder->SetSyncServerOption(Option::MIN_POLLERS, 4);
  builder->SetSyncServerOption(Option::MAX_POLLERS, 32);
}

absl::StatusOr<std::unique_ptr<ConsentServer>> ConsentServer::Start(const ServerOptions& options,
                                                                    const Clock* clock) {
  absl::string_view host, port;
  if (!SplitHostPort(options.listen, &host, &port)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--listen \"", options.listen, "\" is not host:port"));
  }
  if (absl::Status s = CheckTlsOptions(options.tls); !s.ok()) return s;
  if (!options.auth_file.empty() && !options.tls.enabled()) {
    return absl::InvalidArgumentError(
        "--auth_file needs TLS (--tls_cert_file, --tls_key_file): tokens and client "
        "certificates travel only over TLS");
  }
  if (!IsLoopbackAddress(options.listen) && options.auth_file.empty() &&
      !options.insecure_listen_any) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--listen ", options.listen,
        " is not a loopback address; without authentication (--auth_file, with TLS) consentd "
        "listens on loopback only (--insecure_listen_any overrides this, for trusted networks)"));
  }
  if (!options.metrics_listen.empty() && !SplitHostPort(options.metrics_listen, &host, &port)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics_listen \"", options.metrics_listen, "\" is not host:port"));
  }
  auto server = std::make_unique<ServerImpl>();
  server->options_ = options;
  if (clock == nullptr) clock = &server->real_clock_;

  auto policy = CompiledPolicy::FromFile(options.policy_path);
  if (!policy.ok()) return policy.status();

  if (!options.metrics_listen.empty()) server->metrics_ = std::make_shared<Metrics>();
  storage::StoreOptions store_options;
  store_options.data_dir = options.data_dir;
  store_options.rocksdb.block_cache_bytes = options.block_cache_bytes;
  store_options.request_id_retention = options.request_id_retention;
  store_options.subject_index = options.subject_index;
  store_options.max_queued_commits = options.max_queued_writes;
  store_options.on_index_loaded = [](const absl::Status& status, int64_t subjects,
                                     absl::Duration took) {
    if (status.ok()) {
      LogInfo("subject index loaded: checks read it from now on",
              {{"subjects", absl::StrCat(subjects)}, {"took", absl::FormatDuration(took)}});
    } else {
      LogWarning("subject index not loaded: checks keep reading RocksDB",
                 {{"error", status.ToString()}, {"subjects_loaded", absl::StrCat(subjects)}});
    }
  };
  store_options.on_history_written = [](const absl::Status& status, int64_t entries) {
    if (status.ok()) return;  // every 250,000 events: not worth a line
    LogWarning(
        "history index bulk write failed: its entries stay in memory and ListHistory reads them "
        "there; tried again after the next batch",
        {{"error", status.ToString()}, {"entries", absl::StrCat(entries)}});
  };
  if (Metrics* metrics = server->metrics_.get()) {
    store_options.rocksdb.collect_statistics = options.rocksdb_statistics;
    store_options.on_synced_write = [metrics](absl::Duration d) { metrics->ObserveWalSync(d); };
  }
  ServerImpl* const serving = server.get();
  store_options.on_write_state = [serving](bool writable, const absl::Status& cause) {
    serving->OnWriteState(writable, cause);
  };
  if (options.adjust_store_options) options.adjust_store_options(store_options);
  auto store = storage::ConsentStore::Open(store_options);
  if (!store.ok()) return store.status();
  server->store_ = *std::move(store);

  server->policies_ = std::make_unique<PolicyHolder>();
  server->registry_ =
      std::make_unique<Registry>(server->store_.get(), server->policies_.get(), clock);
  if (options.replication.log.urls.empty()) {
    if (absl::Status s = server->registry_->Init(*std::move(policy)); !s.ok()) return s;
  } else if (absl::Status s = server->StartReplication(*std::move(policy)); !s.ok()) {
    return s;
  }
  server->registry_->set_checkpoint_interval(options.watch_checkpoint_interval);
  if (!options.backup_dir.empty()) {
    if (absl::Status s = storage::CreatePrivateDirectory(options.backup_dir); !s.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("--backup_dir ", options.backup_dir, ": ", s.message()));
    }
    server->registry_->set_backup_dir(options.backup_dir, options.backup_keep);
  }
  {
    std::optional<snapshot::SigningKey> signing;
    if (!options.snapshot_signing_key_file.empty()) {
      auto key = snapshot::SigningKey::FromPemFile(options.snapshot_signing_key_file);
      if (!key.ok()) {
        return absl::FailedPreconditionError(
            absl::StrCat("--snapshot_signing_key_file: ", key.status().message()));
      }
      signing = *std::move(key);
    }
    std::string pseudonym_key;
    if (!options.pseudonymize_key_file.empty()) {
      auto key = snapshot::ReadPseudonymKeyFile(options.pseudonymize_key_file);
      if (!key.ok()) {
        return absl::FailedPreconditionError(
            absl::StrCat("--pseudonymize_key_file: ", key.status().message()));
      }
      pseudonym_key = *std::move(key);
    }
    server->registry_->set_snapshot_keys(std::move(signing), std::move(pseudonym_key));
  }
  server->StartMaintenance(clock);
  server->reloader_ = std::make_unique<PolicyReloader>(options.policy_path, server->registry_.get(),
                                                       server->metrics_.get());
  if (options.policy_watch_interval > absl::ZeroDuration()) {
    PolicyReloader* reloader = server->reloader_.get();
    server->policy_watcher_ = std::make_unique<PolicyWatcher>(options.policy_path, [reloader] {
      LogInfo("the policy file changed: reloading it");
      reloader->Reload().IgnoreError();  // logged and counted by the reloader
    });
    server->policy_watcher_->Start(options.policy_watch_interval);
  }
  server->calls_ = std::make_unique<CallAccounting>(&server->gate_, server->metrics_.get());
  AdmissionLimits limits;
  limits.worker_threads = options.worker_threads;
  limits.max_queued_reads = options.max_queued_reads;
  limits.max_streams = options.max_streams;
  limits.watch_idle_timeout = options.watch_idle_timeout;
  server->registry_service_ = std::make_unique<RegistryService>(
      server->registry_.get(), server->calls_.get(), limits, clock);
  server->admin_service_ =
      std::make_unique<AdminService>(server->registry_.get(), server->policies_.get(),
                                     server->reloader_.get(), server->calls_.get());

  if (!options.metrics_listen.empty()) {
    server->collector_ = std::make_shared<ScrapeCollector>(
        server->store_.get(), server->policies_.get(), server->replicator_.get());
    auto http = HttpEndpoints::Start(options.metrics_listen, {server->collector_, server->metrics_},
                                     [serving] { return serving->ReadinessNow(); });
    if (!http.ok()) return http.status();
    server->http_ = *std::move(http);
    server->metrics_address_ =
        absl::StrCat(options.metrics_listen.substr(0, options.metrics_listen.rfind(':')), ":",
                     server->http_->port());
  }

  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (options.tls.enabled()) {
    credentials = MakeTlsServerCredentials(options.tls);
    if (!options.auth_file.empty()) {
      server->auth_ = std::make_unique<AuthHolder>(options.auth_file, server->metrics_.get());
      if (absl::Status s = server->auth_->Reload(); !s.ok()) return s;
    }
  }
  server->calls_->set_auth(server->auth_.get());
  server->admin_service_->set_auth(server->auth_.get());
  server->reflection_service_ = std::make_unique<ReflectionService>(
      std::vector<std::string>{v1::ConsentRegistry::service_full_name(),
                               v1::ConsentAdmin::service_full_name(), "grpc.health.v1.Health",
                               grpc::reflection::v1alpha::ServerReflection::service_full_name()},
      server->auth_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int selected_port = 0;
  builder.AddListeningPort(options.listen, credentials, &selected_port);
  ConfigureServerBuilder(options, &builder);
  builder.RegisterService(server->registry_service_.get());
  builder.RegisterService(server->admin_service_.get());
  builder.RegisterService(server->reflection_service_.get());
  server->grpc_server_ = builder.BuildAndStart();
  if (server->grpc_server_ == nullptr || selected_port == 0) {
    server->grpc_server_.reset();
    return absl::FailedPreconditionError(absl::StrCat("cannot listen on --listen ", options.listen,
                                                      " (address in use or not available)"));
  }
  server->listen_address_ =
      absl::StrCat(options.listen.substr(0, options.listen.rfind(':')), ":", selected_port);
  {
    absl::MutexLock lock(&server->health_mu_);
    grpc::HealthCheckServiceInterface* health = server->grpc_server_->GetHealthCheckService();
    health->SetServingStatus(true);
    // NOT_SERVING while the store refuses writes (OnWriteState).
    health->SetServingStatus(v1::ConsentRegistry::service_full_name(), server->registry_writable_);
    health->SetServingStatus(v1::ConsentAdmin::service_full_name(), true);
    server->serving_ = true;
  }
  return std::unique_ptr<ConsentServer>(std::move(server));
}

}  // namespace consent
