// A registry on a temporary RocksDB store for the fuzz targets that go
// through validation and decisions: made once per process, with a few
// subjects recorded, removed at exit.
#ifndef CONSENT_TESTS_FUZZ_FUZZ_REGISTRY_H_
#define CONSENT_TESTS_FUZZ_FUZZ_REGISTRY_H_

#include "server/registry.h"

namespace consent::fuzzing {

// The process's registry (FakeClock at 2026-06-01), with subjects "alice"
// (GB adult, objected to ai_training.generative, an excluded post) and
// "bob" (US, consented), and history to page through.
Registry& FuzzRegistry();

}  // namespace consent::fuzzing

#endif  // CONSENT_TESTS_FUZZ_FUZZ_REGISTRY_H_
