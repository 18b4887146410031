// A real NATS cluster with JetStream for tests: nats-server processes on
// free loopback ports, routed to each other, their stores in a temporary
// directory. Debian's nats-server must be installed (scripts/install-deps.sh
// --with-test-tools).
#ifndef CONSENT_TESTS_NATS_CLUSTER_H_
#define CONSENT_TESTS_NATS_CLUSTER_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tests/test_util.h"

namespace consent::testing {

class NatsCluster {
 public:
  struct Options {
    int nodes = 3;
    // The largest message each server takes.
    int64_t max_payload_bytes = 8 << 20;
    // Clients connect over TLS with this certificate and key (PEM) when
    // set; with tls_ca_file they must present a certificate it signed.
    std::string tls_cert_file;
    std::string tls_key_file;
    std::string tls_ca_file;
    // Clients must present this token when set.
    std::string token;
    // Clients must sign in as this NKey user (its public key) when set.
    std::string nkey;
  };
  // Starts the servers and returns once every one accepts clients.
  static absl::StatusOr<std::unique_ptr<NatsCluster>> Start(const Options& options);
  static absl::StatusOr<std::unique_ptr<NatsCluster>> Start(int nodes, int64_t max_payload_bytes) {
    Options options;
    options.nodes = nodes;
    options.max_payload_bytes = max_payload_bytes;
    return Start(options);
  }
  ~NatsCluster();  // stops every server still running

  // Client URL of each node ("nats://127.0.0.1:PORT").
  const std::vector<std::string>& urls() const { return urls_; }
  // SIGKILLs node `i`.
  void Kill(int i);
  // Starts node `i` again after Kill, on the same store and ports; returns
  // once it accepts clients.
  absl::Status Restart(int i) { return Spawn(i); }
  // Node `i`'s log so far.
  std::string Log(int i) const;

 private:
  NatsCluster() = default;
  absl::Status Spawn(int i);

  TempDir dir_;
  std::vector<std::string> urls_;
  std::vector<std::string> configs_;
  std::vector<int> client_ports_;
  std::vector<pid_t> pids_;
};

}  // namespace consent::testing

#endif  // CONSENT_TESTS_NATS_CLUSTER_H_
