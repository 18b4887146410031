// A log of write commands kept by NATS JetStream: one stream, file
// storage, replicated by JetStream's Raft groups across the NATS cluster.
// Each command is appended with a message id (a write's request id), which
// JetStream deduplicates within the stream's duplicate window, and gets the
// stream's next sequence; readers take the commands back in sequence order
// from any sequence still retained. Nothing here knows what a command
// means. The NATS C client (libnats) stays behind this header.
#ifndef CONSENT_STORAGE_JETSTREAM_LOG_H_
#define CONSENT_STORAGE_JETSTREAM_LOG_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace consent::storage {

struct JetStreamLogOptions {
  // NATS servers to connect to ("nats://host:port"); the client fails over
  // between them. At least one.
  std::vector<std::string> urls;
  // TLS to the servers: on when tls_ca_file (PEM CA certificates the
  // servers' certificates are verified against) is set; tls_cert_file and
  // tls_key_file (PEM) give a client certificate for servers that ask.
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  // The token of servers that require one (authorization { token }); empty:
  // none.
  std::string token;
  // An NKey user (authorization { users: [{ nkey }] }): its public key
  // ("U...") and the file holding its seed ("SU...", as `nk -gen user`
  // writes it), both set or neither; the connection signs the server's
  // challenge with the seed, which never leaves this process. Not with a
  // token.
  std::string nkey;
  std::string nkey_seed_file;
  // The stream and the one subject it holds; created on Open if absent.
  std::string stream = "CONSENT_COMMANDS";
  std::string subject = "consent.commands";
  // Copies JetStream keeps of each command (1 to 5).
  int replicas = 3;
  // The largest command, in bytes: the stream refuses larger ones. The NATS
  // servers' max_payload must be at least this.
  int64_t max_message_bytes = 8 << 20;
  // How long JetStream remembers a message id, so that a retried append
  // with the same id is recognised as a duplicate.
  absl::Duration duplicate_window = absl::Minutes(10);
  // How long the stream keeps a command; zero: for ever. A replica can
  // catch up from the log only while it still holds the command after the
  // replica's last one: a new replica needs a backup younger than this.
  absl::Duration max_age = absl::ZeroDuration();
  // How long one call waits for the cluster (connecting, an append's
  // acknowledgement, a read).
  absl::Duration timeout = absl::Seconds(5);
  // How long Open waits for the cluster to take the stream: a cluster
  // that has just started elects its JetStream leader first, which can
  // take several seconds.
  absl::Duration open_timeout = absl::Seconds(30);
  // A Reader's server sends a heartbeat this often when it has nothing to
  // deliver; two missed ones make the Reader start over on another server
  // (after the one holding it failed), after the last command delivered.
  absl::Duration reader_heartbeat = absl::Seconds(1);
};

// A command as the stream holds it.
struct LoggedCommand {
  uint64_t sequence = 0;  // the stream's, from 1
  std::string msg_id;     // empty when appended without one
  std::string bytes;
};

// Thread safe: Append, Get and LastSequence may be called concurrently. A
// Reader is for one thread, and is destroyed before the log.
class JetStreamLog {
 public:
  // Connects and makes sure the stream exists with `options`' settings.
  // kUnavailable when no server answers or the cluster has no JetStream
  // leader within options.open_timeout; kInvalidArgument for bad options.
  static absl::StatusOr<std::unique_ptr<JetStreamLog>> Open(const JetStreamLogOptions& options);
  virtual ~JetStreamLog() = default;

  struct Appended {
    uint64_t sequence = 0;
    // True when the stream already held a command with this msg_id (within
    // the duplicate window): `sequence` is that command's, and nothing new
    // was stored.
    bool duplicate = false;
  };
  // Appends `bytes` under `msg_id` (may be empty: no deduplication) and
  // returns once the stream's leader has stored it on a quorum of replicas.
  // kUnavailable when that is not confirmed within options.timeout (a
  // quorum is down, or the answer was lost: the command may or may not be
  // stored, and an append retried with the same msg_id finds out);
  // kInvalidArgument when `bytes` exceeds options.max_message_bytes.
  virtual absl::StatusOr<Appended> Append(absl::string_view msg_id, absl::string_view bytes) = 0;

  // The command at `sequence`: kNotFound when the stream has none there.
  virtual absl::StatusOr<LoggedCommand> Get(uint64_t sequence) = 0;

  // The stream's last sequence (0 when empty).
  virtual absl::StatusOr<uint64_t> LastSequence() = 0;

  struct State {
    // The oldest command still held (retention drops older ones) and the
    // newest; 0 and 0 when empty.
    uint64_t first_sequence = 0;
    uint64_t last_sequence = 0;
    // The NATS server (its server_name) leading the stream's Raft group;
    // empty while there is none.
    std::string leader;
  };
  virtual absl::StatusOr<State> GetState() = 0;

  // Delivers the commands from `sequence` on, in order, with no gaps and
  // no repeats (an ordered consumer: after a server fails over it resumes
  // after the last command delivered).
  class Reader {
   public:
    virtual ~Reader() = default;
    // The next command, or nullopt when none arrived within `wait`.
    virtual absl::StatusOr<std::optional<LoggedCommand>> Next(absl::Duration wait) = 0;
  };
  virtual absl::StatusOr<std::unique_ptr<Reader>> ReadFrom(uint64_t sequence) = 0;
};

}  // namespace consent::storage

#endif  // CONSENT_STORAGE_JETSTREAM_LOG_H_
