#!/usr/bin/env bash
# Replication's cost, measured (docs/replication.md, "Measured"): a fresh
# three-node NATS cluster with JetStream on loopback for each run, and
# consentd replicas on fresh copies of the preloaded store.
#
#   bench/replication.sh writes    standalone and replicated writes, in
#                                  alternating pairs: rate, p99, and CPU a
#                                  write of consentd, the NATS servers and
#                                  the client
#   bench/replication.sh checks    Check calls/s with one replica, then two
#                                  (one consent-bench process each, at once)
#   bench/replication.sh failover  writes for 16 s with one replica; 5 s in,
#                                  the stream's leader is SIGKILLed; the
#                                  longest pause between answers, a round
#   bench/replication.sh imports   consentctl import of RECORDS (default
#                                  200,000) new subjects, standalone and
#                                  replicated (two replicas, the import
#                                  sent to one) in alternating pairs:
#                                  records/s and consentd CPU a record
#
# Environment: as bench/common.sh (SUBJECTS, DATA, RUNS: pairs or rounds,
# DURATION), NATS_PORT (first of three client ports, 14222; routes at +2000,
# monitoring at +4000). Results: bench/results/replication-*.jsonl.
set -euo pipefail
mode=${1:?usage: bench/replication.sh writes|checks|failover|imports}
name=replication
default_duration=6s
default_warmup=1s
result_prefix=replication-$mode-
targets="consentd consent-bench"
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
[ "$mode" = failover ] && [ -z "${RUNS:-}" ] && runs=5

nats_port=${NATS_PORT:-14222}
work=$(mktemp -d /tmp/consent-replication-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
urls="nats://127.0.0.1:$nats_port,nats://127.0.0.1:$((nats_port + 1)),nats://127.0.0.1:$((nats_port + 2))"

# A fresh three-node cluster; its pids in nats_pids.
start_nats() {
  stop_nats
  local i routes=""
  for i in 0 1 2; do routes+="nats-route://127.0.0.1:$((nats_port + 2000 + i)),"; done
  for i in 0 1 2; do
    rm -rf "$work/n$i"
    cat >"$work/n$i.conf" <<EOF
server_name: n$i
host: 127.0.0.1
port: $((nats_port + i))
http_port: $((nats_port + 4000 + i))
max_payload: 8388608
jetstream { store_dir: "$work/n$i" }
cluster { name: bench, listen: 127.0.0.1:$((nats_port + 2000 + i)), routes: [${routes%,}] }
EOF
    /usr/sbin/nats-server -c "$work/n$i.conf" >"$work/n$i.log" 2>&1 &
    nats_pids[$i]=$!
  done
  for i in 0 1 2; do
    for _ in $(seq 1 200); do (echo >"/dev/tcp/127.0.0.1/$((nats_port + i))") 2>/dev/null && break; sleep 0.05; done
  done
}
stop_nats() {
  local p
  for p in "${nats_pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${nats_pids[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  nats_pids=()
}
nats_pids=()
nats_cpu() { local s=0 p; for p in "${nats_pids[@]}"; do s=$((s + $(cpu_ticks "$p"))); done; echo $s; }

# Starts consentd $1 (0, 1, ...) on a fresh copy of the store, replicated
# unless $2 is "standalone"; sets target and consentd_pid.
start_consentd() {
  local i=$1 kind=${2:-replicated} args=()
  rm -rf "$work/data$i"
  cp -a "$data" "$work/data$i"
  [ "$kind" = standalone ] || args=(--replication=jetstream "--nats_url=$urls")
  "$root/build/server/consentd" --data_dir="$work/data$i" --listen=127.0.0.1:0 --metrics_listen= \
    --policy="$root/deploy/policy/default.textproto" "${args[@]}" \
    >"$work/c$i.out" 2>"$work/c$i.log" &
  consentd_pid=$!
  pids+=("$consentd_pid")
  await_consentd "$consentd_pid" "$work/c$i.out" "$work/c$i.log"
}

bench_run() {  # target, then consent-bench's arguments; JSON on stdout
  local t=$1; shift
  "$bench" --target="$t" --users="$subjects" --duration="$duration" --warmup="$warmup" "$@" 2>/dev/null
}

case $mode in
  writes)
    for run in $(seq 1 "$runs"); do
      for kind in standalone replicated; do
        [ "$kind" = replicated ] && start_nats
        start_consentd 0 "$kind"
        c0=$(cpu_ticks "$consentd_pid"); n0=0; [ "$kind" = replicated ] && n0=$(nats_cpu)
        json=$(/usr/bin/time -f "%U %S" -o "$work/client.time" \
          "$bench" --target="$target" --users="$subjects" --duration="$duration" --warmup="$warmup" \
          write --concurrency=64 --connections=8 2>/dev/null)
        c1=$(cpu_ticks "$consentd_pid"); n1=0; [ "$kind" = replicated ] && n1=$(nats_cpu)
        kill "$consentd_pid"; wait "$consentd_pid" 2>/dev/null || true
        [ "$kind" = replicated ] && stop_nats
        echo "$json" | /usr/bin/python3 -c '
import json, sys
d = json.loads(sys.stdin.read()); kind, run, c, n, client = sys.argv[1:6]
calls = max(1, d["calls"]); cu, cs = client.split()
d.update(kind=kind, run=int(run), consentd_cpu_us_per_write=int(c) * 1e4 / calls,
         nats_cpu_us_per_write=int(n) * 1e4 / calls,
         client_cpu_us_per_write=(float(cu) + float(cs)) * 1e6 / calls)
print(json.dumps(d))
print("%s run %s: %.0f writes/s, p99 %.1f ms, CPU a write: consentd %.0f us, NATS %.0f us, "
      "client %.0f us" % (kind, run, d["calls_per_s"], d["latency_us"]["p99"] / 1000,
      d["consentd_cpu_us_per_write"], d["nats_cpu_us_per_write"], d["client_cpu_us_per_write"]),
      file=sys.stderr)' "$kind" "$run" $((c1 - c0)) $((n1 - n0)) "$(cat "$work/client.time")" \
          | tee -a "$results" >/dev/null
      done
    done
    ;;
  checks)
    for run in $(seq 1 "$runs"); do
      for replicas in 1 2; do
        start_nats
        targets_now=()
        for i in $(seq 0 $((replicas - 1))); do start_consentd "$i"; targets_now+=("$target"); done
        for t in "${targets_now[@]}"; do bench_run "$t" unary --concurrency=32 --connections=4 >/dev/null; done
        benches=()
        for i in "${!targets_now[@]}"; do
          bench_run "${targets_now[$i]}" unary --concurrency=32 --connections=4 >"$work/check$i.json" &
          benches+=($!)
        done
        for p in "${benches[@]}"; do wait "$p" || true; done
        for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
        for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
        pids=()
        stop_nats
        /usr/bin/python3 - "$replicas" "$run" "$work" <<'PY' | tee -a "$results" >/dev/null
import json, sys
replicas, run, work = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rates = [json.load(open("%s/check%d.json" % (work, i)))["calls_per_s"] for i in range(replicas)]
print(json.dumps({"mode": "checks", "replicas": replicas, "run": run, "calls_per_s": rates,
                  "total_calls_per_s": sum(rates)}))
print("checks, %d replica(s), run %d: %.0f calls/s (%s)" % (
    replicas, run, sum(rates), " + ".join("%.0f" % r for r in rates)), file=sys.stderr)
PY
      done
    done
    ;;
  failover)
    for run in $(seq 1 "$runs"); do
      start_nats
      rm -rf "$work/empty"
      mkdir -p "$work/empty"
      "$root/build/server/consentd" --data_dir="$work/empty/data" --listen=127.0.0.1:0 \
        --metrics_listen= --policy="$root/deploy/policy/default.textproto" \
        --replication=jetstream "--nats_url=$urls" >"$work/f.out" 2>"$work/f.log" &
      consentd_pid=$!
      pids+=("$consentd_pid")
      for _ in $(seq 1 300); do grep -q "listening on" "$work/f.out" && break; sleep 0.1; done
      target=$(sed -n 's/^consentd listening on //p' "$work/f.out")
      "$bench" --target="$target" --users=100000 --duration=16s --warmup=1s \
        write --concurrency=16 --connections=4 >"$work/f.json" 2>/dev/null &
      bench_pid=$!
      sleep 6
      leader=$(curl -s "http://127.0.0.1:$((nats_port + 4000))/jsz?streams=true" | /usr/bin/python3 -c \
        'import json,sys; d=json.load(sys.stdin); print(d["account_details"][0]["stream_detail"][0]["cluster"]["leader"])')
      kill -9 "${nats_pids[${leader#n}]}"
      wait "$bench_pid" || true
      kill "$consentd_pid"; wait "$consentd_pid" 2>/dev/null || true
      pids=()
      stop_nats
      /usr/bin/python3 - "$run" "$leader" "$work/f.json" <<'PY' | tee -a "$results" >/dev/null
import json, sys
run, leader, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
d = json.load(open(path)); d.update(run=run, killed=leader)
print(json.dumps(d))
print("failover run %d: killed %s; longest pause between answers %.0f ms, errors %s" % (
    run, leader, d["longest_gap_ms"], d["errors"]), file=sys.stderr)
PY
    done
    ;;
  imports)
    records=${RECORDS:-200000}
    ctl="$root/build/client/consentctl"
    "$root/scripts/build.sh" consentctl >&2
    for run in $(seq 1 "$runs"); do
      file="$work/import-$run.csv"
      /usr/bin/python3 "$root/bench/import_file.py" "$file" "$records" "$run"
      for kind in standalone replicated; do
        if [ "$kind" = replicated ]; then
          start_nats
          start_consentd 1
        fi
        start_consentd 0 "$kind"
        c0=$(cpu_ticks "$consentd_pid")
        start=$(date +%s.%N)
        "$ctl" --target="$target" import "$file" --import_id="rate-$run-$kind" \
          >"$work/import.out" 2>/dev/null || true
        end=$(date +%s.%N)
        c1=$(cpu_ticks "$consentd_pid")
        for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
        for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
        pids=()
        [ "$kind" = replicated ] && stop_nats
        /usr/bin/python3 - "$kind" "$run" "$records" "$start" "$end" $((c1 - c0)) \
          "$work/import.out" <<'PY' | tee -a "$results" >/dev/null
import json, sys
kind, run, records, start, end, ticks, out = sys.argv[1:8]
records, seconds = int(records), float(end) - float(start)
summary = open(out).read().strip()
d = {"mode": "imports", "kind": kind, "run": int(run), "records": records,
     "seconds": seconds, "records_per_s": records / seconds,
     "consentd_cpu_us_per_record": int(ticks) * 1e4 / records, "consentctl": summary}
print(json.dumps(d))
print("%s import run %s: %.0f records/s, consentd CPU %.1f us a record (%s)" % (
    kind, run, d["records_per_s"], d["consentd_cpu_us_per_record"], summary), file=sys.stderr)
PY
      done
      rm -f "$file"
    done
    ;;
  *) echo "usage: bench/replication.sh writes|checks|failover|imports" >&2; exit 2 ;;
esac
echo "$name: results in $results" >&2
