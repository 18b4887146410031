// consentd: the consent registry server. Flags: consentd --help.
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/build_info.h"
#include "server/log.h"
#include "server/server.h"

ABSL_FLAG(std::string, tls_cert_file, "",
          "Server certificate (PEM, with its chain) for TLS on --listen; with --tls_key_file. "
          "Re-read every --tls_refresh_interval, so a renewed certificate needs no restart.");
ABSL_FLAG(std::string, tls_key_file, "", "The server certificate's private key (PEM).");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "CA certificate(s) (PEM) that client certificates are verified against.");
ABSL_FLAG(std::string, tls_client_auth, "none",
          "Client certificates: none (not asked for), optional (verified when sent; token "
          "callers share the port), require (every connection presents one).");
ABSL_FLAG(absl::Duration, tls_refresh_interval, absl::Minutes(1),
          "How often the TLS files are read again (certificate rotation).");
ABSL_FLAG(std::string, auth_file, "",
          "Callers and their roles (consent.v1.AuthConfig in text format); needs TLS. Reloaded "
          "on SIGHUP and ConsentAdmin.ReloadAuth.");
ABSL_FLAG(bool, insecure_listen_any, false,
          "Serve a non-loopback --listen without authentication: every peer that can reach "
          "the port may call every RPC. For trusted networks only.");
ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "gRPC address, host:port (port 0 picks a free port). Without --auth_file only "
          "loopback addresses are accepted (see --insecure_listen_any).");
ABSL_FLAG(std::string, data_dir, "./consent-data",
          "Directory of the RocksDB database; created if missing.");
ABSL_FLAG(std::string, policy, "deploy/policy/default.textproto",
          "Policy file (consent.v1.Policy in text format). Reloaded on SIGHUP "
          "and ConsentAdmin.ReloadPolicy.");
ABSL_FLAG(absl::Duration, policy_watch_interval, absl::Seconds(10),
          "How often the --policy file is looked at; when it changed (edited, replaced, or a "
          "Kubernetes ConfigMap update) it is reloaded as ReloadPolicy would. 0 turns this off.");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9464",
          "HTTP address of /metrics (Prometheus), /healthz (alive) and /readyz (ready for "
          "checks; 503 while starting or draining); empty disables all three.");
ABSL_FLAG(int64_t, malloc_retain_mib, consent::kMaxMallocRetainMib,
          "Freed memory glibc's malloc may keep on each of its arenas for reuse, and the largest "
          "block it serves from them, in MiB; 0 to 32. 0: glibc's defaults, which return the "
          "memory of a large batch to the kernel after each call (docs/performance.md).");
ABSL_FLAG(int64_t, block_cache_mib, 256,
          "RocksDB block cache for reads of subject records and history, in MiB. 8 to 1048576.");
ABSL_FLAG(absl::Duration, request_id_retention, absl::Hours(24),
          "How long a write's request_id is remembered: a replay within it returns the first "
          "result and writes nothing.");
ABSL_FLAG(absl::Duration, watch_checkpoint_interval, absl::Seconds(5),
          "WatchChanges sends a checkpoint after this long without an event.");
ABSL_FLAG(bool, rocksdb_statistics, false,
          "Keep RocksDB's ticker statistics to export consent_rocksdb_block_cache_hits_total and "
          "_misses_total (with --metrics_listen). Costs about 3% of single-check throughput.");
ABSL_FLAG(bool, subject_index, true,
          "Serve checks from an in-memory index of every subject (about 60 bytes a subject), "
          "loaded in the background at start; until it is loaded checks read RocksDB. "
          "--subject_index=false always reads RocksDB: docs/performance.md.");
ABSL_FLAG(int, worker_threads, 16,
          "Threads for GetSubject, GetSubjectSummary and ListHistory, which wait for RocksDB reads "
          "(writes wait for "
          "no thread: the commit pipeline answers them). 1 to 1024.");
ABSL_FLAG(std::string, log_format, "human",
          "human (timestamp, level, message, key=value fields) or json (one object per line).");
ABSL_FLAG(std::string, log_level, "info",
          "debug, info, warn or error. User ids appear only at debug (one line per write).");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(10),
          "On SIGTERM/SIGINT, how long in-flight calls may take to finish.");
ABSL_FLAG(std::string, backup_dir, "",
          "Directory CreateBackup writes into, each backup a new subdirectory named by the "
          "request; created (mode 0700) if missing. Empty: backups are disabled.");
ABSL_FLAG(int, backup_keep, 0,
          "After each CreateBackup, remove all but the newest N backups under --backup_dir "
          "(directories holding a RocksDB database; nothing else there is touched). 0 keeps all.");
ABSL_FLAG(
    std::string, snapshot_signing_key_file, "",
    "PEM file of the Ed25519 private key ExportSnapshot signs snapshots with (openssl genpkey "
    "-algorithm ed25519). Empty: ExportSnapshot is refused.");
ABSL_FLAG(
    std::string, pseudonymize_key_file, "",
    "File of the key (at least 16 bytes) whose HMAC-SHA256 replaces user ids in pseudonymized "
    "snapshots and change feeds. Empty: those are refused.");
ABSL_FLAG(int, max_streams, 64,
          "StreamCheck and WatchChanges streams open at once; more get RESOURCE_EXHAUSTED. "
          "1 to 10000.");
ABSL_FLAG(
    int64_t, max_queued_reads, 1024,
    "GetSubject, GetSubjectSummary and ListHistory calls waiting for a worker thread; more get "
    "RESOURCE_EXHAUSTED. At least 1.");
ABSL_FLAG(int64_t, max_queued_writes, 10000,
          "Writes waiting for the commit pipeline; more get RESOURCE_EXHAUSTED (nothing "
          "written). At least 1.");
ABSL_FLAG(absl::Duration, watch_idle_timeout, absl::Seconds(60),
          "A WatchChanges client that reads nothing for this long has its stream ended.");
ABSL_FLAG(absl::Duration, max_connection_idle, absl::Minutes(5),
          "A connection with no call for this long is closed (clients reconnect on their next "
          "call).");
ABSL_FLAG(absl::Duration, keepalive_time, absl::Minutes(1),
          "Ping a connection after this long without traffic; close it if the ping is not "
          "answered within 20 s.");
ABSL_FLAG(int, max_receive_message_bytes, 8 << 20,
          "Largest request message accepted, in bytes (a BatchCheck of 10,000 items is about "
          "1 MB); larger ones get RESOURCE_EXHAUSTED. 4096 to 67108864.");

ABSL_FLAG(std::string, replication, "standalone",
          "standalone (this process holds the only copy) or jetstream (replicas share a "
          "command log in NATS JetStream, --nats_url; docs/replication.md).");
ABSL_FLAG(std::string, nats_url, "",
          "With --replication=jetstream: NATS servers, comma-separated "
          "(nats://host:port,...); the client fails over between them.");
ABSL_FLAG(std::string, nats_stream, "CONSENT_COMMANDS",
          "The JetStream stream of write commands; created (file storage, --nats_replicas "
          "copies) if missing.");
ABSL_FLAG(std::string, nats_subject, "consent.commands", "The subject the stream holds.");
ABSL_FLAG(int, nats_replicas, 3,
          "Copies JetStream keeps of each command (1 to 5): a write is acknowledged once a "
          "majority of them stored it.");
ABSL_FLAG(int64_t, nats_max_message_bytes, 8 << 20,
          "Largest write command, in bytes; a larger write is refused. The NATS servers' "
          "max_payload must be at least this.");
ABSL_FLAG(absl::Duration, nats_max_age, absl::ZeroDuration(),
          "How long the stream keeps a command; 0: for ever. A new replica catches up from the "
          "log only from a backup younger than this (docs/replication.md).");
ABSL_FLAG(absl::Duration, nats_timeout, absl::Seconds(5),
          "How long one request to NATS (an append's acknowledgement, a read) waits.");
ABSL_FLAG(std::string, nats_tls_ca_file, "",
          "CA certificate(s) (PEM) the NATS servers' certificates are verified against; set, "
          "the connection to NATS uses TLS.");
ABSL_FLAG(std::string, nats_tls_cert_file, "",
          "Client certificate (PEM) for NATS servers that ask for one; with --nats_tls_key_file.");
ABSL_FLAG(std::string, nats_tls_key_file, "", "The NATS client certificate's private key (PEM).");
ABSL_FLAG(std::string, nats_token_file, "",
          "File holding the token NATS servers require (authorization { token }); read at "
          "start, surrounding whitespace ignored.");
ABSL_FLAG(std::string, nats_nkey, "",
          "Public key (U...) of the NKey user NATS servers know this registry as (authorization "
          "{ users: [{ nkey }] }); with --nats_nkey_seed_file. Not with --nats_token_file.");
ABSL_FLAG(std::string, nats_nkey_seed_file, "",
          "File holding that NKey user's seed (SU..., as nk -gen user writes it); read at each "
          "connection to sign the server's challenge.");
ABSL_FLAG(absl::Duration, min_revision_wait, absl::Seconds(2),
          "With replication: how long a read whose min_revision this replica has not applied "
          "yet waits for it before answering UNAVAILABLE.");
ABSL_FLAG(absl::Duration, apply_wait, absl::Seconds(10),
          "With replication: how long a write waits for this replica to apply its command "
          "once the log has it, before answering UNAVAILABLE (the write still takes effect).");
ABSL_FLAG(absl::Duration, catch_up_timeout, absl::Minutes(10),
          "With replication: how long start-up may take to apply the command log before "
          "serving.");

// The replication flags into `options` (standalone leaves them empty);
// false, with the error logged, when they do not make sense.
bool ReplicationFromFlags(const std::string& replication, consent::ServerOptions* options) {
  if (replication == "jetstream") {
    consent::storage::JetStreamLogOptions& log = options->replication.log;
    for (absl::string_view url :
         absl::StrSplit(absl::GetFlag(FLAGS_nats_url), ',', absl::SkipWhitespace())) {
      log.urls.emplace_back(absl::StripAsciiWhitespace(url));
    }
    if (log.urls.empty()) {
      consent::LogError("--replication=jetstream needs --nats_url (nats://host:port,...)");
      return false;
    }
    log.stream = absl::GetFlag(FLAGS_nats_stream);
    log.subject = absl::GetFlag(FLAGS_nats_subject);
    log.replicas = absl::GetFlag(FLAGS_nats_replicas);
    log.max_message_bytes = absl::GetFlag(FLAGS_nats_max_message_bytes);
    log.timeout = absl::GetFlag(FLAGS_nats_timeout);
    log.max_age = absl::GetFlag(FLAGS_nats_max_age);
    log.tls_ca_file = absl::GetFlag(FLAGS_nats_tls_ca_file);
    log.tls_cert_file = absl::GetFlag(FLAGS_nats_tls_cert_file);
    log.tls_key_file = absl::GetFlag(FLAGS_nats_tls_key_file);
    if (const std::string token_file = absl::GetFlag(FLAGS_nats_token_file); !token_file.empty()) {
      std::ifstream in(token_file);
      std::stringstream token;
      token << in.rdbuf();
      log.token = std::string(absl::StripAsciiWhitespace(token.str()));
      if (!in || log.token.empty()) {
        consent::LogError("--nats_token_file cannot be read, or holds no token",
                          {{"nats_token_file", token_file}});
        return false;
      }
    }
    log.nkey = absl::GetFlag(FLAGS_nats_nkey);
    log.nkey_seed_file = absl::GetFlag(FLAGS_nats_nkey_seed_file);
    if (log.nkey.empty() != log.nkey_seed_file.empty() ||
        (!log.nkey.empty() && !log.token.empty())) {
      consent::LogError(
          "--nats_nkey and --nats_nkey_seed_file go together, and not with --nats_token_file");
      return false;
    }
    if (!log.nkey.empty() && (log.nkey.size() != 56 || log.nkey[0] != 'U')) {
      // Not echoed: it may be a seed given in the wrong flag.
      consent::LogError(
          "--nats_nkey must be an NKey user's public key (56 characters starting with U); its "
          "seed (S...) goes in the file --nats_nkey_seed_file names");
      return false;
    }
    if (!log.nkey_seed_file.empty()) {
      std::ifstream seed(log.nkey_seed_file);
      if (!seed || seed.peek() == std::ifstream::traits_type::eof()) {
        consent::LogError("--nats_nkey_seed_file cannot be read, or is empty",
                          {{"nats_nkey_seed_file", log.nkey_seed_file}});
        return false;
      }
    }
    options->replication.apply_wait = absl::GetFlag(FLAGS_apply_wait);
    options->min_revision_wait = absl::GetFlag(FLAGS_min_revision_wait);
    options->catch_up_timeout = absl::GetFlag(FLAGS_catch_up_timeout);
    if (options->replication.apply_wait <= absl::ZeroDuration() ||
        options->min_revision_wait < absl::ZeroDuration() ||
        options->catch_up_timeout <= absl::ZeroDuration() || log.timeout <= absl::ZeroDuration() ||
        log.max_age < absl::ZeroDuration()) {
      consent::LogError(
          "--apply_wait, --catch_up_timeout and --nats_timeout must be positive, "
          "--min_revision_wait and --nats_max_age not negative");
      return false;
    }
  } else if (replication != "standalone") {
    consent::LogError("--replication must be standalone or jetstream",
                      {{"replication", replication}});
    return false;
  } else if (!absl::GetFlag(FLAGS_nats_url).empty()) {
    consent::LogError("--nats_url is for --replication=jetstream");
    return false;
  }
  return true;
}

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "consentd: records users' objections and consents and answers whether "
      "content may be used for a purpose.\n\nUsage: consentd [flags]");
  absl::FlagsUsageConfig usage_config;
  usage_config.version_string = [] {
    return absl::StrCat("consentd ", consent::kBuildVersion, " (revision ", consent::kBuildRevision,
                        ")\n");
  };
  absl::SetFlagsUsageConfig(usage_config);
  absl::ParseCommandLine(argc, argv);
  // Debian's abseil keeps absl::Mutex deadlock detection on; gRPC's own
  // locks are absl::Mutex too, so every call paid for a lock-order graph
  // update (GraphCycles in profiles). What the lock annotations state (which
  // lock guards what, which functions need which lock held) is checked at
  // compile time instead, by the clang -Wthread-safety build CI runs, and
  // the order in which locks are taken at run time by ThreadSanitizer's
  // lock-order-inversion detection in the TSan tests CI runs
  // (docs/reliability.md).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  // Signals are taken synchronously by sigwait below; block them before any
  // thread starts so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  consent::LogFormat log_format;
  consent::LogLevel log_level;
  if (!consent::ParseLogFormat(absl::GetFlag(FLAGS_log_format), &log_format)) {
    std::cerr << "consentd: --log_format must be human or json, not \""
              << absl::GetFlag(FLAGS_log_format) << "\"\n";
    return 1;
  }
  if (!consent::ParseLogLevel(absl::GetFlag(FLAGS_log_level), &log_level)) {
    std::cerr << "consentd: --log_level must be debug, info, warn or error, not \""
              << absl::GetFlag(FLAGS_log_level) << "\"\n";
    return 1;
  }
  consent::SetLogFormat(log_format);
  consent::SetLogLevel(log_level);

  consent::ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.data_dir = absl::GetFlag(FLAGS_data_dir);
  options.policy_path = absl::GetFlag(FLAGS_policy);
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  options.policy_watch_interval = absl::GetFlag(FLAGS_policy_watch_interval);
  const int64_t block_cache_mib = absl::GetFlag(FLAGS_block_cache_mib);
  if (block_cache_mib < 8 || block_cache_mib > (int64_t{1} << 20) ||
      options.policy_watch_interval < absl::ZeroDuration()) {
    consent::LogError(
        "--block_cache_mib must be 8 to 1048576, --policy_watch_interval not negative");
    return 1;
  }
  options.block_cache_bytes = static_cast<size_t>(block_cache_mib) << 20;
  const int64_t malloc_retain_mib = absl::GetFlag(FLAGS_malloc_retain_mib);
  if (absl::Status s = consent::RetainFreedMemory(malloc_retain_mib); !s.ok()) {
    if (absl::IsInvalidArgument(s)) {
      consent::LogError(std::string(s.message()));
      return 1;
    }
    consent::LogWarning(std::string(s.message()));
  }
  options.rocksdb_statistics = absl::GetFlag(FLAGS_rocksdb_statistics);
  options.subject_index = absl::GetFlag(FLAGS_subject_index);
  options.shutdown_grace = absl::GetFlag(FLAGS_shutdown_grace);
  options.worker_threads = absl::GetFlag(FLAGS_worker_threads);
  options.request_id_retention = absl::GetFlag(FLAGS_request_id_retention);
  options.watch_checkpoint_interval = absl::GetFlag(FLAGS_watch_checkpoint_interval);
  options.max_receive_message_bytes = absl::GetFlag(FLAGS_max_receive_message_bytes);
  options.backup_dir = absl::GetFlag(FLAGS_backup_dir);
  options.backup_keep = absl::GetFlag(FLAGS_backup_keep);
  if (options.backup_keep < 0) {
    consent::LogError("--backup_keep must not be negative");
    return 1;
  }
  options.snapshot_signing_key_file = absl::GetFlag(FLAGS_snapshot_signing_key_file);
  options.pseudonymize_key_file = absl::GetFlag(FLAGS_pseudonymize_key_file);
  options.tls.cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  options.tls.key_file = absl::GetFlag(FLAGS_tls_key_file);
  options.tls.client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file);
  options.tls.refresh_interval = absl::GetFlag(FLAGS_tls_refresh_interval);
  if (!consent::ParseClientAuth(absl::GetFlag(FLAGS_tls_client_auth), &options.tls.client_auth)) {
    consent::LogError("--tls_client_auth must be none, optional or require",
                      {{"tls_client_auth", absl::GetFlag(FLAGS_tls_client_auth)}});
    return 1;
  }
  options.auth_file = absl::GetFlag(FLAGS_auth_file);
  options.insecure_listen_any = absl::GetFlag(FLAGS_insecure_listen_any);
  options.max_streams = absl::GetFlag(FLAGS_max_streams);
  options.max_connection_idle = absl::GetFlag(FLAGS_max_connection_idle);
  options.keepalive_time = absl::GetFlag(FLAGS_keepalive_time);
  if (options.max_connection_idle <= absl::ZeroDuration() ||
      options.keepalive_time < absl::Seconds(10)) {
    consent::LogError("--max_connection_idle must be positive, --keepalive_time at least 10s");
    return 1;
  }
  const int64_t max_queued_reads = absl::GetFlag(FLAGS_max_queued_reads);
  const int64_t max_queued_writes = absl::GetFlag(FLAGS_max_queued_writes);
  options.watch_idle_timeout = absl::GetFlag(FLAGS_watch_idle_timeout);
  if (options.max_streams < 1 || options.max_streams > 10000 || max_queued_reads < 1 ||
      max_queued_writes < 1 || options.watch_idle_timeout <= absl::ZeroDuration()) {
    consent::LogError(
        "--max_streams must be 1 to 10000, --max_queued_reads and --max_queued_writes at "
        "least 1, --watch_idle_timeout positive");
    return 1;
  }
  options.max_queued_reads = static_cast<size_t>(max_queued_reads);
  options.max_queued_writes = static_cast<size_t>(max_queued_writes);
  if (options.request_id_retention <= absl::ZeroDuration() ||
      options.watch_checkpoint_interval <= absl::ZeroDuration() ||
      options.shutdown_grace < absl::ZeroDuration()) {
    consent::LogError(
        "--request_id_retention and --watch_checkpoint_interval must be positive, "
        "--shutdown_grace not negative");
    return 1;
  }
  if (options.worker_threads < 1 || options.worker_threads > 1024) {
    consent::LogError("--worker_threads must be between 1 and 1024",
                      {{"worker_threads", absl::StrCat(options.worker_threads)}});
    return 1;
  }
  if (options.max_receive_message_bytes < 4096 || options.max_receive_message_bytes > (64 << 20)) {
    consent::LogError(
        "--max_receive_message_bytes must be between 4096 and 67108864",
        {{"max_receive_message_bytes", absl::StrCat(options.max_receive_message_bytes)}});
    return 1;
  }
  const std::string replication = absl::GetFlag(FLAGS_replication);
  if (!ReplicationFromFlags(replication, &options)) return 1;
  // The effective configuration, every setting, defaults included.
  consent::LogInfo(
      "starting consentd",
      {{"listen", options.listen},
       {"data_dir", options.data_dir},
       {"policy", options.policy_path},
       {"policy_watch_interval", options.policy_watch_interval == absl::ZeroDuration()
                                     ? "(off)"
                                     : absl::FormatDuration(options.policy_watch_interval)},
       {"block_cache_mib", absl::StrCat(block_cache_mib)},
       {"malloc_retain_mib",
        malloc_retain_mib == 0 ? "(glibc's defaults)" : absl::StrCat(malloc_retain_mib)},
       {"metrics_listen", options.metrics_listen.empty() ? "(disabled)" : options.metrics_listen},
       {"rocksdb_statistics", options.rocksdb_statistics ? "true" : "false"},
       {"subject_index", options.subject_index ? "true" : "false"},
       {"worker_threads", absl::StrCat(options.worker_threads)},
       {"shutdown_grace", absl::FormatDuration(options.shutdown_grace)},
       {"request_id_retention", absl::FormatDuration(options.request_id_retention)},
       {"watch_checkpoint_interval", absl::FormatDuration(options.watch_checkpoint_interval)},
       {"max_receive_message_bytes", absl::StrCat(options.max_receive_message_bytes)},
       {"backup_dir", options.backup_dir.empty() ? "(disabled)" : options.backup_dir},
       {"backup_keep", options.backup_keep == 0 ? "(all)" : absl::StrCat(options.backup_keep)},
       {"snapshot_signing_key_file", options.snapshot_signing_key_file.empty()
                                         ? "(snapshots disabled)"
                                         : options.snapshot_signing_key_file},
       {"pseudonymize_key_file",
        options.pseudonymize_key_file.empty() ? "(none)" : options.pseudonymize_key_file},
       {"max_streams", absl::StrCat(options.max_streams)},
       {"max_queued_reads", absl::StrCat(options.max_queued_reads)},
       {"max_queued_writes", absl::StrCat(options.max_queued_writes)},
       {"watch_idle_timeout", absl::FormatDuration(options.watch_idle_timeout)},
       {"max_connection_idle", absl::FormatDuration(options.max_connection_idle)},
       {"keepalive_time", absl::FormatDuration(options.keepalive_time)},
       {"tls", options.tls.enabled() ? options.tls.cert_file : "(off)"},
       {"tls_client_auth", absl::GetFlag(FLAGS_tls_client_auth)},
       {"auth_file", options.auth_file.empty() ? "(none)" : options.auth_file},
       {"replication", replication},
       {"nats_url", absl::StrJoin(options.replication.log.urls, ",")},
       {"nats_tls", options.replication.log.tls_ca_file.empty()
                        ? "(off)"
                        : options.replication.log.tls_ca_file},
       {"nats_token", options.replication.log.token.empty() ? "(none)" : "(from file)"},
       {"nats_nkey",
        options.replication.log.nkey.empty() ? "(none)" : options.replication.log.nkey},
       {"log_format", absl::GetFlag(FLAGS_log_format)},
       {"log_level", std::string(consent::LogLevelName(log_level))}});

  auto server = consent::ConsentServer::Start(options);
  if (!server.ok()) {
    consent::LogError("consentd cannot start", {{"error", server.status().ToString()}});
    return 1;
  }
  if (options.auth_file.empty()) {
    if (consent::IsLoopbackAddress(options.listen)) {
      consent::LogInfo(
          "no authentication configured (--auth_file): serving on loopback only, every local "
          "process may call every RPC");
    } else {
      consent::LogWarning(
          "--insecure_listen_any: serving a network address WITHOUT authentication; every "
          "peer that reaches this port may record, clear and delete any user's choices",
          {{"listen", options.listen}});
    }
  } else {
    consent::LogInfo(
        "authentication on: every call but health needs a known caller with the "
        "RPC's role",
        {{"auth_file", options.auth_file}});
  }
  if (!(*server)->metrics_address().empty()) {
    consent::LogInfo("metrics endpoint ready",
                     {{"url", absl::StrCat("http://", (*server)->metrics_address(), "/metrics")}});
  }
  consent::LogInfo("serving", {{"address", (*server)->listen_address()}});
  // Tests and scripts wait for this line on stdout to learn the address.
  std::cout << "consentd listening on " << (*server)->listen_address() << std::endl;

  for (;;) {
    int signal_number = 0;
    if (sigwait(&signals, &signal_number) != 0) continue;
    if (signal_number == SIGHUP) {
      consent::LogInfo("SIGHUP: reloading the policy and the auth file");
      (*server)->ReloadPolicy().IgnoreError();  // logged by the reloader
      (*server)->ReloadAuth().IgnoreError();    // logged by the holder
      continue;
    }
    consent::LogInfo("draining, then closing the store", {{"signal", absl::StrCat(signal_number)}});
    break;
  }
  absl::Status status = (*server)->Shutdown();
  return status.ok() ? 0 : 1;
}
