// consentd assembled: the store, the active policy, the gRPC services with
// health checking and reflection, and the metrics endpoint.
#ifndef CONSENT_SERVER_SERVER_H_
#define CONSENT_SERVER_SERVER_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/clock.h"
#include "server/replication.h"
#include "server/tls.h"

namespace grpc {
class ServerBuilder;
}  // namespace grpc

namespace consent::storage {
struct StoreOptions;
}  // namespace consent::storage

namespace consent {

struct ServerOptions;

// gRPC settings consentd serves with, shared with the benchmark's empty
// server so the two compare like for like: message size limit, connection
// keepalive and idle limits, and the synchronous server's threads
// (docs/performance.md, "Handler threads").
void ConfigureServerBuilder(const ServerOptions& options, grpc::ServerBuilder* builder);

// The largest --malloc_retain_mib: glibc's ceiling for its mmap threshold.
inline constexpr int64_t kMaxMallocRetainMib = 32;

// Lets glibc's malloc keep up to `mib` MiB of freed memory on each of its
// arenas instead of returning it to the kernel, and serve blocks of up to
// `mib` MiB from them instead of mapping each one (its mmap and trim
// thresholds). A BatchCheck of 10,000 items allocates and frees a few MiB;
// with glibc's defaults those pages went back to the kernel after every
// call and were faulted in again by the next (78,000 page faults a second),
// and BatchCheck of 10,000 ran at a third of the rate it reaches with 32
// (docs/performance.md, "Freed memory kept by malloc"). 0 leaves glibc's
// defaults. Call once, at start. kInvalidArgument outside 0 to
// kMaxMallocRetainMib; kUnavailable when the allocator does not take the
// thresholds (sanitizer builds replace glibc's malloc): then nothing
// changed, and the process may go on.
absl::Status RetainFreedMemory(int64_t mib);

struct ServerOptions {
  // host:port; port 0 picks a free port (see ConsentServer::listen_address).
  std::string listen = "127.0.0.1:50051";
  std::string data_dir = "./consent-data";
  std::string policy_path = "deploy/policy/default.textproto";
  // How often the policy file is looked at; a changed file is reloaded as
  // ReloadPolicy would (policy_watcher.h). Zero: only SIGHUP and
  // ReloadPolicy reload it.
  absl::Duration policy_watch_interval = absl::Seconds(10);
  // RocksDB's block cache, in bytes (StoreOptions).
  size_t block_cache_bytes = 256 << 20;
  // host:port for /metrics; empty disables the endpoint.
  std::string metrics_listen = "127.0.0.1:9464";
  // RocksDB ticker statistics for the block cache hit and miss metrics;
  // they cost about 3% of single-check throughput, so they are opt-in.
  bool rocksdb_statistics = false;
  // Serve checks from an in-memory index of subjects, loaded in the
  // background at start (StoreOptions::subject_index).
  bool subject_index = true;
  // Threads for the unary calls that wait for RocksDB reads: GetSubject
  // and ListHistory. (Writes hold no thread while they wait for their
  // group commit: the store's commit pipeline answers them.)
  int worker_threads = 16;
  // How long in-flight calls may run on after shutdown starts.
  absl::Duration shutdown_grace = absl::Seconds(10);
  // How long request ids are remembered for idempotent replays.
  absl::Duration request_id_retention = absl::Hours(24);
  // WatchChanges sends a checkpoint after this long without an event.
  absl::Duration watch_checkpoint_interval = absl::Seconds(5);
  // Admission: open streams (StreamCheck, WatchChanges), GetSubject and
  // ListHistory calls waiting for a worker thread, writes waiting for the
  // commit pipeline; past each, RESOURCE_EXHAUSTED. A watcher that reads
  // nothing for watch_idle_timeout is ended.
  int max_streams = 64;
  size_t max_queued_reads = 1024;
  size_t max_queued_writes = 10'000;
  absl::Duration watch_idle_timeout = absl::Seconds(60);
  // A connection with no call for this long is closed (GOAWAY; clients
  // reconnect when they next call). Connections are pinged after
  // keepalive_time without traffic and closed when no answer comes within
  // keepalive_timeout: a peer that vanished does not hold its streams.
  absl::Duration max_connection_idle = absl::Minutes(5);
  absl::Duration keepalive_time = absl::Minutes(1);
  absl::Duration keepalive_timeout = absl::Seconds(20);
  // Where CreateBackup writes its backups, each in a new subdirectory
  // named by the request; created (0700) at start if missing. Empty:
  // CreateBackup is refused.
  std::string backup_dir;
  // After each backup, only the newest backup_keep backups under
  // backup_dir are kept (0 keeps all).
  int backup_keep = 0;
  // PEM file of the Ed25519 private key ExportSnapshot signs with; empty:
  // ExportSnapshot is refused. Read at start.
  std::string snapshot_signing_key_file;
  // File of the key (at least 16 bytes, raw) of pseudonymized snapshots
  // and change feeds; empty: they are refused. Read at start.
  std::string pseudonymize_key_file;
  // Largest request message accepted, in bytes; larger ones get
  // RESOURCE_EXHAUSTED from gRPC before any of it is parsed.
  int max_receive_message_bytes = 8 << 20;
  // TLS for the gRPC port (server/tls.h); off when no files are given.
  TlsOptions tls;
  // consent.v1.AuthConfig in text format: callers and their roles. Needs
  // TLS (tokens travel only over TLS). Empty: no authentication, and then
  // only loopback addresses are served unless insecure_listen_any.
  std::string auth_file;
  // Serve a non-loopback address without authentication: every local and
  // network peer may call every RPC. For trusted networks only.
  bool insecure_listen_any = false;
  // Replication on NATS JetStream (docs/replication.md): on when
  // replication.log.urls is not empty; standalone otherwise.
  ReplicationOptions replication;
  // With replication: how long a read whose min_revision this replica has
  // not applied waits for it (then UNAVAILABLE), and how long start-up
  // waits to apply the command log before serving.
  absl::Duration min_revision_wait = absl::Seconds(2);
  absl::Duration catch_up_timeout = absl::Minutes(10);
  // Tests only: changes the store's options before it opens (to give it a
  // fault-injecting file system). May be empty.
  std::function<void(storage::StoreOptions&)> adjust_store_options;
};

// Whether `listen` ("host:port") names a loopback address.
bool IsLoopbackAddress(absl::string_view listen);

// consentd, in a process: the store, the policy, the gRPC services,
// health and the metrics endpoint, started together and stopped in
// order. Implemented in server.cc; thread safe.
class ConsentServer {
 public:
  // Opens the store, loads the policy, binds both ports and starts serving;
  // health reports SERVING only after all of it succeeded. Errors name what
  // failed (data directory, policy file, address). `clock` may be null for
  // the real clock; it must outlive the server.
  static absl::StatusOr<std::unique_ptr<ConsentServer>> Start(const ServerOptions& options,
                                                              const Clock* clock = nullptr);

  virtual ~ConsentServer() = default;

  // The address actually bound, with the chosen port.
  virtual std::string listen_address() const = 0;
  // The metrics address bound, or "" when disabled.
  virtual std::string metrics_address() const = 0;

  // Reloads the policy file (SIGHUP, and the watcher when the file
  // changes). Logs the outcome.
  virtual absl::Status ReloadPolicy() = 0;
  // Reloads the auth file (SIGHUP); OK and nothing done without one. Logs
  // the outcome; on error the file in force stays.
  virtual absl::Status ReloadAuth() = 0;

  // Reports NOT_SERVING, stops accepting calls, lets in-flight ones finish
  // within the grace period, then closes the store. Idempotent.
  virtual absl::Status Shutdown() = 0;
};

}  // namespace consent

#endif  // CONSENT_SERVER_SERVER_H_
