#!/usr/bin/env bash
# Brings up the local stack of deploy/compose/compose.yaml with
# podman-compose (CI runs this) and checks it works as a whole:
#   1. the consentd image built from the Dockerfile (layers cached), and a
#      Prometheus image built from Debian's prometheus package on the local
#      Debian base (tests/stack/prometheus.Dockerfile): no image registry
#      is reachable, and Grafana, which is not in Debian, is left out;
#   2. consentd and Prometheus started from the compose file, on the host's
#      network (tests/stack/compose.host-network.yaml) with free loopback
#      ports, Prometheus scraping every second;
#   3. a few calls with consentctl; then Prometheus must report the target
#      up, have scraped consent_registry_revision at the written revision,
#      and have loaded and evaluated every recording rule and alert of
#      deploy/prometheus/consentd.rules.yml without error;
#   4. the stack taken down with its volumes.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/container-base.sh
source "$root/scripts/container-base.sh"
step() { printf '\n--- %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
project=consent-stack-test
work=$(mktemp -d /var/tmp/consent-stack.XXXXXX)
# tests/stack/podman-host-network: podman-compose 1.0.3 would add its
# project network beside host networking, which podman refuses.
compose=(podman-compose --podman-path "$root/tests/stack/podman-host-network" -p "$project"
  -f "$root/deploy/compose/compose.yaml"
  -f "$root/tests/stack/compose.host-network.yaml")
down() {
  "${compose[@]}" down -v >/dev/null 2>&1 || true
  # podman-compose creates the project's network even when no service
  # joins it, and down leaves it.
  podman network rm -f "${project}_default" >/dev/null 2>&1 || true
  rm -rf "$work"
}
fail() {
  echo "stack-test: FAILED: $*" >&2
  for c in $(podman ps -a --filter "label=io.podman.compose.project=$project" --format '{{.Names}}'); do
    echo "--- log of $c:" >&2
    podman logs --tail 40 "$c" >&2 2>&1 || true
  done
  exit 1
}
trap down EXIT

step "images"
container_base_image false
container_packages podman-compose
consentd_image localhost/consentd:test
podman build --layers -t localhost/consent-prometheus:test -f "$root/tests/stack/prometheus.Dockerfile" \
  "$root/tests/stack" >"$work/prometheus-build.log" 2>&1 || {
  tail -20 "$work/prometheus-build.log" >&2
  fail "building the Prometheus image"
}
echo "images: localhost/consentd:test, localhost/consent-prometheus:test"

consentctl="$root/build/client/consentctl"
if [ ! -x "$consentctl" ]; then "$root/scripts/build.sh" --no-tests consentctl; fi
grpc=127.0.0.1:$(free_port)
metrics=127.0.0.1:$(free_port)
prometheus=127.0.0.1:$(free_port)
cat >"$work/prometheus.yml" <<CONFIG
# compose.yaml's Prometheus configuration with consentd on the host's
# loopback, scraped and evaluated every second.
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - consentd.rules.yml
scrape_configs:
  - job_name: consentd
    static_configs:
      - targets: ["$metrics"]
CONFIG
chmod 644 "$work/prometheus.yml"

step "podman-compose up consentd prometheus"
export CONSENTD_IMAGE=localhost/consentd:test PROMETHEUS_IMAGE=localhost/consent-prometheus:test
export CONSENTD_LISTEN=$grpc CONSENTD_METRICS_LISTEN=$metrics PROMETHEUS_LISTEN=$prometheus
export PROMETHEUS_CONFIG=$work/prometheus.yml
"${compose[@]}" up -d consentd prometheus >"$work/up.log" 2>&1 || {
  cat "$work/up.log" >&2
  fail "podman-compose up"
}

# api PATH: Prometheus' JSON answer.
api() { curl -sf "http://$prometheus$1"; }
# await DESCRIPTION PYTHON-CONDITION PATH: polls PATH until the condition,
# evaluated on its JSON as `r`, holds (60 s at most).
await() {
  local deadline=$((SECONDS + 60)) answer
  while :; do
    answer=$(api "$3" 2>/dev/null || true)
    if [ -n "$answer" ] && /usr/bin/python3 -c "import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if ($2) else 1)" "$answer" 2>/dev/null; then
      echo "$1"
      return 0
    fi
    [ $SECONDS -lt $deadline ] || fail "$1: not within 60 s (last answer: ${answer:0:400})"
    sleep 0.5
  done
}

await_ready "http://$metrics/readyz" || fail "consentd not ready"

step "calls, scrapes and rules"
ctl() { "$consentctl" --target="$grpc" --timeout=10s "$@"; }
ctl subject set alice --jurisdiction=GB --birth_date=1990-01-31 >/dev/null
ctl object alice ai_training >/dev/null
ctl check ai_training alice post-1 --create_time=2026-01-01T00:00:00Z | grep -q DENIED_OBJECTION || fail "check after the objection"
await "target up" \
  "any(t['labels']['job']=='consentd' and t['health']=='up' for t in r['data']['activeTargets'])" \
  "/api/v1/targets"
await "consent_registry_revision scraped at 2" \
  "any(s['value'][1]=='2' for s in r['data']['result'])" \
  "/api/v1/query?query=consent_registry_revision%7Bjob%3D%22consentd%22%7D"
expected_rules=$(grep -cE '^ *- (record|alert):' "$root/deploy/prometheus/consentd.rules.yml")
await "all $expected_rules rules loaded and evaluated without error" \
  "sum(len(g['rules']) for g in r['data']['groups'])==$expected_rules and all(x['health']=='ok' and not x['lastEvaluation'].startswith('0001') for g in r['data']['groups'] for x in g['rules'])" \
  "/api/v1/rules"
await "ConsentdDown inactive (consentd is up)" \
  "any(x['name']=='ConsentdDown' and x['state']=='inactive' for g in r['data']['groups'] for x in g['rules'])" \
  "/api/v1/rules"

step "podman-compose down -v"
"${compose[@]}" down -v >"$work/down.log" 2>&1 || { cat "$work/down.log" >&2; fail "podman-compose down"; }
left=$(podman ps -a --filter "label=io.podman.compose.project=$project" --format '{{.Names}}')
[ -z "$left" ] || fail "containers left after down: $left"
echo "stack test passed"
