#!/usr/bin/env bash
# The bulk notice path against the bulk preference path: BatchRecordNotices
# and BatchSetPreferences of the same batch size, alternating (A B B A ...)
# against one consentd, RUNS times (default 3) each, for each batch size
# (BATCHES, default "100 1000"), uniform users. Besides items per second,
# each run records consentd's CPU time per item (user + system, from
# /proc), which the shared machine's noise moves less. Prints the medians
# and the ratios notices / preferences; JSON results go to bench/results/.
# Environment: SUBJECTS, DATA, RUNS, DURATION, WARMUP (as bench/run.sh),
# BATCHES.
set -euo pipefail

name=notices_rate.sh
default_duration=10s
default_warmup=2s
result_prefix=notices-
targets="consentd consent-bench"
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

out=$(mktemp)
"$root/build/server/consentd" --data_dir="$data" --listen=127.0.0.1:0 --metrics_listen= \
  --policy="$root/deploy/policy/default.textproto" >"$out" 2>"$out.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$out" "$out.log"' EXIT
await_consentd "$server" "$out" "$out.log"

for batch in ${BATCHES:-100 1000}; do
  for run in $(seq 1 "$runs"); do
    order="write-batch notices"
    [ $((run % 2)) -eq 0 ] && order="notices write-batch"
    for mode in $order; do
      before=$(cpu_ticks "$server")
      line=$("$bench" --target="$target" --users="$subjects" --duration="$duration" \
        --warmup="$warmup" --distribution=uniform --batch="$batch" --concurrency=16 \
        --connections=4 "$mode" 2>/dev/null)
      after=$(cpu_ticks "$server")
      echo "$line" | sed "s|^{|{\"run\":$run,\"server_cpu_ticks\":$((after - before)),|" >>"$results"
      echo "$name: batch $batch, run $run, $mode done" >&2
    done
  done
done

/usr/bin/python3 - "$results" "$duration" "$warmup" <<'PY'
import json, re, statistics, sys

def seconds(text):
    return float(re.sub(r"s$", "", text))

elapsed = seconds(sys.argv[2]) + seconds(sys.argv[3])
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "server_cpu_ticks" in r:
        rows.setdefault((r["batch"], r["mode"]), []).append(r)

def med(rs, f):
    return statistics.median(f(r) for r in rs)

def cpu_us(r):
    # Ticks (1/100 s) over the warm-up and the measured part, per item of both.
    return r["server_cpu_ticks"] * 1e4 / (r["decisions_per_s"] * elapsed)

print("| batch | BatchSetPreferences items/s | BatchRecordNotices items/s | ratio "
      "| CPU µs per preference | CPU µs per notice | ratio |")
print("|---|---|---|---|---|---|---|")
for batch in sorted({b for b, _ in rows}):
    p, n = rows.get((batch, "write-batch"), []), rows.get((batch, "notices"), [])
    if not p or not n:
        continue
    rate = lambda rs: med(rs, lambda r: r["decisions_per_s"])
    cpu = lambda rs: med(rs, cpu_us)
    print(f"| {batch:,} | {rate(p):,.0f} | {rate(n):,.0f} | {rate(n) / rate(p):.2f} "
          f"| {cpu(p):.2f} | {cpu(n):.2f} | {cpu(n) / cpu(p):.2f} |")
runs = max((len(rs) for rs in rows.values()), default=0)
print(f"\n({runs} runs per cell, median; results in {sys.argv[1]})")
PY
