#!/usr/bin/env bash
# Builds the consentd image from the Dockerfile with podman and runs it for
# real (CI runs this; so can anyone with root on Debian 12):
#   1. the Debian base image made locally if podman lacks it
#      (scripts/container-base.sh: debootstrap, no registry needed);
#   2. podman build --format docker, with the version and git revision as
#      build arguments; the image's size, labels, user and HEALTHCHECK
#      checked;
#   3. the container started on a volume whose root already holds
#      lost+found (a fresh file system), with a read-only root file system,
#      no capabilities and no new privileges, as Kubernetes runs it;
#   4. /healthz, /readyz, podman's HEALTHCHECK and consent_build_info
#      checked; consentctl calls from outside the container (an objection,
#      a check);
#   5. podman stop (SIGTERM): a clean exit; a second container on the same
#      volume finds the data (the check, the history, the audit chain).
# Exits non-zero on the first failure, printing the container's log.
#
# Usage: scripts/container-test.sh (the image stays in podman's store as
# localhost/consentd:test, its layers cached for the next build)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/container-base.sh
source "$root/scripts/container-base.sh"
step() { printf '\n--- %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
fail() {
  echo "container-test: FAILED: $*" >&2
  for c in "${containers[@]}"; do
    echo "--- log of $c:" >&2
    podman logs "$c" >&2 2>&1 || true
  done
  exit 1
}

image=localhost/consentd:test
# Runs podman without its complaints that there is no systemd to run
# periodic health checks (this machine has none; nothing else is lost).
quiet() { "$@" 2> >(grep -v "unable to get systemd connection" >&2); }
version=$(sed -n 's/^project(consent_registry VERSION \([0-9.]*\).*/\1/p' "$root/CMakeLists.txt")
revision=$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
containers=()
volume=""
cleanup() {
  for c in "${containers[@]}"; do podman rm -f "$c" >/dev/null 2>&1 || true; done
  if [ -n "$volume" ]; then rm -rf "$volume"; fi
}
trap cleanup EXIT

step "base image"
container_base_image false

# consentctl of the host, for calls from outside the container.
consentctl="$root/build/client/consentctl"
if [ ! -x "$consentctl" ]; then "$root/scripts/build.sh" --no-tests consentctl; fi

step "podman build"
consentd_image "$image" || fail "podman build"
build_seconds=$image_build_seconds
size=$(podman image inspect --format '{{.Size}}' "$image")
echo "image built in ${build_seconds} s: $image, $((size / 1024 / 1024)) MiB ($size bytes)"

inspect() { podman image inspect --format "$1" "$image"; }
[ "$(inspect '{{index .Labels "org.opencontainers.image.version"}}')" = "$version" ] ||
  fail "label org.opencontainers.image.version is not $version"
[ "$(inspect '{{index .Labels "org.opencontainers.image.revision"}}')" = "$revision" ] ||
  fail "label org.opencontainers.image.revision is not $revision"
[ "$(inspect '{{.Config.User}}')" = "10001:10001" ] || fail "the image does not run as 10001"
healthcheck=$(inspect '{{json .Config.Healthcheck}}')
case "$healthcheck" in
  *consentctl*health*) ;;
  *) fail "no HEALTHCHECK in the image (built without --format docker?): $healthcheck" ;;
esac
exposed=$(inspect '{{json .Config.ExposedPorts}}')
case "$exposed" in
  *50051/tcp*9464/tcp*) ;;
  *) fail "the image does not EXPOSE 50051 and 9464: $exposed" ;;
esac
quiet podman run --rm --health-interval=disable --entrypoint /usr/local/bin/consentd "$image" --version | tee /tmp/consent-version
grep -qx "consentd $version (revision $revision)" /tmp/consent-version ||
  fail "consentd --version in the image does not name $version and $revision"
echo "labels, user 10001, HEALTHCHECK, EXPOSE 50051 9464: as expected"

grpc_port=$(free_port)
http_port=$(free_port)
target=127.0.0.1:$grpc_port
http=http://127.0.0.1:$http_port

# A fresh volume: an ext4 file system's root holds lost+found.
volume=$(mktemp -d /var/tmp/consent-volume.XXXXXX)
mkdir "$volume/lost+found"
chmod 700 "$volume/lost+found"
chown 10001:10001 "$volume"

run_consentd() {
  local name=$1
  containers+=("$name")
  # --health-interval=disable: podman runs periodic checks from systemd
  # timers, and this machine has no systemd; the check itself is run
  # below with `podman healthcheck run`.
  quiet podman run -d --name "$name" --health-interval=disable --read-only --cap-drop=ALL --security-opt=no-new-privileges \
    -v "$volume:/var/lib/consentd" -e CONSENT_TARGET="$target" \
    "$image" --listen="$target" --metrics_listen="127.0.0.1:$http_port" >/dev/null
}

step "first run: fresh volume with lost+found, read-only root, no capabilities"
run_consentd consentd-test-1
await_ready "$http/readyz" consentd-test-1 || fail "consentd-test-1 not ready"
[ "$(curl -s "$http/healthz")" = ok ] || fail "/healthz did not answer ok"
curl -s "$http/readyz"
podman healthcheck run consentd-test-1 >/dev/null 2>&1 || fail "podman healthcheck run: unhealthy"
echo "podman healthcheck run: healthy"
curl -s "$http/metrics" | grep -F "consent_build_info{version=\"$version\",revision=\"$revision\"} 1" ||
  fail "consent_build_info does not name $version and $revision"

ctl() { "$consentctl" --target="$target" --timeout=10s "$@"; }
ctl subject set alice --jurisdiction=GB --birth_date=1990-01-31
ctl object alice ai_training
check=$(ctl check ai_training alice post-1 --create_time=2026-01-01T00:00:00Z)
echo "$check"
case "$check" in *DENIED_OBJECTION*) ;; *) fail "check after the objection: $check" ;; esac

step "podman stop (SIGTERM)"
quiet podman stop --time 30 consentd-test-1 >/dev/null
code=$(podman inspect --format '{{.State.ExitCode}}' consentd-test-1)
[ "$code" = 0 ] || fail "consentd exited with $code after SIGTERM"
podman logs consentd-test-1 2>&1 | grep -q "store closed cleanly" || fail "no clean close in the log"
echo "exit 0, store closed cleanly"
[ -d "$volume/lost+found" ] && [ -f "$volume/data/CURRENT" ] ||
  fail "the database is not in data/ beside lost+found"
owner=$(stat -c '%u %a' "$volume/data")
[ "$owner" = "10001 700" ] || fail "data/ is '$owner', not owned by 10001 with mode 700"
echo "volume: lost+found untouched, database in data/ (uid 10001, mode 700)"

step "second run on the same volume"
run_consentd consentd-test-2
await_ready "$http/readyz" consentd-test-2 || fail "consentd-test-2 not ready"
check=$(ctl check ai_training alice post-1 --create_time=2026-01-01T00:00:00Z)
case "$check" in *DENIED_OBJECTION*) ;; *) fail "check after the restart: $check" ;; esac
events=$(ctl history alice 2>&1 >/dev/null)
[ "$events" = "2 events" ] || fail "history: '$events', not 2 events"
ctl verify | grep -q "audit chain OK: 2 events verified" || fail "audit chain not OK after restart"
echo "the objection, 2 history events and the audit chain survived the restart"
quiet podman stop --time 30 consentd-test-2 >/dev/null

echo
echo "container test passed: image $((size / 1024 / 1024)) MiB, built in ${build_seconds} s"
