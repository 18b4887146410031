#!/usr/bin/env bash
# Quick start, command 1: builds consentd and consentctl (installing what is
# missing) and runs consentd on its embedded default: RocksDB under
# ./consent-data (backups under ./consent-backups), the default policy,
# loopback only. Extra arguments go to
# consentd (e.g. --listen=127.0.0.1:50052). Stop it with Ctrl-C.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/build.sh" consentd consentctl

ctl="$root/build/client/consentctl"
cat <<MSG

consentd is starting on 127.0.0.1:50051; data lives in $PWD/consent-data
(backups in $PWD/consent-backups), metrics on http://127.0.0.1:9464/metrics, probes on
http://127.0.0.1:9464/healthz and /readyz. Try it from another terminal:

  $ctl subject set alice --jurisdiction=GB --birth_date=1990-04-01
  $ctl check ai_training alice post-1 --create_time=2024-05-01T12:00:00Z
      -> ALLOWED  ALLOWED_DEFAULT (UK: legitimate interest)
  $ctl object alice ai_training --channel=settings_page
  $ctl check ai_training.generative alice post-1 --create_time=2024-05-01T12:00:00Z
      -> DENIED   DENIED_OBJECTION
  $ctl check ai_training alice dm-7 --content_type=MESSAGE --create_time=2024-05-01T12:00:00Z
      -> DENIED   DENIED_CONTENT_TYPE (private messages never)
  $ctl clear alice ai_training
  $ctl subject get alice --json

Stop with Ctrl-C (drains in-flight calls, then closes the store).

MSG
exec "$root/build/server/consentd" --data_dir="$PWD/consent-data" \
  --backup_dir="$PWD/consent-backups" --policy="$root/deploy/policy/default.textproto" "$@"
