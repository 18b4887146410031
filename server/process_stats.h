// The standard process_* metrics, read from /proc (prometheus-cpp has no
// process collector).
#ifndef CONSENT_SERVER_PROCESS_STATS_H_
#define CONSENT_SERVER_PROCESS_STATS_H_

#include <cstdint>

#include "absl/status/statusor.h"

namespace consent {

struct ProcessStats {
  double cpu_seconds = 0;         // user + system CPU time
  int64_t resident_bytes = 0;     // resident set size
  int64_t virtual_bytes = 0;      // virtual memory size
  int64_t open_fds = 0;           // open file descriptors
  int64_t max_fds = 0;            // the soft RLIMIT_NOFILE
  double start_time_seconds = 0;  // since the Unix epoch
  int64_t threads = 0;
};

// Reads this process's figures from /proc/self and /proc/stat.
// kUnavailable (with the file named) when /proc cannot be read.
absl::StatusOr<ProcessStats> ReadProcessStats();

}  // namespace consent

#endif  // CONSENT_SERVER_PROCESS_STATS_H_
