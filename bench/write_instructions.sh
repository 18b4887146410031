#!/usr/bin/env bash
# Instructions consentd executes per written item, by valgrind's callgrind:
# a figure the shared machine's noise does not move, for comparing write
# paths (docs/performance.md). For each MODE (consent-bench modes; default
# "write-batch notices"), consentd runs under callgrind on a fresh copy of a
# small preloaded store (SUBJECTS, default 10,000), consent-bench sends
# --batch=BATCH (default 100) items per call for DURATION (default 10s,
# no warm-up), and consentd is stopped; an idle run (start, index load,
# stop) is subtracted, and the rest divided by the items consent-bench
# counted. Calls still in flight when it stops (at most 4 × BATCH items)
# are not counted: about 1.5% at the defaults.
# Environment: SUBJECTS, BATCH, DURATION, MODES, CONSENTD (another binary).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
subjects=${SUBJECTS:-10000}
batch=${BATCH:-100}
duration=${DURATION:-10s}
consentd=${CONSENTD:-$root/build/server/consentd}
command -v valgrind >/dev/null || { echo "write_instructions.sh: needs valgrind" >&2; exit 1; }
"$root/scripts/build.sh" consentd consent-bench >&2
bench="$root/build/bench/consent-bench"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bench" preload --data_dir="$work/seed" --users="$subjects" --objecting=0.1 >/dev/null

# Runs consentd under callgrind with load `mode` ("idle": none); prints
# "<instructions> <items>".
measure() {
  local mode=$1 dir="$work/$1" pid target
  rm -rf "$dir"
  cp -r "$work/seed" "$dir"
  valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$consentd" --data_dir="$dir" \
    --listen=127.0.0.1:0 --metrics_listen= --policy="$root/deploy/policy/default.textproto" \
    >"$dir/out" 2>"$dir/log" &
  pid=$!
  for _ in $(seq 1 1200); do
    grep -q "subject index loaded" "$dir/log" && grep -q "listening on" "$dir/out" && break
    sleep 0.1
  done
  target=$(sed -n 's/^consentd listening on //p' "$dir/out")
  [ -n "$target" ] || { cat "$dir/log" >&2; exit 1; }
  local items=0
  if [ "$mode" != idle ]; then
    items=$("$bench" --target="$target" --users="$subjects" --duration="$duration" --warmup=0s \
      --batch="$batch" --concurrency=4 --connections=1 "$mode" 2>/dev/null |
      sed -n 's/.*"decisions":\([0-9]*\),.*/\1/p')
  fi
  kill -TERM "$pid"
  wait "$pid" || true
  echo "$(sed -n 's/^totals: //p;s/^summary: //p' "$dir/cg.out" | head -1) $items"
}

read -r idle _ < <(measure idle)
echo "| mode | batch | items | instructions per item |"
echo "|---|---|---|---|"
for mode in ${MODES:-write-batch notices}; do
  read -r total items < <(measure "$mode")
  echo "| $mode | $batch | $items | $(((total - idle) / items)) |"
done
