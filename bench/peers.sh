# Sourced by bench/run.sh: the peers a user would pick instead of
# consentd, measured in the same invocation on the same machine, each
# writing result lines in consent-bench's JSON shape to "$results".
#   - Redis (Debian's redis-server, appendfsync always): a deny set of the
#     same size as the preloaded objections, probed with SISMEMBER and
#     SMISMEMBER and written with SADD, by redis-benchmark;
#   - h2load (Debian's nghttp2-client): an outside HTTP/2 client replaying
#     one encoded Check (consent-bench check-request) at a target.
# Needs: root, subjects, duration, warmup, runs, results, name and
# selected (bench/common.sh), and for h2load_row check_frame (run.sh).

# Seconds in a duration such as "10s", "500ms" or "2m".
seconds_of() {
  /usr/bin/python3 - "$1" <<'PY'
import re, sys
m = re.fullmatch(r"([0-9.]+)(ms|s|m)?", sys.argv[1])
if not m:
    sys.exit(f"not a duration: {sys.argv[1]}")
value = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[m.group(2)]
print(max(1, round(value)))
PY
}

free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts redis-server on a free loopback port with every write synced
# before its answer (appendonly, appendfsync always; no snapshots), in a
# fresh directory; sets redis_port, redis_pid and redis_dir.
start_redis() {
  redis_dir=$(mktemp -d)
  redis_port=$(free_port)
  redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$redis_dir" --save '' \
    --appendonly yes --appendfsync always --daemonize no --logfile "$redis_dir/redis.log" &
  redis_pid=$!
  for _ in $(seq 1 100); do
    [ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ] && return 0
    sleep 0.1
  done
  echo "$name: redis-server did not start:" >&2
  cat "$redis_dir/redis.log" >&2
  exit 1
}

stop_redis() {
  [ -n "${redis_pid:-}" ] || return 0
  kill "$redis_pid" 2>/dev/null || true
  wait "$redis_pid" 2>/dev/null || true
  rm -rf "$redis_dir"
  redis_pid=
}

# The deny set "deny": the subjects consent-bench preload made objecting
# (the same rule, 10%), under the names redis-benchmark's __rand_int__
# produces (user-<12 digits>), so probes over 0..subjects-1 hit as often.
load_deny_set() {
  /usr/bin/python3 - "$subjects" <<'PY' | redis-cli -p "$redis_port" --pipe >&2
import math, sys
users, objecting = int(sys.argv[1]), 0.1
members = [f"user-{n:012d}" for n in range(users)
           if math.floor((n + 1) * objecting) > math.floor(n * objecting)]
out = sys.stdout.buffer
for i in range(0, len(members), 1000):
    args = [b"SADD", b"deny"] + [m.encode() for m in members[i:i + 1000]]
    out.write(b"*%d\r\n" % len(args))
    for a in args:
        out.write(b"$%d\r\n%s\r\n" % (len(a), a))
PY
  echo "$name: redis deny set: $(redis-cli -p "$redis_port" scard deny) members" >&2
}

# redis_row LABEL CLIENTS ITEMS COMMAND...: RUNS runs of redis-benchmark
# with CLIENTS connections, each sending COMMAND (__rand_int__ drawn from
# 0..subjects-1 per occurrence) and waiting for its answer; ITEMS answers
# per call. The request count is sized for about DURATION from a short
# first run.
redis_row() {
  local label=$1 clients=$2 items=$3 run csv rps requests
  shift 3
  selected "$label" || return 0
  # redis-benchmark stops after a request count, not a time: a short run
  # gives the rate, a run of about 2 s warms up, and each measured run is
  # sized for DURATION.
  csv=$(redis-benchmark -p "$redis_port" -c "$clients" -n "$((clients * 20))" -r "$subjects" \
    --csv "$@")
  rps=$(tail -1 <<<"$csv" | cut -d, -f2 | tr -d '"')
  requests=$(/usr/bin/python3 -c "print(max($clients * 20, int($rps * 2)))")
  redis-benchmark -p "$redis_port" -c "$clients" -n "$requests" -r "$subjects" --csv "$@" \
    >/dev/null
  requests=$(/usr/bin/python3 -c "print(max($clients * 20, int($rps * $(seconds_of "$duration"))))")
  for run in $(seq 1 "$runs"); do
    redis-benchmark -p "$redis_port" -c "$clients" -n "$requests" -r "$subjects" --csv "$@" |
      /usr/bin/python3 "$root/bench/peer_result.py" redis "$label" "$run" "$items" "$clients" \
        >>"$results"
    echo "$name: $label, run $run done" >&2
  done
}

# The Redis rows: SISMEMBER beside unary Check, SMISMEMBER of 1,000 and
# 10,000 beside BatchCheck of as many, SADD (synced) beside SetPreference.
redis_rows() {
  command -v redis-server >/dev/null || { echo "$name: no redis-server; Redis rows skipped" >&2; return 0; }
  local any=false label
  for label in "Redis SISMEMBER, 64 clients" "Redis SMISMEMBER 1,000, 8 clients" \
    "Redis SMISMEMBER 10,000, 8 clients" "Redis SADD, appendfsync always, 64 clients"; do
    selected "$label" && any=true
  done
  [ "$any" = true ] || return 0
  start_redis  # stopped at the end, or by run.sh's exit trap
  load_deny_set
  local members1000 members10000
  members1000=$(printf 'user-__rand_int__ %.0s' $(seq 1 1000))
  members10000=$(printf 'user-__rand_int__ %.0s' $(seq 1 10000))
  redis_row "Redis SISMEMBER, 64 clients" 64 1 SISMEMBER deny user-__rand_int__
  # shellcheck disable=SC2086
  redis_row "Redis SMISMEMBER 1,000, 8 clients" 8 1000 SMISMEMBER deny $members1000
  # shellcheck disable=SC2086
  redis_row "Redis SMISMEMBER 10,000, 8 clients" 8 10000 SMISMEMBER deny $members10000
  redis_row "Redis SADD, appendfsync always, 64 clients" 64 1 SADD deny user-__rand_int__
  stop_redis
}

# h2load_row LABEL TARGET: RUNS runs of h2load posting one encoded Check to
# TARGET's Check method over 8 connections of 8 streams (64 in flight,
# as the consent-bench Check rows), one client thread. The request is
# first sent once with curl, which must see grpc-status 0: h2load counts
# HTTP answers, and a gRPC error is an HTTP 200.
h2load_row() {
  local label=$1 target=$2 run url
  selected "$label" || return 0
  command -v h2load >/dev/null || { echo "$name: no h2load; $label skipped" >&2; return 0; }
  url="http://$target/consent.v1.ConsentRegistry/Check"
  if ! curl -s --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' \
    --data-binary @"$check_frame" -o /dev/null -D - "$url" | tr -d '\r' | grep -x 'grpc-status: 0' >/dev/null; then
    echo "$name: $label: the replayed Check was not answered with grpc-status 0" >&2
    exit 1
  fi
  for run in $(seq 1 "$runs"); do
    h2load -D "$(seconds_of "$duration")" --warm-up-time="$(seconds_of "$warmup")" \
      -c 8 -m 8 -t 1 -d "$check_frame" -H 'content-type: application/grpc' -H 'te: trailers' \
      "$url" | /usr/bin/python3 "$root/bench/peer_result.py" h2load "$label" "$run" >>"$results"
    echo "$name: $label, run $run done" >&2
  done
}
