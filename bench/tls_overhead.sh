#!/usr/bin/env bash
# What TLS and authorization cost: the same consent-bench rows against
# consentd on plaintext, on TLS without authentication, on TLS with an auth
# file and a bearer token, and on TLS with an auth file and a client
# certificate (mTLS, certificates required), RUNS times (default 3), on the
# store bench/run.sh preloads. The order of the four rotates from run to run
# so none always follows another's writes. Certificates are made with the
# openssl command line in a temporary directory. Besides calls per second,
# each row records consentd's CPU time per call (user + system, from
# /proc), which the shared machine's noise moves less. Prints the median
# of each row and the ratios TLS / plaintext (TLS's own cost) and token /
# TLS, certificate / TLS (authorization's cost); JSON results go to
# bench/results/.
# Environment: SUBJECTS, DATA, RUNS, DURATION, WARMUP, ONLY (as bench/run.sh).
set -euo pipefail

name=tls_overhead.sh
default_duration=5s
default_warmup=1s
result_prefix=tls-
targets="consentd consent-bench"
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

rows=(
  "Check, closed loop|unary --concurrency=64 --connections=8"
  "BatchCheck 1,000 items|batch --batch=1000 --concurrency=8 --connections=4"
  "SetPreference, 64 in flight|write --concurrency=64 --connections=8"
)
configs=(plaintext tls token certificate)

certs=$(mktemp -d)
out=$(mktemp)
server=""
cleanup() {
  [ -n "$server" ] && { kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; }
  rm -rf "$certs" "$out" "$out.log"
}
trap cleanup EXIT

ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -keyout "$certs/ca.key" -out "$certs/ca.pem" -days 2 \
  -subj /CN=bench-ca 2>/dev/null
for cert in "server|subjectAltName=DNS:localhost|serverAuth" \
  "bench|subjectAltName=URI:spiffe://example.org/bench|clientAuth"; do
  IFS='|' read -r cn san usage <<<"$cert"
  openssl req "${ec[@]}" -keyout "$certs/$cn.key" -out "$certs/$cn.csr" -subj "/CN=$cn" 2>/dev/null
  printf '%s\nextendedKeyUsage=%s\n' "$san" "$usage" >"$certs/$cn.ext"
  openssl x509 -req -in "$certs/$cn.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" \
    -CAcreateserial -out "$certs/$cn.pem" -days 2 -extfile "$certs/$cn.ext" 2>/dev/null
done
openssl rand -hex 32 | tr -d '\n' >"$certs/token"
cat >"$certs/auth.textproto" <<EOF
callers { name: "bench" roles: [ROLE_CHECKER, ROLE_WRITER]
          token_sha256: "$(sha256sum <"$certs/token" | cut -c1-64)"
          certificate_identities: "spiffe://example.org/bench" }
EOF

server_tls=(--tls_cert_file="$certs/server.pem" --tls_key_file="$certs/server.key")
client_tls=(--tls_ca_file="$certs/ca.pem" --tls_server_name=localhost)

for run in $(seq 1 "$runs"); do
  for i in 0 1 2 3; do
    config=${configs[$(((i + run - 1) % 4))]}
    server_args=()
    client_args=()
    case $config in
      tls)
        server_args=("${server_tls[@]}")
        client_args=("${client_tls[@]}")
        ;;
      token)
        server_args=("${server_tls[@]}" --auth_file="$certs/auth.textproto")
        client_args=("${client_tls[@]}" --token_file="$certs/token")
        ;;
      certificate)
        server_args=("${server_tls[@]}" --auth_file="$certs/auth.textproto"
          --tls_client_ca_file="$certs/ca.pem" --tls_client_auth=require)
        client_args=("${client_tls[@]}" --tls_cert_file="$certs/bench.pem"
          --tls_key_file="$certs/bench.key")
        ;;
    esac
    # Writes are logged at info, one line each: to a file, as in production.
    "$root/build/server/consentd" --data_dir="$data" --listen=127.0.0.1:0 --metrics_listen= \
      --policy="$root/deploy/policy/default.textproto" ${server_args[@]+"${server_args[@]}"} \
      >"$out" 2>"$out.log" &
    server=$!
    await_consentd "$server" "$out" "$out.log"
    for row in "${rows[@]}"; do
      label=${row%%|*}
      selected "$label" || continue
      before=$(cpu_ticks "$server")
      # shellcheck disable=SC2086
      line=$("$bench" --target="$target" --users="$subjects" --duration="$duration" \
        --warmup="$warmup" --distribution=uniform ${client_args[@]+"${client_args[@]}"} \
        ${row#*|} 2>/dev/null)
      after=$(cpu_ticks "$server")
      # CPU ticks (1/100 s) over the warm-up and the measured part: per call
      # of both, from the calls per second of the measured part.
      echo "$line" | sed "s|^{|{\"label\":\"$label\",\"config\":\"$config\",\"run\":$run,\"server_cpu_ticks\":$((after - before)),|" >>"$results"
      echo "tls_overhead.sh: run $run, $config, $label done" >&2
    done
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=""
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
    if "config" in r:
        rows.setdefault(r["label"], {}).setdefault(r["config"], []).append(r)
configs = ["plaintext", "tls", "token", "certificate"]
print("| row | " + " | ".join(configs) + " | TLS / plain | token / TLS | cert / TLS |")
print("|---|" + "---|" * (len(configs) + 3))
for label, by in rows.items():
    rate = {c: statistics.median(r["calls_per_s"] for r in by[c]) for c in configs}
    # consentd's CPU per call, µs: ticks over warm-up + run, calls at the
    # measured rate over the same time.
    cpu = {c: statistics.median(r["server_cpu_ticks"] * 1e4 / (r["calls_per_s"] * elapsed)
                                for r in by[c]) for c in configs}
    cells = " | ".join(f"{rate[c]:,.0f}/s, {cpu[c]:.1f} µs" for c in configs)
    print(f"| {label} | {cells} | {rate['tls'] / rate['plaintext']:.3f} | "
          f"{rate['token'] / rate['tls']:.3f} | {rate['certificate'] / rate['tls']:.3f} |")
n = len(next(iter(rows.values()))["tls"])
print(f"\n(calls/s and consentd CPU per call; {n} runs per cell, median; results in {sys.argv[1]})")
PY
