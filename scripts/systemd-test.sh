#!/usr/bin/env bash
# Checks deploy/systemd/consentd.service with systemd's own tools:
# `systemd-analyze verify` must print nothing (it only warns, exit 0, about
# an unknown or misspelt key, so any output fails here), and `systemd-analyze
# security --offline` must rate the sandbox's exposure at most 2.0 ("OK").
# The unit is checked with ExecStart pointing at the built consentd (verify
# needs the binary to exist).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
consentd="$root/build/server/consentd"
if [ ! -x "$consentd" ]; then "$root/scripts/build.sh" --no-tests consentd; fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sed "s|/usr/local/bin/consentd|$consentd|" "$root/deploy/systemd/consentd.service" \
  >"$dir/consentd.service"

warnings=$(systemd-analyze verify "$dir/consentd.service" 2>&1) || {
  echo "$warnings" >&2
  echo "systemd-test: systemd-analyze verify failed" >&2
  exit 1
}
if [ -n "$warnings" ]; then
  echo "$warnings" >&2
  echo "systemd-test: systemd-analyze verify warned about the unit" >&2
  exit 1
fi
echo "systemd-analyze verify: clean"

exposure=$(systemd-analyze security --offline=yes "$dir/consentd.service" 2>&1 |
  sed -n 's/.*Overall exposure level for consentd.service: \([0-9.]*\).*/\1/p')
if [ -z "$exposure" ]; then
  echo "systemd-test: systemd-analyze security printed no exposure level" >&2
  exit 1
fi
echo "systemd-analyze security: exposure $exposure (0 is the most confined, 10 the least)"
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' || {
  echo "systemd-test: exposure $exposure is above 2.0" >&2
  exit 1
}
