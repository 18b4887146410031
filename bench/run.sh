#!/usr/bin/env bash
# Reproduces the table of docs/performance.md on this machine:
#   1. builds consentd and consent-bench (scripts/build.sh);
#   2. preloads SUBJECTS subjects (default 1,000,000; 10% objecting) into
#      DATA (default /tmp/consent-perf-<SUBJECTS>), once;
#   3. starts consentd on it (loopback, free port) and runs every
#      configuration RUNS times (default 3) for DURATION (default 10s) each,
#      uniform and zipf;
#      writes are also sent to an empty-handler server that answers each
#      from another thread (--answer_writes=deferred), the ceiling of any
#      write answered after a disk sync;
#   4. runs the peers in the same invocation (bench/peers.sh): h2load
#      replaying one encoded Check against consentd and against the
#      empty-handler server, and Redis (appendfsync always) with a deny
#      set of the same users: SISMEMBER, SMISMEMBER of 1,000 and 10,000,
#      SADD;
#   5. prints the median of the runs for each row as a Markdown table, with
#      each row's ratio to its ceiling (the same calls answered by
#      consent-empty-server, which does no work) and to its peer, and
#      keeps every JSON result in bench/results/<date>.jsonl.
# Environment: SUBJECTS, DATA, RUNS, DURATION, WARMUP; CONSENTD_ARGS (extra
# consentd flags, for experiments); CONSENTD (another consentd binary, e.g.
# a copy of an earlier build, for before/after runs); EMPTY_ARGS (extra
# consent-empty-server flags, e.g. --api=cq); ONLY (a grep -E pattern)
# runs just the rows whose label matches.
set -euo pipefail

name=run.sh
default_duration=10s
default_warmup=2s
result_prefix=
targets="consentd consent-bench consent-empty-server"
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
"$root/scripts/install-deps.sh" --with-bench-peers >&2

# shellcheck source=bench/peers.sh
source "$root/bench/peers.sh"

# What this run starts and makes, stopped and removed when it exits.
pids=()
files=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  stop_redis
  rm -f "${files[@]}"
}
trap cleanup EXIT

out=$(mktemp)
files+=("$out" "$out.log")
"${CONSENTD:-$root/build/server/consentd}" --data_dir="$data" --listen=127.0.0.1:0 --metrics_listen= \
  --policy="$root/deploy/policy/default.textproto" ${CONSENTD_ARGS:-} >"$out" 2>"$out.log" &
server=$!
pids+=("$server")
await_consentd "$server" "$out" "$out.log"
echo "run.sh: consentd on $target, $runs runs of $duration per row" >&2

# Starts consent-empty-server with flags "$@" and EMPTY_ARGS; sets
# started_target to its address.
start_empty_server() {
  local log
  log=$(mktemp)
  files+=("$log")
  # shellcheck disable=SC2086
  "$root/build/bench/consent-empty-server" --listen=127.0.0.1:0 "$@" ${EMPTY_ARGS:-} >"$log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
  started_target=$(sed -n 's/^consentd listening on //p' "$log")
  [ -n "$started_target" ] || { cat "$log" >&2; exit 1; }
}
# The empty-handler server: the same gRPC set-up, checks doing nothing.
start_empty_server
empty_target=$started_target
# The same, each write answered from another thread, as a synced write
# must be.
start_empty_server --answer_writes=deferred
deferred_target=$started_target

# The Check the h2load rows replay.
check_frame=$(mktemp)
files+=("$check_frame")
"$bench" --users="$subjects" check-request >"$check_frame"

# The Python package, installed once per run (client/python/install.sh).
python_venv="$root/build/bench/python-venv"
rm -rf "$python_venv"

# label | consent-bench arguments (or "python" and bench/python_bench.py's)
rows=(
  "Check, closed loop, empty handler|unary --concurrency=64 --connections=8 --target=EMPTY"
  "Check, closed loop|unary --concurrency=64 --connections=8"
  "Check at 10,000/s|unary --rate=10000 --concurrency=128 --connections=8"
  "BatchCheck 1,000 items, empty handler|batch --batch=1000 --concurrency=8 --connections=4 --target=EMPTY"
  "BatchCheck 1,000 items|batch --batch=1000 --concurrency=8 --connections=4"
  "BatchCheck 1,000 at 1,500/s, empty handler|batch --batch=1000 --rate=1500 --concurrency=64 --connections=4 --target=EMPTY"
  "BatchCheck 1,000 at 1,500/s|batch --batch=1000 --rate=1500 --concurrency=64 --connections=4"
  "StreamCheck 1,000 per message, empty handler|stream --batch=1000 --concurrency=8 --connections=4 --target=EMPTY"
  "StreamCheck 1,000 per message|stream --batch=1000 --concurrency=8 --connections=4"
  "StreamCheck 1,000 per message, one stream|stream --batch=1000 --concurrency=1 --connections=1"
  "BatchCheck 10,000 items, empty handler|batch --batch=10000 --concurrency=8 --connections=4 --target=EMPTY"
  "BatchCheck 10,000 items|batch --batch=10000 --concurrency=8 --connections=4"
  "StreamCheck 10,000 per message, empty handler|stream --batch=10000 --concurrency=8 --connections=4 --target=EMPTY"
  "StreamCheck 10,000 per message|stream --batch=10000 --concurrency=8 --connections=4"
  "Python check_many, 1,000 per message|python --mode=check_many --batch=1000"
  "Python filter_allowed, 1,000 per message|python --mode=filter_allowed --batch=1000"
  "Python encoding alone, no server|python --mode=encode --batch=1000"
  "SetPreference, 64 in flight, empty handler|write --concurrency=64 --connections=8 --target=EMPTY"
  "SetPreference, 64 in flight, empty handler answering from another thread|write --concurrency=64 --connections=8 --target=DEFERRED"
  "SetPreference, 64 in flight|write --concurrency=64 --connections=8"
  "BatchSetPreferences of 100, empty handler|write-batch --batch=100 --concurrency=16 --connections=4 --target=EMPTY"
  "BatchSetPreferences of 100|write-batch --batch=100 --concurrency=16 --connections=4"
  "BatchRecordNotices of 100|notices --batch=100 --concurrency=16 --connections=4"
  "BatchSetPreferences of 1,000|write-batch --batch=1000 --concurrency=16 --connections=4"
  "BatchRecordNotices of 1,000|notices --batch=1000 --concurrency=16 --connections=4"
  "mixed 95/5|mixed --read_ratio=0.95 --concurrency=64 --connections=8"
)
for row in "${rows[@]}"; do
  label=${row%%|*}
  args=${row#*|}
  selected "$label" || continue
  for distribution in uniform zipf; do
    for run in $(seq 1 "$runs"); do
      # shellcheck disable=SC2086
      row_target=$target
      [[ $args == *--target=EMPTY* ]] && row_target=$empty_target
      [[ $args == *--target=DEFERRED* ]] && row_target=$deferred_target
      row_args=${args/--target=EMPTY/}
      row_args=${row_args/--target=DEFERRED/}
      if [[ $args == python* ]]; then
        # One Python process through the consent_registry package.
        [ -x "$python_venv/bin/python" ] || "$root/client/python/install.sh" "$python_venv" >&2
        # shellcheck disable=SC2086
        "$python_venv/bin/python" "$root/bench/python_bench.py" --target="$row_target" \
          --users="$subjects" --duration="$duration" --warmup="$warmup" \
          --distribution="$distribution" ${args#python} 2>/dev/null |
          sed "s|^{|{\"label\":\"$label\",\"run\":$run,|" >>"$results" || true
      else
        # shellcheck disable=SC2086
        "$bench" --target="$row_target" --users="$subjects" --duration="$duration" \
          --warmup="$warmup" --distribution="$distribution" $row_args 2>/dev/null |
          sed "s|^{|{\"label\":\"$label\",\"run\":$run,|" >>"$results" || true
      fi
      echo "run.sh: $label, $distribution, run $run done" >&2
    done
  done
done

# The peers.
h2load_row "Check (h2load), empty handler" "$empty_target"
h2load_row "Check (h2load)" "$target"
redis_rows

/usr/bin/python3 "$root/bench/table.py" "$results"
