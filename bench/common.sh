# Sourced by the bench/ scripts: settings from the environment, the build,
# and the preloaded store they share. Callers set `name` (for messages),
# `default_duration`, `default_warmup`, `result_prefix` and `targets` first.
# Environment: SUBJECTS (1,000,000), DATA (/tmp/consent-perf-SUBJECTS),
# RUNS (3), DURATION, WARMUP, ONLY (a grep -E pattern over row labels).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
subjects=${SUBJECTS:-1000000}
data=${DATA:-/tmp/consent-perf-$subjects}
runs=${RUNS:-3}
duration=${DURATION:-$default_duration}
warmup=${WARMUP:-$default_warmup}
mkdir -p "$root/bench/results"
results="$root/bench/results/${result_prefix}$(date -u +%Y%m%dT%H%M%SZ).jsonl"

# shellcheck disable=SC2154,SC2086
"$root/scripts/build.sh" $targets >&2
bench="$root/build/bench/consent-bench"

# The store, built once per size (10% of subjects objecting).
if [ ! -f "$data/.preloaded-$subjects" ]; then
  rm -rf "$data"
  echo "$name: preloading $subjects subjects into $data" >&2
  "$bench" preload --data_dir="$data" --users="$subjects" --objecting=0.1 | tee -a "$results" >&2
  touch "$data/.preloaded-$subjects"
fi

# CPU time (user + system) process $1 has used so far, in ticks of 1/100 s.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Whether the row labelled $1 is selected by ONLY.
selected() { [ -z "${ONLY:-}" ] || grep -qE "$ONLY" <<<"$1"; }

# Waits for a consentd started in the background as PID $1, its stdout in
# $2 and stderr in $3: sets `target` from its "listening on" line (exits
# with its log when there is none), then waits for its subject index to
# load, so that rows measure the steady state (consentd logs its settings
# first, subject_index=true or false).
await_consentd() {
  local pid=$1 out=$2 log=$3 i
  for _ in $(seq 1 300); do grep -q "listening on" "$out" && break; sleep 0.1; done
  target=$(sed -n 's/^consentd listening on //p' "$out")
  [ -n "$target" ] || { cat "$log" >&2; exit 1; }
  grep -q "subject_index=true" "$log" || return 0
  for i in $(seq 1 6000); do
    grep -q "subject index" "$log" && break
    kill -0 "$pid" 2>/dev/null || break
    [ $((i % 100)) -eq 0 ] && echo "$name: waiting for the subject index to load ($((i / 10)) s)" >&2
    sleep 0.1
  done
  grep "subject index" "$log" >&2 || echo "$name: no subject index loaded (an older consentd?)" >&2
}
