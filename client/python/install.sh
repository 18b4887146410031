#!/usr/bin/env bash
# Installs the package into the virtual environment VENV_DIR (made with
# --system-site-packages when missing, so Debian's python3-grpcio and
# python3-protobuf are seen), offline, the way the README shows; from a
# private copy of the sources, so that concurrent installs (the release and
# sanitizer test runs, the benchmark) never share a build directory.
#
# With CONSENT_OFFLINE_MODULE set to the compiled offline module (CMake's
# consent_offline_py target: _offline.cpython-*.so), it is installed into
# the package as consent_registry._offline (docs/offline.md).
#
# Usage: client/python/install.sh VENV_DIR
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=$1
if [ ! -x "$venv/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
src="$venv/src"
rm -rf "$src" && mkdir -p "$src"
cp -r "$here/pyproject.toml" "$here/setup.py" "$here/README.md" "$here/consent_registry" "$src/"
if [ -n "${CONSENT_OFFLINE_MODULE:-}" ]; then
  cp "$CONSENT_OFFLINE_MODULE" "$src/consent_registry/"
fi
CONSENT_PROTO_DIR="$here/../../proto" \
  "$venv/bin/pip" install --quiet --no-build-isolation --no-index --force-reinstall --no-deps "$src"
