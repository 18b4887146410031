#!/usr/bin/env bash
# kill -9 under load, N rounds (default 20): 8 concurrent writers against a
# real consentd, SIGKILLed at random moments, restarted and checked each
# time (tests/crash/crash_test.py says what is checked). CI runs 20 rounds
# through ctest (crash_test); docs/reliability.md records a 200-round run.
#
# Usage: scripts/crash-test.sh [N] [--seed S] [--build-dir DIR]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=20
build_dir="$root/build"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seed) extra+=(--seed "$2"); shift ;;
    --build-dir) build_dir="$2"; shift ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) rounds="$1" ;;
  esac
  shift
done
"$root/scripts/install-deps.sh" --with-test-tools
if [ "$build_dir" = "$root/build" ]; then "$root/scripts/build.sh" consentd; fi
exec /usr/bin/python3 "$root/tests/crash/crash_test.py" --rounds "$rounds" "${extra[@]}" \
  --consentd "$build_dir/server/consentd" --policy "$root/deploy/policy/default.textproto" \
  --proto_root "$root/proto" --protoc "$(command -v protoc)" \
  --grpc_python_plugin "$(command -v grpc_python_plugin)"
