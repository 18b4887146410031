#!/usr/bin/env bash
# Builds abseil's shared libraries with ThreadSanitizer, from Debian's own
# source package of the installed libabsl-dev (same version, same patches, so
# the same ABI), and prints the directory that holds them. The ThreadSanitizer
# build (scripts/build.sh --tsan) links against that directory so that TSan
# sees every absl::Mutex, the project's and gRPC's.
#
# Cached by version under ${XDG_CACHE_HOME:-~/.cache}/consent-registry: a
# second call prints the directory at once. A cold build takes about two
# minutes on two cores.
#
# Fetching the source needs a deb-src entry; when apt has none, this adds
# /etc/apt/sources.list.d/consent-registry-src.sources (Debian's archive,
# bookworm) and runs apt-get update. Needs root for that, as install-deps.sh
# does for packages.
#
# Usage: scripts/build-tsan-abseil.sh   (progress on stderr, the directory on stdout)
set -euo pipefail

log() { echo "tsan-abseil: $*" >&2; }

version=$(dpkg-query -W -f='${Version}' libabsl-dev 2>/dev/null) || {
  log "libabsl-dev is not installed (scripts/install-deps.sh installs it)"; exit 1; }
cache="${XDG_CACHE_HOME:-$HOME/.cache}/consent-registry/abseil-tsan-$version"
if [ -e "$cache/lib/libabsl_synchronization.so" ]; then
  log "cached: $cache"
  echo "$cache/lib"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get source --download-only -qq "abseil=$version" >/dev/null 2>&1; then
  sources=/etc/apt/sources.list.d/consent-registry-src.sources
  log "no source package reachable; adding $sources and updating apt"
  cat > "$sources" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  apt-get update -qq >&2
fi
log "fetching and unpacking Debian's abseil $version"
apt-get source -qq "abseil=$version" >/dev/null 2>&1 || {
  log "apt-get source abseil=$version failed"; exit 1; }
src=$(find "$work" -maxdepth 1 -type d -name 'abseil-*' | head -1)

# Debian's shared build (debian/rules): C++17, shared libraries. Here with
# clang and -fsanitize=thread; RelWithDebInfo so reports carry lines.
launcher=()
if command -v ccache >/dev/null 2>&1; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi
log "building with ThreadSanitizer (a couple of minutes)"
cmake -S "$src" -B "$work/build" -G Ninja "${launcher[@]}" \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_CXX_STANDARD=17 -DBUILD_SHARED_LIBS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS=-fsanitize=thread -DCMAKE_CXX_FLAGS=-fsanitize=thread \
  -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread \
  -DCMAKE_INSTALL_PREFIX="$cache.partial" >"$work/configure.log" 2>&1 || {
  cat "$work/configure.log" >&2; exit 1; }
cmake --build "$work/build" >"$work/build.log" 2>&1 || { tail -50 "$work/build.log" >&2; exit 1; }
rm -rf "$cache.partial"
cmake --install "$work/build" >/dev/null
rm -rf "$cache"
mv "$cache.partial" "$cache"
log "built: $cache"
echo "$cache/lib"
