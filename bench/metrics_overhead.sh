#!/usr/bin/env bash
# What instrumentation costs: the same consent-bench rows against consentd
# with metrics off (--metrics_listen= : no counters, no histograms, no
# RocksDB statistics) and on (the default set-up), alternating off/on RUNS
# times (default 3) on the store bench/run.sh preloads, while a scraper
# reads /metrics every second as Prometheus would. The order alternates
# (off, on, then on, off, ...) so neither side always follows the other's
# writes and compactions. Prints the median of
# each row and the on/off ratio; JSON results go to bench/results/.
# Environment: SUBJECTS, DATA, RUNS, DURATION, WARMUP, ONLY (as bench/run.sh).
set -euo pipefail

name=metrics_overhead.sh
default_duration=5s
default_warmup=1s
result_prefix=metrics-
targets="consentd consent-bench"
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

rows=(
  "Check, closed loop|unary --concurrency=64 --connections=8"
  "BatchCheck 1,000 items|batch --batch=1000 --concurrency=8 --connections=4"
  "SetPreference, 64 in flight|write --concurrency=64 --connections=8"
)

out=$(mktemp)
server=""
scraper=""
cleanup() {
  [ -n "$scraper" ] && kill "$scraper" 2>/dev/null || true
  [ -n "$server" ] && { kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; }
  rm -f "$out" "$out.log"
}
trap cleanup EXIT

for run in $(seq 1 "$runs"); do
  order="off on"
  [ $((run % 2)) -eq 0 ] && order="on off"
  for metrics in $order; do
    listen=""
    [ "$metrics" = on ] && listen="127.0.0.1:0"
    "$root/build/server/consentd" --data_dir="$data" --listen=127.0.0.1:0 \
      --metrics_listen="$listen" --policy="$root/deploy/policy/default.textproto" \
      >"$out" 2>"$out.log" &
    server=$!
    await_consentd "$server" "$out" "$out.log"
    if [ "$metrics" = on ] && [ "${SCRAPE:-1}" = 1 ]; then
      url=$(grep -o 'http://[^ ]*/metrics' "$out.log")
      # One long-lived process, as a Prometheus server would be: a shell
      # loop forking curl every second cost the shared CPUs more (about 2%)
      # than the scrapes themselves (0.7 ms of consentd's CPU each).
      /usr/bin/python3 -c '
import sys, time, urllib.request
while True:
    time.sleep(1)
    try:
        urllib.request.urlopen(sys.argv[1], timeout=5).read()
    except OSError:
        pass' "$url" &
      scraper=$!
    fi
    for row in "${rows[@]}"; do
      label=${row%%|*}
      selected "$label" || continue
      # shellcheck disable=SC2086
      "$bench" --target="$target" --users="$subjects" --duration="$duration" --warmup="$warmup" \
        --distribution=uniform ${row#*|} 2>/dev/null |
        sed "s|^{|{\"label\":\"$label\",\"metrics\":\"$metrics\",\"run\":$run,|" >>"$results"
      echo "metrics_overhead.sh: run $run, metrics $metrics, $label done" >&2
    done
    if [ -n "$scraper" ]; then kill "$scraper" 2>/dev/null || true; scraper=""; fi
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=""
  done
done

/usr/bin/python3 - "$results" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault(r["label"], {}).setdefault(r["metrics"], []).append(r)
print("| row | metrics off | metrics on | on / off | p99 off µs | p99 on µs |")
print("|---|---|---|---|---|---|")
for label, by in rows.items():
    med = lambda rs, f: statistics.median(f(r) for r in rs)
    off = med(by["off"], lambda r: r["decisions_per_s"])
    on = med(by["on"], lambda r: r["decisions_per_s"])
    print(f"| {label} | {off:,.0f}/s | {on:,.0f}/s | {on / off:.3f} | "
          f"{med(by['off'], lambda r: r['latency_us']['p99']):,.0f} | "
          f"{med(by['on'], lambda r: r['latency_us']['p99']):,.0f} |")
print(f"\n({len(by['on'])} alternating runs per row, median; results in {sys.argv[1]})")
PY
