// Line logging to stderr: one line per event, in a human or a JSON format,
// with a level and key=value fields. Thread safe: each line is one write(2),
// so concurrent lines never interleave.
//
// Personal data: user ids are logged at debug level only (LogDebug), never
// at info and above. Request ids, methods, status codes and revisions are
// not personal and may appear at any level.
#ifndef CONSENT_SERVER_LOG_H_
#define CONSENT_SERVER_LOG_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace consent {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };
enum class LogFormat { kHuman, kJson };

// "debug", "info", "warn", "error" / "human", "json". False if unknown.
bool ParseLogLevel(absl::string_view text, LogLevel* level);
bool ParseLogFormat(absl::string_view text, LogFormat* format);
absl::string_view LogLevelName(LogLevel level);

// Process-wide settings; defaults: info, human. Set them once at start-up,
// before other threads log.
void SetLogLevel(LogLevel level);
void SetLogFormat(LogFormat format);

// Whether a line at `level` would be written; lets callers skip building
// fields for lines that would be dropped.
bool LogEnabled(LogLevel level);

using LogFields = std::vector<std::pair<std::string, std::string>>;

// One formatted line, ending in '\n'.
//   human: 2026-11-27T05:00:00.000Z INFO message key=value key="two words"
//   json:  {"time":"2026-11-27T05:00:00.000Z","level":"info","msg":"message","key":"value"}
std::string FormatLogLine(LogFormat format, absl::Time time, LogLevel level,
                          absl::string_view message, const LogFields& fields);

void Log(LogLevel level, absl::string_view message, const LogFields& fields = {});
inline void LogDebug(absl::string_view message, const LogFields& fields = {}) {
  Log(LogLevel::kDebug, message, fields);
}
inline void LogInfo(absl::string_view message, const LogFields& fields = {}) {
  Log(LogLevel::kInfo, message, fields);
}
inline void LogWarning(absl::string_view message, const LogFields& fields = {}) {
  Log(LogLevel::kWarning, message, fields);
}
inline void LogError(absl::string_view message, const LogFields& fields = {}) {
  Log(LogLevel::kError, message, fields);
}

}  // namespace consent

#endif  // CONSENT_SERVER_LOG_H_
