#!/usr/bin/env bash
# Bulk import rate (docs/performance.md, "Bulk import"): consentctl import
# of RECORDS subjects (default 1,000,000; each GB, born 1980, 10% objecting
# to ai_training, as preload makes them) from a CSV file, against
# consent-bench preload of as many subjects into an empty directory (which
# writes through the store directly), measured alternately in the same run,
# RUNS times (default 3). BASE (default 0) subjects are preloaded once into
# the registry the imports go into (BASE=10000000: an import into a
# registry already holding 10M subjects); each run imports new users (with
# BASE=0, each into a new, empty registry).
# While each import runs, consent-bench sends unary Checks (8 in flight)
# for its first CHECK_SECONDS (default 3) to show that checks keep being
# answered, and their rate is printed; CHECK_SECONDS=0 sends none.
# Environment: RECORDS, BASE, RUNS, CHECK_SECONDS, WORK (scratch directory,
# default /tmp/consent-import-rate).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
records=${RECORDS:-1000000}
base=${BASE:-0}
runs=${RUNS:-3}
check_seconds=${CHECK_SECONDS:-3}
work=${WORK:-/tmp/consent-import-rate}
"$root/scripts/build.sh" consentd consentctl consent-bench >&2
bench="$root/build/bench/consent-bench"
ctl="$root/build/client/consentctl"
mkdir -p "$work"

# The registry imports go into (a data directory: consentd refuses one
# holding other files, so the marker sits beside it).
registry="$work/base-$base"
if [ ! -f "$registry.preloaded" ]; then
  rm -rf "$registry"
  if [ "$base" -gt 0 ]; then
    echo "import_rate.sh: preloading $base subjects into $registry" >&2
    "$bench" preload --data_dir="$registry" --users="$base" --objecting=0.1 >&2
  fi
  touch "$registry.preloaded"
fi

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
preload_rates=() import_rates=() check_rates=()
for run in $(seq 1 "$runs"); do
  # The preload's rate, into an empty directory.
  rm -rf "$work/preload"
  p=$("$bench" preload --data_dir="$work/preload" --users="$records" --objecting=0.1 2>/dev/null |
      sed -n 's/.*"subjects_per_s":\([0-9.]*\).*/\1/p')
  rm -rf "$work/preload"
  preload_rates+=("$p")

  # The import's: new users each run.
  file="$work/run-$run.csv"
  /usr/bin/python3 "$root/bench/import_file.py" "$file" "$records" "$run"
  [ "$base" -gt 0 ] || rm -rf "$registry"
  out=$(mktemp)
  "$root/build/server/consentd" --data_dir="$registry" --listen=127.0.0.1:0 \
    --metrics_listen=127.0.0.1:0 --policy="$root/deploy/policy/default.textproto" \
    >"$out" 2>"$out.log" &
  server=$!
  until grep -q "listening on" "$out"; do
    kill -0 $server 2>/dev/null || { cat "$out.log" >&2; exit 1; }
    sleep 0.05
  done
  until grep -q "subject index" "$out.log"; do sleep 0.1; done
  target=$(sed -n 's/^consentd listening on //p' "$out")
  checker=""
  if [ "$check_seconds" != 0 ]; then
    "$bench" --target="$target" --users=$((base > records ? base : records)) \
      --duration="${check_seconds}s" --warmup=0s --concurrency=8 --connections=2 unary \
      >"$out.checks" 2>/dev/null &
    checker=$!
  fi
  start=$(date +%s.%N)
  "$ctl" --target="$target" import "$file" --import_id="rate-$run-$(date +%s%N)" \
    >"$out.import" 2>/dev/null
  end=$(date +%s.%N)
  [ -z "$checker" ] || wait "$checker" || true
  kill $server
  wait $server || true
  i=$(awk -v n="$records" -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", n / (b - a) }')
  c=""
  [ -z "$checker" ] || c=$(sed -n 's/.*"decisions_per_s":\([0-9.]*\).*/\1/p' "$out.checks" | head -1)
  import_rates+=("$i") check_rates+=("${c:-0}")
  echo "import_rate.sh: run $run: preload $p subjects/s, import $i records/s ($(cat "$out.import")), checks during the import ${c:-none}/s" >&2
  rm -f "$out" "$out.log" "$out.checks" "$out.import" "$file"
done
p=$(printf '%s\n' "${preload_rates[@]}" | median)
i=$(printf '%s\n' "${import_rates[@]}" | median)
c=$(printf '%s\n' "${check_rates[@]}" | median)
awk -v p="$p" -v i="$i" -v c="$c" -v base="$base" -v n="$records" 'BEGIN {
  printf "import of %d subjects into a registry of %d: median %.0f records/s; preload %.0f subjects/s; ratio %.2f; unary checks during the import %.0f/s\n", n, base, i, p, i / p, c }'
