#!/usr/bin/env bash
# Start-up and memory at scale (docs/performance.md, targets for 10,000,000
# subjects): preloads SUBJECTS (default 10,000,000) once, starts consentd on
# it with metrics, prints the time from process start to SERVING (the
# address line), when the subject index finished loading and the resident
# memory then, runs BatchCheck of 1,000 (8 in flight, uniform) for DURATION
# (default 20s) and prints the peak resident memory (VmHWM).
# Environment: as bench/run.sh (SUBJECTS, DATA, DURATION, WARMUP,
# CONSENTD, CONSENTD_ARGS).
set -euo pipefail

export SUBJECTS=${SUBJECTS:-10000000}
name=startup.sh
default_duration=20s
default_warmup=2s
result_prefix=startup-
targets="consentd consent-bench"
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

out=$(mktemp)
start=$(date +%s.%N)
# shellcheck disable=SC2086
"${CONSENTD:-$root/build/server/consentd}" --data_dir="$data" --listen=127.0.0.1:0 \
  --metrics_listen=127.0.0.1:0 --policy="$root/deploy/policy/default.textproto" \
  ${CONSENTD_ARGS:-} >"$out" 2>"$out.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$out" "$out.log"' EXIT
until grep -q "listening on" "$out"; do
  kill -0 $server 2>/dev/null || { cat "$out.log" >&2; exit 1; }
  sleep 0.005
done
serving=$(date +%s.%N)
rss() { grep -E "^(VmRSS|VmHWM)" /proc/$server/status | tr -s ' \t\n' ' '; }
since() { awk -v a="$1" -v b="$start" 'BEGIN { printf "%.3f", a - b }'; }
echo "startup.sh: SERVING after $(since "$serving") s; $(rss)"
if grep -q "subject_index=true" "$out.log"; then
  until grep -q "subject index" "$out.log"; do sleep 0.1; done
  echo "startup.sh: $(since "$(date +%s.%N)") s after start: $(grep "subject index" "$out.log" | sed 's/^[^ ]* //'); $(rss)"
fi
target=$(sed -n 's/^consentd listening on //p' "$out")
"$bench" --target="$target" --users="$subjects" --duration="$duration" --warmup="$warmup" \
  --distribution=uniform --batch=1000 --concurrency=8 --connections=4 batch 2>/dev/null |
  tee -a "$results"
echo "startup.sh: after the batch benchmark: $(rss)"
