// What this consentd was built from: consent_build_info's labels.
// Defined in build_info.cc, which CMake writes from build_info.cc.in at
// configure time, and rewrites only when the version or the git revision
// changed, so a new commit recompiles that one file, not the server.
#ifndef CONSENT_SERVER_BUILD_INFO_H_
#define CONSENT_SERVER_BUILD_INFO_H_

namespace consent {

// The project's version (CMake's PROJECT_VERSION).
extern const char kBuildVersion[];
// `git rev-parse --short=12 HEAD` at configure time; "unknown" outside git.
extern const char kBuildRevision[];

}  // namespace consent

#endif  // CONSENT_SERVER_BUILD_INFO_H_
