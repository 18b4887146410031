#!/usr/bin/env bash
# Offline decisions (docs/performance.md, "Offline decisions"): for each
# size in SIZES (default "1000000 10000000"), bench/offline_bench writes a
# signed snapshot of that many subjects (as consent-bench preload makes
# them; kept in WORK for later runs), prints its size, load time and
# resident memory, and measures CheckMany on batches of 1,000 and 10,000
# beside the lookup alone and the rules alone (Google Benchmark, RUNS
# repetitions, default 3: medians); then bench/offline_python_bench.py
# measures check_many from one Python process on the same file.
# Environment: SIZES, RUNS, WORK (default /tmp/consent-offline-bench).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sizes=${SIZES:-"1000000 10000000"}
runs=${RUNS:-3}
work=${WORK:-/tmp/consent-offline-bench}
"$root/scripts/build.sh" offline_bench consent_offline_py >&2
# offline_bench names its files by the format version it writes.
format=$(sed -n 's/.*kFormatVersion = \([0-9]*\);/\1/p' "$root/core/snapshot_format.h")
venv="$work/venv"
CONSENT_OFFLINE_MODULE=$(ls "$root"/build/client/_offline*.so) \
  "$root/client/python/install.sh" "$venv" >&2
for size in $sizes; do
  echo "== $size subjects"
  OFFLINE_BENCH_SUBJECTS=$size OFFLINE_BENCH_DIR=$work "$root/build/bench/offline_bench" \
    --benchmark_repetitions="$runs" --benchmark_report_aggregates_only=true \
    --benchmark_min_time=1 2>&1 | grep -E "offline_bench:|_median|_mean"
  "$venv/bin/python" "$root/bench/offline_python_bench.py" \
    "$work/subjects-$size-v$format.snap" \
    "$work/sign.pub" "$runs"
done
