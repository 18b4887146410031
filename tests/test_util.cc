#include "tests/test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace consent::testing {
namespace {

std::string TempRoot() {
  const char* dir = getenv("TEST_TMPDIR");
  return dir != nullptr && *dir != '\0' ? dir : "/tmp";
}

std::vector<char*> Argv(std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  return argv;
}

int WaitExit(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

TempDir::TempDir() {
  std::string pattern = TempRoot() + "/consent-test-XXXXXX";
  char* made = mkdtemp(pattern.data());
  if (made == nullptr) abort();
  path_ = made;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

absl::StatusOr<int> FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return absl::InternalError("bind to a free loopback port failed");
  }
  close(fd);
  return ntohs(addr.sin_port);
}

int64_t ResidentBytes(pid_t pid) {
  const std::string status = ReadFile(absl::StrCat("/proc/", pid, "/status"));
  const size_t at = status.find("VmRSS:");
  if (at == std::string::npos) return -1;
  return std::stoll(status.substr(at + 6)) * 1024;
}

std::string DefaultPolicyPath() {
  return std::string(CONSENT_SOURCE_DIR) + "/deploy/policy/default.textproto";
}

absl::StatusOr<std::unique_ptr<ConsentdProcess>> ConsentdProcess::Start(const Options& options) {
  std::unique_ptr<ConsentdProcess> process(new ConsentdProcess());
  process->log_path_ = options.data_dir + ".log";
  std::vector<std::string> args = options.command;
  if (args.empty()) {
    args = {CONSENTD_PATH,
            "--listen=127.0.0.1:0",
            "--metrics_listen=",
            "--policy_watch_interval=0",
            "--data_dir=" + options.data_dir,
            "--policy=" + options.policy};
    args.insert(args.end(), options.extra_args.begin(), options.extra_args.end());
  }

  int out_pipe[2];
  if (pipe(out_pipe) != 0) return absl::InternalError("pipe failed");
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    dup2(out_pipe[1], STDOUT_FILENO);
    int log = open(process->log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (log >= 0) dup2(log, STDERR_FILENO);
    close(out_pipe[0]);
    auto argv = Argv(args);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(out_pipe[1]);
  process->pid_ = pid;

  // Read stdout until the address line; poll bounds the wait.
  const absl::Time deadline = absl::Now() + options.start_timeout;
  std::string out;
  const std::string marker = "consentd listening on ";
  while (true) {
    size_t at = out.find(marker);
    size_t eol = at == std::string::npos ? at : out.find('\n', at);
    if (eol != std::string::npos) {
      process->address_ = out.substr(at + marker.size(), eol - at - marker.size());
      break;
    }
    const int wait_ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    pollfd fd{out_pipe[0], POLLIN, 0};
    if (wait_ms <= 0 || poll(&fd, 1, wait_ms) <= 0) {
      close(out_pipe[0]);
      return absl::DeadlineExceededError("consentd did not print its address in time: " +
                                         process->Log());
    }
    char buffer[512];
    const ssize_t n = read(out_pipe[0], buffer, sizeof(buffer));
    if (n <= 0) {
      close(out_pipe[0]);
      const int code = WaitExit(pid);
      process->pid_ = -1;
      return absl::FailedPreconditionError(
          absl::StrCat("consentd exited with ", code, ": ", process->Log()));
    }
    out.append(buffer, static_cast<size_t>(n));
  }
  // Keep the pipe's read end from blocking consentd later: it writes to
  // stdout only once, so closing ours is safe (SIGPIPE is not reached).
  close(out_pipe[0]);
  return process;
}

CommandResult RunCommand(const std::vector<std::string>& args, const std::string& input) {
  TempDir dir;
  const std::string in = dir.Sub("stdin"), out = dir.Sub("stdout"), err = dir.Sub("stderr");
  WriteFile(in, input);
  std::vector<std::string> argv_strings = args;
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(open(in.c_str(), O_RDONLY), STDIN_FILENO);
    dup2(open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), STDOUT_FILENO);
    dup2(open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), STDERR_FILENO);
    auto argv = Argv(argv_strings);
    execv(argv[0], argv.data());
    _exit(127);
  }
  CommandResult result;
  result.exit_code = WaitExit(pid);
  result.out = ReadFile(out);
  result.err = ReadFile(err);
  return result;
}

std::pair<int, std::string> ConsentdProcess::RunToExit(const std::vector<std::string>& args) {
  std::vector<std::string> full = {CONSENTD_PATH};
  full.insert(full.end(), args.begin(), args.end());
  CommandResult result = RunCommand(full);
  return {result.exit_code, result.err};
}

ConsentdProcess::~ConsentdProcess() {
  if (pid_ > 0) StopWith(SIGKILL);
}

int ConsentdProcess::StopWith(int signal) {
  if (pid_ <= 0) return -1;
  kill(pid_, signal);
  const int code = WaitExit(pid_);
  pid_ = -1;
  return code;
}

std::string ConsentdProcess::Log() const { return ReadFile(log_path_); }

std::string ConsentdProcess::metrics_address() const {
  // "metrics endpoint ready url=http://HOST:PORT/metrics" (or the JSON form).
  const std::string log = Log();
  const size_t ready = log.find("metrics endpoint ready");
  if (ready == std::string::npos) return "";
  const size_t start = log.find("http://", ready);
  const size_t end = log.find("/metrics", start);
  if (start == std::string::npos || end == std::string::npos) return "";
  return log.substr(start + 7, end - start - 7);
}

absl::StatusOr<HttpResponse> HttpRequest(const std::string& address, const std::string& method,
                                         const std::string& path) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return absl::InvalidArgumentError("address is not host:port");
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(address.substr(0, colon).c_str(), address.substr(colon + 1).c_str(), &hints,
                  &found) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot resolve ", address));
  }
  const int fd = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
  const bool connected = fd >= 0 && connect(fd, found->ai_addr, found->ai_addrlen) == 0;
  freeaddrinfo(found);
  if (!connected) {
    if (fd >= 0) close(fd);
    return absl::UnavailableError(absl::StrCat("cannot connect to ", address));
  }
  const std::string request =
      absl::StrCat(method, " ", path, " HTTP/1.0\r\nHost: ", address, "\r\n\r\n");
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return absl::UnavailableError("write failed");
  }
  std::string response;
  char buffer[8192];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0)
    response.append(buffer, static_cast<size_t>(n));
  close(fd);
  const size_t header_end = response.find("\r\n\r\n");
  const size_t line_end = response.find("\r\n");
  int code = 0;
  if (header_end == std::string::npos || !absl::StartsWith(response, "HTTP/1.") ||
      response.size() < 12 || !absl::SimpleAtoi(response.substr(9, 3), &code)) {
    return absl::UnavailableError(absl::StrCat(method, " ", path, ": not an HTTP response"));
  }
  HttpResponse out;
  out.code = code;
  out.headers = response.substr(line_end + 2, header_end + 2 - (line_end + 2));
  out.body = response.substr(header_end + 4);
  return out;
}

absl::StatusOr<std::string> HttpGet(const std::string& address, const std::string& path) {
  auto response = HttpRequest(address, "GET", path);
  if (!response.ok()) return response.status();
  if (response->code != 200) {
    return absl::UnavailableError(absl::StrCat("GET ", path, ": status ", response->code));
  }
  return std::move(response->body);
}

absl::StatusOr<double> SampleValue(const std::string& exposition, const std::string& series) {
  std::istringstream lines(exposition);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return absl::NotFoundError(absl::StrCat("no sample ", series));
}

v1::CheckRequest PublicPostCheck(const std::string& user, const std::string& purpose) {
  v1::CheckRequest request;
  request.set_purpose(purpose);
  request.set_user_id(user);
  request.mutable_content()->set_content_id("post-1");
  request.mutable_content()->set_content_type(v1::CONTENT_TYPE_POST);
  request.mutable_content()->set_visibility(v1::VISIBILITY_PUBLIC);
  request.mutable_content()->mutable_create_time()->set_seconds(1'700'000'000);  // 2023-11-14
  return request;
}

v1::UpdateSubjectRequest UkAdult(const std::string& user) {
  v1::UpdateSubjectRequest request;
  request.set_user_id(user);
  request.mutable_attributes()->set_jurisdiction("GB");
  request.mutable_attributes()->mutable_birth_date()->set_year(1990);
  request.mutable_attributes()->mutable_birth_date()->set_month(5);
  request.mutable_attributes()->mutable_birth_date()->set_day(17);
  request.mutable_update_mask()->add_paths("jurisdiction");
  request.mutable_update_mask()->add_paths("birth_date");
  return request;
}

v1::SetPreferenceRequest PreferenceOf(const std::string& user, v1::PreferenceState state,
                                      const std::string& purpose) {
  v1::SetPreferenceRequest request;
  request.set_user_id(user);
  request.set_purpose(purpose);
  request.set_state(state);
  return request;
}

}  // namespace consent::testing
