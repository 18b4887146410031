#!/usr/bin/env bash
# Quick start, command 2: the whole test suite, as CI runs it.
#   1. Release build; every test (unit, integration against the real
#      consentd, the Python interop client) through ctest.
#   2. AddressSanitizer + UndefinedBehaviorSanitizer build; every test again
#      (the integration tests then drive a sanitized consentd).
#   3. buf lint of the API and clang-format of the sources.
# Installs missing Debian packages first. Exits non-zero on any failure.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
jobs=$(nproc)
step() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "release build"
"$root/scripts/build.sh"
step "all tests (release)"
(cd "$root/build" && ctest -j"$jobs" --output-on-failure --timeout 300)

step "sanitizer build (ASan + UBSan)"
"$root/scripts/build.sh" --sanitize
step "all tests under ASan + UBSan"
(cd "$root/build-asan" &&
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest -j"$jobs" --output-on-failure --timeout 300)

step "buf lint"
if ! command -v npx >/dev/null 2>&1; then
  echo "test: npx not found; installing Debian's npm"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
fi
(cd "$root/proto" && npx --yes @bufbuild/buf lint)
echo "buf lint: clean"

step "clang-format"
(cd "$root" && git ls-files '*.cc' '*.h' | xargs clang-format --dry-run --Werror)
echo "clang-format: clean"
step "all checks passed"
