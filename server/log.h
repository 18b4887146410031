// Minimal line logging to stderr: one line per event, UTC timestamp and
// level first. Thread safe (one write per line).
#ifndef CONSENT_SERVER_LOG_H_
#define CONSENT_SERVER_LOG_H_

#include "absl/strings/string_view.h"

namespace consent {

void LogInfo(absl::string_view message);
void LogWarning(absl::string_view message);
void LogError(absl::string_view message);

}  // namespace consent

#endif  // CONSENT_SERVER_LOG_H_
