#include "tests/nats_cluster.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"

namespace consent::testing {
namespace {

constexpr char kNatsServer[] = "/usr/sbin/nats-server";  // Debian's nats-server

bool Accepts(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

}  // namespace

absl::StatusOr<std::unique_ptr<NatsCluster>> NatsCluster::Start(const Options& options) {
  const int nodes = options.nodes;
  if (access(kNatsServer, X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(kNatsServer, " is missing: scripts/install-deps.sh --with-test-tools"));
  }
  std::unique_ptr<NatsCluster> cluster(new NatsCluster());
  std::vector<int> route_ports;
  for (int i = 0; i < nodes; ++i) {
    auto client = FreeLoopbackPort();
    auto route = FreeLoopbackPort();
    if (!client.ok()) return client.status();
    if (!route.ok()) return route.status();
    cluster->client_ports_.push_back(*client);
    route_ports.push_back(*route);
    cluster->urls_.push_back(absl::StrCat("nats://127.0.0.1:", *client));
  }
  std::vector<std::string> routes;
  for (int port : route_ports) routes.push_back(absl::StrCat("nats-route://127.0.0.1:", port));
  std::string client_security;
  if (!options.tls_cert_file.empty()) {
    absl::StrAppend(&client_security, "tls {\n  cert_file: \"", options.tls_cert_file,
                    "\"\n  key_file: \"", options.tls_key_file, "\"\n");
    if (!options.tls_ca_file.empty()) {
      absl::StrAppend(&client_security, "  ca_file: \"", options.tls_ca_file,
                      "\"\n  verify: true\n");
    }
    absl::StrAppend(&client_security, "}\n");
  }
  if (!options.token.empty()) {
    absl::StrAppend(&client_security, "authorization { token: \"", options.token, "\" }\n");
  }
  if (!options.nkey.empty()) {
    absl::StrAppend(&client_security, "authorization { users: [ { nkey: ", options.nkey,
                    " } ] }\n");
  }
  for (int i = 0; i < nodes; ++i) {
    const std::string config = cluster->dir_.Sub(absl::StrCat("n", i, ".conf"));
    WriteFile(
        config,
        absl::StrCat("server_name: n", i, "\nhost: 127.0.0.1\nport: ", cluster->client_ports_[i],
                     "\nmax_payload: ", options.max_payload_bytes, "\n", client_security,
                     "jetstream { store_dir: \"", cluster->dir_.Sub(absl::StrCat("n", i)),
                     "\" }\ncluster {\n  name: consent-test\n  listen: 127.0.0.1:", route_ports[i],
                     "\n  routes: [", absl::StrJoin(routes, ", "), "]\n}\n"));
    cluster->configs_.push_back(config);
    cluster->pids_.push_back(-1);
  }
  for (int i = 0; i < nodes; ++i) {
    if (absl::Status s = cluster->Spawn(i); !s.ok()) return s;
  }
  return cluster;
}

absl::Status NatsCluster::Spawn(int i) {
  const std::string log = dir_.Sub(absl::StrCat("n", i, ".log"));
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
    }
    execl(kNatsServer, kNatsServer, "-c", configs_[i].c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  pids_[i] = pid;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (!Accepts(client_ports_[i])) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      pids_[i] = -1;
      return absl::InternalError(absl::StrCat("nats-server n", i, " exited: ", Log(i)));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("nats-server n", i, " did not accept clients in 20 s: ", Log(i)));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::OkStatus();
}

void NatsCluster::Kill(int i) {
  if (pids_[i] <= 0) return;
  kill(pids_[i], SIGKILL);
  waitpid(pids_[i], nullptr, 0);
  pids_[i] = -1;
}

std::string NatsCluster::Log(int i) const {
  return ReadFile(dir_.Sub(absl::StrCat("n", i, ".log")));
}

NatsCluster::~NatsCluster() {
  for (pid_t pid : pids_) {
    if (pid > 0) kill(pid, SIGTERM);
  }
  for (pid_t pid : pids_) {
    if (pid > 0) waitpid(pid, nullptr, 0);
  }
}

}  // namespace consent::testing
