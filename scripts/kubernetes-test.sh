#!/usr/bin/env bash
# Checks the Kubernetes kit (deploy/kubernetes/) without a cluster:
#   1. the generated files match their sources (scripts/gen-kubernetes.sh
#      --check: the PrometheusRule and the policy ConfigMaps);
#   2. the base, the example overlay and the replicated one render with Debian's kubectl 1.20
#      (kustomize v2.0.3, the oldest the kit supports), unpacked from the
#      kubernetes-client package into .cache/ (it would clash with another
#      kubectl installed on the machine);
#   3. every rendered object passes the Kubernetes API's schema, and the
#      PodMonitor and PrometheusRule the Prometheus Operator's
#      (tests/kubernetes/validate.js, kubernetes-models from the npm
#      registry, versions pinned in tests/kubernetes/package-lock.json),
#      and has no field its kind does not define (tests/kubernetes/fields.js:
#      the same packages' TypeScript declarations, checked by tsc);
#   4. the PrometheusRule's groups pass promtool check rules;
#   5. the replicated overlay's nats.conf passes nats-server -t.
# Rendered manifests are left in .cache/kubernetes/rendered/.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache="$root/.cache/kubernetes"
out="$cache/rendered"
mkdir -p "$cache" "$out"

"$root/scripts/gen-kubernetes.sh" --check

kubectl="$cache/root/usr/bin/kubectl"
if [ ! -x "$kubectl" ]; then
  echo "kubernetes-test: unpacking Debian's kubernetes-client (kubectl 1.20) into $cache"
  rm -f "$cache"/kubernetes-client_*.deb
  (cd "$cache" && apt-get download kubernetes-client 2>/dev/null ||
    { apt-get update -qq && apt-get download kubernetes-client; })
  dpkg-deb -x "$cache"/kubernetes-client_*.deb "$cache/root"
fi
"$kubectl" version --client --short 2>/dev/null || "$kubectl" version --client

for kit in base overlays/example overlays/replicated; do
  name=${kit//\//-}
  "$kubectl" kustomize "$root/deploy/kubernetes/$kit" >"$out/$name.yaml"
  echo "kubectl kustomize deploy/kubernetes/$kit: $(grep -c '^kind:' "$out/$name.yaml") objects"
done

if ! command -v npm >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
fi
(cd "$root/tests/kubernetes" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
node "$root/tests/kubernetes/validate.js" --self-test
node "$root/tests/kubernetes/validate.js" "$out/base.yaml" "$out/overlays-example.yaml" \
  "$out/overlays-replicated.yaml"
node "$root/tests/kubernetes/fields.js" --self-test
node "$root/tests/kubernetes/fields.js" "$out/base.yaml" "$out/overlays-example.yaml" \
  "$out/overlays-replicated.yaml"

# The PrometheusRule's spec is a Prometheus rule file.
NODE_PATH="$root/tests/kubernetes/node_modules" node -e '
  const yaml = require("js-yaml");
  const docs = yaml.loadAll(require("fs").readFileSync(process.argv[1], "utf8"));
  const rule = docs.find((d) => d && d.kind === "PrometheusRule");
  process.stdout.write(yaml.dump(rule.spec));
' "$out/base.yaml" >"$out/prometheusrule-spec.yml"
promtool check rules "$out/prometheusrule-spec.yml"

# The replicated overlay's NATS configuration, as nats-server reads it.
if [ -x /usr/sbin/nats-server ]; then
  POD_NAME=nats-0 NATS_TOKEN=test-token /usr/sbin/nats-server -t \
    -c "$root/deploy/kubernetes/overlays/replicated/nats.conf"
fi
echo "kubernetes-test: passed"
