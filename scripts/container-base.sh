#!/usr/bin/env bash
# Makes the Debian 12 base images the Dockerfile and the local stack build
# FROM (debian:bookworm, debian:bookworm-slim) when podman does not have
# them: no image registry is needed. debootstrap --variant=minbase fetches
# bookworm from Debian's archive; the root filesystem is imported into
# podman and tagged under both names. The image is kept in podman's store,
# so this runs once per machine (--rebuild makes it again, e.g. for
# security updates).
#
# Also installs podman, runc and debootstrap when missing. Sourced or run;
# sets CONTAINERS_CONF to scripts/containers.conf. Sourced, it also offers
# consentd_image TAG: builds the Dockerfile into TAG as
# scripts/container-test.sh checks it (log in /tmp/consent-image-build.log;
# sets image_build_seconds), free_port and await_ready.
#
# Usage: scripts/container-base.sh [--rebuild]
set -euo pipefail

container_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CONTAINERS_CONF="$container_root/scripts/containers.conf"

container_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "container-base: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

container_base_image() {
  local rebuild=${1:-false}
  container_packages podman runc debootstrap uidmap
  if [ "$rebuild" != true ] && podman image exists docker.io/library/debian:bookworm &&
    podman image exists docker.io/library/debian:bookworm-slim; then
    echo "container-base: debian:bookworm is in podman's store"
    return 0
  fi
  local dir mirror
  dir=$(mktemp -d /var/tmp/consent-bookworm.XXXXXX)
  # The archive apt already uses on this machine.
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
  mirror=${mirror:-http://deb.debian.org/debian}
  echo "container-base: debootstrap bookworm from $mirror (a few minutes)"
  local started=$SECONDS
  debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$dir.log" 2>&1 || {
    tail -20 "$dir.log" >&2
    rm -rf "$dir" "$dir.log"
    return 1
  }
  # Sources as Debian's own image has them: the release, its updates and
  # security fixes.
  cat >"$dir/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  rm -f "$dir/etc/apt/sources.list"
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/archives/*.deb
  tar -C "$dir" -c . | podman import --change 'CMD ["/bin/bash"]' - docker.io/library/debian:bookworm
  podman tag docker.io/library/debian:bookworm docker.io/library/debian:bookworm-slim
  rm -rf "$dir" "$dir.log"
  echo "container-base: debian:bookworm imported in $((SECONDS - started)) s"
}

# A free TCP port on the host's loopback (containers here share the host's
# network namespace).
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# await_ready URL [CONTAINER]: waits up to 60 s for URL (a consentd's
# /readyz) to answer 200; fails sooner if CONTAINER stops running.
await_ready() {
  local deadline=$((SECONDS + 60))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ]; do
    if [ $SECONDS -ge $deadline ]; then
      echo "container-base: $1 not 200 within 60 s" >&2
      return 1
    fi
    if [ -n "${2:-}" ] && [ "$(podman inspect --format '{{.State.Running}}' "$2")" != true ]; then
      echo "container-base: $2 exited" >&2
      return 1
    fi
    sleep 0.2
  done
}

consentd_image() {
  local tag=$1 version revision started
  version=$(sed -n 's/^project(consent_registry VERSION \([0-9.]*\).*/\1/p' "$container_root/CMakeLists.txt")
  revision=$(git -C "$container_root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
  echo "container-base: podman build $tag (version $version, revision $revision)"
  started=$SECONDS
  podman build --format docker --layers \
    --build-arg VERSION="$version" --build-arg GIT_REVISION="$revision" \
    -t "$tag" "$container_root" >/tmp/consent-image-build.log 2>&1 || {
    tail -40 /tmp/consent-image-build.log >&2
    echo "container-base: podman build failed (log: /tmp/consent-image-build.log)" >&2
    return 1
  }
  image_build_seconds=$((SECONDS - started))
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  container_base_image "$([ "${1:-}" = --rebuild ] && echo true || echo false)"
fi
