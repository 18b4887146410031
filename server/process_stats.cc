#include "server/process_stats.h"

#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace consent {
namespace {

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path);
  if (!in) return false;
  std::stringstream buffer;
  buffer << in.rdbuf();
  *out = buffer.str();
  return true;
}

}  // namespace

absl::StatusOr<ProcessStats> ReadProcessStats() {
  std::string stat;
  if (!ReadFile("/proc/self/stat", &stat)) {
    return absl::UnavailableError("cannot read /proc/self/stat");
  }
  // The command name (field 2) may hold spaces; the fields after it start
  // after its closing parenthesis.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return absl::UnavailableError("/proc/self/stat: bad format");
  std::vector<absl::string_view> f =
      absl::StrSplit(absl::string_view(stat).substr(close + 2), ' ', absl::SkipEmpty());
  // f[0] is field 3 (state): field N is f[N - 3].
  auto field = [&f](int n, int64_t* out) {
    return n - 3 < static_cast<int>(f.size()) && absl::SimpleAtoi(f[n - 3], out);
  };
  int64_t utime, stime, threads, start_ticks, vsize, rss_pages;
  if (!field(14, &utime) || !field(15, &stime) || !field(20, &threads) ||
      !field(22, &start_ticks) || !field(23, &vsize) || !field(24, &rss_pages)) {
    return absl::UnavailableError("/proc/self/stat: bad format");
  }
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  ProcessStats stats;
  stats.cpu_seconds = static_cast<double>(utime + stime) / ticks;
  stats.threads = threads;
  stats.virtual_bytes = vsize;
  stats.resident_bytes = rss_pages * sysconf(_SC_PAGESIZE);

  std::string machine;
  if (!ReadFile("/proc/stat", &machine)) return absl::UnavailableError("cannot read /proc/stat");
  for (absl::string_view line : absl::StrSplit(machine, '\n')) {
    int64_t boot = 0;
    if (absl::ConsumePrefix(&line, "btime ") && absl::SimpleAtoi(line, &boot)) {
      stats.start_time_seconds =
          static_cast<double>(boot) + static_cast<double>(start_ticks) / ticks;
    }
  }

  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++stats.open_fds;
  }
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) stats.max_fds = static_cast<int64_t>(limit.rlim_cur);
  return stats;
}

}  // namespace consent
