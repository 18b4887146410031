#!/usr/bin/env bash
# Quick start, command 2: the whole test suite, as CI runs it.
#   1. Release build; every test (unit, integration against the real
#      consentd, the Python interop client, the Python package's tests and
#      examples) through ctest.
#   2. AddressSanitizer + UndefinedBehaviorSanitizer build; every test again
#      (the integration tests then drive a sanitized consentd).
#   3. clang with -Wthread-safety as errors: the lock annotations checked.
#   4. ThreadSanitizer build (abseil rebuilt with TSan, cached): the store,
#      history, stream, integration and failure tests and the TSan canaries;
#      fails on any report, consentd's included (build-tsan/tsan-reports/).
#   5. The libFuzzer targets of tests/fuzz, 60 s each (scripts/fuzz.sh).
#   6. buf lint of the API and clang-format of the sources.
#   7. Deployment: the image built with podman and run
#      (scripts/container-test.sh), the local stack brought up
#      (scripts/stack-test.sh), the Kubernetes manifests rendered and
#      schema-checked (scripts/kubernetes-test.sh), the systemd unit
#      verified (scripts/systemd-test.sh).
# Installs missing Debian packages first. Exits non-zero on any failure.
#
# scripts/test.sh --quick: the release build, the unit tests and
# clang-format only (a minute or two once built), for iterating.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
jobs=$(nproc)
quick=false
if [ "${1:-}" = "--quick" ]; then quick=true; fi
step() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
format() {
  step "clang-format"
  (cd "$root" && git ls-files '*.cc' '*.h' | xargs clang-format --dry-run --Werror)
  echo "clang-format: clean"
}

step "release build"
"$root/scripts/build.sh"
if [ "$quick" = true ]; then
  step "unit tests (release; --quick)"
  (cd "$root/build" && ctest -j"$jobs" -L unit --output-on-failure --timeout 300)
  format
  step "quick checks passed (the full suite: scripts/test.sh)"
  exit 0
fi
step "all tests (release)"
(cd "$root/build" && ctest -j"$jobs" --output-on-failure --timeout 600)

step "sanitizer build (ASan + UBSan)"
"$root/scripts/build.sh" --sanitize
step "all tests under ASan + UBSan"
(cd "$root/build-asan" &&
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest -j"$jobs" --output-on-failure --timeout 600)

step "thread-safety analysis (clang -Wthread-safety, as errors)"
"$root/scripts/build.sh" --thread-safety --no-tests consentd consentctl consent-bench
echo "thread-safety analysis: clean"

step "ThreadSanitizer build (clang; abseil rebuilt with TSan)"
"$root/scripts/build.sh" --tsan tsan_tests
step "store, history, stream and integration tests under ThreadSanitizer"
reports="$root/build-tsan/tsan-reports"
rm -rf "$reports" && mkdir -p "$reports"
(cd "$root/build-tsan" && ctest -j"$jobs" -L tsan --output-on-failure --timeout 600)
if [ -n "$(ls -A "$reports" 2>/dev/null)" ]; then
  echo "ThreadSanitizer reported (files under $reports):" >&2
  cat "$reports"/* >&2
  exit 1
fi
echo "ThreadSanitizer: no report"

step "fuzzing: each libFuzzer target for 60 s under ASan + UBSan"
"$root/scripts/fuzz.sh" 60

step "buf lint"
if ! command -v npx >/dev/null 2>&1; then
  echo "test: npx not found; installing Debian's npm"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
fi
(cd "$root/proto" && npx --yes @bufbuild/buf lint)
echo "buf lint: clean"

format

step "deployment: Kubernetes manifests and the systemd unit"
"$root/scripts/kubernetes-test.sh"
"$root/scripts/systemd-test.sh"
step "deployment: the container image, built and run"
"$root/scripts/container-test.sh"
step "deployment: the local stack (podman-compose)"
"$root/scripts/stack-test.sh"

step "all checks passed"
