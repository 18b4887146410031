#!/usr/bin/env bash
# The Python package's tests and examples against a real consentd, as
# ctest runs them: installs the package the way its users do (a virtual
# environment made with --system-site-packages, pip install
# --no-build-isolation, offline), then runs tests/ with unittest.
#
# Usage: client/python/run_tests.sh CONSENTD VENV_DIR [unittest args...]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
consentd=$(realpath "$1")
venv=$2
shift 2
if [ ! -x "$venv/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
# A private copy of the sources: pip builds in place, and the release and
# sanitizer builds must not share a build directory.
src="$venv/src"
rm -rf "$src" && mkdir -p "$src"
cp -r "$here/pyproject.toml" "$here/setup.py" "$here/README.md" "$here/consent_registry" "$src/"
CONSENT_PROTO_DIR="$here/../../proto" \
  "$venv/bin/pip" install --quiet --no-build-isolation --no-index --force-reinstall --no-deps "$src"
cd "$here/tests"
CONSENTD="$consentd" exec "$venv/bin/python" -m unittest "${@:-discover}" -v
