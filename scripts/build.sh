#!/usr/bin/env bash
# Configures and builds consent-registry with CMake and Ninja (ccache when
# present). Installs missing Debian packages first. Used by scripts/run.sh,
# scripts/test.sh and the Dockerfile, so all build the same way.
#
# Usage: scripts/build.sh [--sanitize | --thread-safety | --tsan] [--build-dir DIR] [--no-tests] [TARGET...]
#   --sanitize   AddressSanitizer + UndefinedBehaviorSanitizer (Debug-ish
#                RelWithDebInfo build in build-asan/ unless --build-dir)
#   --thread-safety  clang with -Wthread-safety as errors (build-tsa/): the
#                lock annotations checked
#   --tsan       clang with ThreadSanitizer (build-tsan/), against abseil
#                rebuilt with TSan (scripts/build-tsan-abseil.sh, cached)
#   --no-tests   do not configure the tests (runtime image builds)
#   TARGET       build only these targets (default: everything)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=""
sanitize=OFF
thread_safety=OFF
tsan=OFF
tests=ON
deps_args=(--with-test-tools)
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --sanitize) sanitize=ON ;;
    --thread-safety) thread_safety=ON ;;
    --tsan) tsan=ON ;;
    --build-dir) build_dir="$2"; shift ;;
    --no-tests) tests=OFF; deps_args=() ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "build.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1") ;;
  esac
  shift
done
if [ -z "$build_dir" ]; then
  if [ "$sanitize" = ON ]; then
    build_dir="$root/build-asan"
  elif [ "$thread_safety" = ON ]; then
    build_dir="$root/build-tsa"
  elif [ "$tsan" = ON ]; then
    build_dir="$root/build-tsan"
  else
    build_dir="$root/build"
  fi
fi
compiler=()
if [ "$thread_safety" = ON ] || [ "$tsan" = ON ]; then
  deps_args+=(--with-clang)
  compiler=(-DCMAKE_CXX_COMPILER=clang++)
fi
build_type=Release
if [ "$sanitize" = ON ] || [ "$tsan" = ON ]; then build_type=RelWithDebInfo; fi

"$root/scripts/install-deps.sh" "${deps_args[@]}"
tsan_abseil=""
if [ "$tsan" = ON ]; then tsan_abseil=$("$root/scripts/build-tsan-abseil.sh"); fi

echo "build: configuring $build_dir ($build_type, ASan+UBSan $sanitize, TSan $tsan)"
cmake -S "$root" -B "$build_dir" -G Ninja "${compiler[@]}" \
  -DCMAKE_BUILD_TYPE="$build_type" \
  -DCONSENT_SANITIZE="$sanitize" \
  -DCONSENT_THREAD_SAFETY="$thread_safety" \
  -DCONSENT_TSAN="$tsan" -DCONSENT_TSAN_ABSEIL_LIBDIR="$tsan_abseil" \
  -DCONSENT_BUILD_TESTS="$tests" > "$build_dir.configure.log" 2>&1 || {
  cat "$build_dir.configure.log" >&2; exit 1; }

echo "build: compiling ${targets[*]:-everything} (progress below)"
if [ ${#targets[@]} -gt 0 ]; then
  cmake --build "$build_dir" --target "${targets[@]}"
else
  cmake --build "$build_dir"
fi
