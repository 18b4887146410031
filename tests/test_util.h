// Helpers shared by the tests: temporary directories and a real consentd
// process on loopback.
#ifndef CONSENT_TESTS_TEST_UTIL_H_
#define CONSENT_TESTS_TEST_UTIL_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "consent/v1/registry.pb.h"

namespace consent::testing {

// Whether this build runs under AddressSanitizer, whose quarantine keeps
// freed memory resident: resident-memory bounds are checked in the release
// build only.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kAddressSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kAddressSanitizer = true;
#else
inline constexpr bool kAddressSanitizer = false;
#endif
#else
inline constexpr bool kAddressSanitizer = false;
#endif

// Resident memory of a process, in bytes (VmRSS of /proc/PID/status), or -1.
int64_t ResidentBytes(pid_t pid);

// A loopback port nothing listens on now: bound to port 0, then closed (so
// another process may take it later; for servers that cannot bind 0).
absl::StatusOr<int> FreeLoopbackPort();

// A fresh directory, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  // path() + "/" + name
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Writes `contents` to `path`, replacing it.
void WriteFile(const std::string& path, const std::string& contents);
std::string ReadFile(const std::string& path);

// Path of the policy shipped in deploy/policy/.
std::string DefaultPolicyPath();

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs `args` (args[0] is the program's path) to completion, with `input`
// on its standard input.
CommandResult RunCommand(const std::vector<std::string>& args, const std::string& input = "");

struct HttpResponse {
  int code = 0;
  std::string headers;  // the header lines, as sent
  std::string body;
};

// `method` http://`address``path` over a plain socket (HTTP/1.0), any
// status; kUnavailable when the server cannot be reached or answers
// something that is not HTTP.
absl::StatusOr<HttpResponse> HttpRequest(const std::string& address, const std::string& method,
                                         const std::string& path);

// GET http://`address``path`. The body on status 200; otherwise an error
// naming the status line.
absl::StatusOr<std::string> HttpGet(const std::string& address, const std::string& path);

// The value of one sample in a Prometheus text exposition, `series` written
// as exposed (labels in prometheus-cpp's order: sorted by name), e.g.
// `consent_writes_total{kind="preference",result="ok"}`. kNotFound if absent.
absl::StatusOr<double> SampleValue(const std::string& exposition, const std::string& series);

// The consentd binary started as a child process with --listen on port 0,
// metrics disabled and the policy file not watched (tests that rewrite it
// reload it themselves) unless `args` say otherwise. Start() returns once
// consentd printed its address (it is then SERVING) or failed.
class ConsentdProcess {
 public:
  struct Options {
    std::string data_dir;
    std::string policy = DefaultPolicyPath();
    std::vector<std::string> extra_args;
    // When set, this command runs instead of consentd and the flags above
    // (another server that prints consentd's address line, such as
    // consent-empty-server); data_dir then only names the log file.
    std::vector<std::string> command;
    // How long to wait for the address line before giving up.
    absl::Duration start_timeout = absl::Seconds(30);
  };

  static absl::StatusOr<std::unique_ptr<ConsentdProcess>> Start(const Options& options);
  // Runs consentd to completion (for start-up failures): exit code and stderr.
  static std::pair<int, std::string> RunToExit(const std::vector<std::string>& args);

  ~ConsentdProcess();

  const std::string& address() const { return address_; }
  // host:port of /metrics, from the start-up log; "" when disabled.
  std::string metrics_address() const;
  pid_t pid() const { return pid_; }
  // Sends `signal` and waits for exit; returns the exit status (128+signal
  // when killed by one).
  int StopWith(int signal);
  int Kill9() { return StopWith(9); }
  int Terminate() { return StopWith(15); }
  // stderr so far.
  std::string Log() const;

 private:
  ConsentdProcess() = default;
  pid_t pid_ = -1;
  std::string address_;
  std::string log_path_;
};

// A Check of `purpose` for a public post of `user`'s created 2023-11-14.
v1::CheckRequest PublicPostCheck(const std::string& user,
                                 const std::string& purpose = "ai_training");

// Sets `user`'s jurisdiction to GB and an adult birth date (1990-05-17), so
// ai_training defaults to allowed (legitimate interest).
v1::UpdateSubjectRequest UkAdult(const std::string& user);

// Records `state` (OBJECTED, CONSENTED or CLEARED) for `user` and `purpose`.
v1::SetPreferenceRequest PreferenceOf(const std::string& user, v1::PreferenceState state,
                                      const std::string& purpose = "ai_training");

}  // namespace consent::testing

#endif  // CONSENT_TESTS_TEST_UTIL_H_
