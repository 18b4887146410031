#!/usr/bin/env bash
# The Python package's tests and examples against a real consentd, as
# ctest runs them: installs the package as its users do (install.sh), then
# runs tests/ with unittest.
#
# Usage: client/python/run_tests.sh CONSENTD VENV_DIR [unittest args...]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
consentd=$(realpath "$1")
venv=$2
shift 2
"$here/install.sh" "$venv"
cd "$here/tests"
CONSENTD="$consentd" exec "$venv/bin/python" -m unittest "${@:-discover}" -v
