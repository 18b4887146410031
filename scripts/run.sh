#!/usr/bin/env bash
# Quick start, command 1: builds consentd and consentctl (installing what is
# missing) and runs consentd on its embedded default: RocksDB under
# ./consent-data (backups under ./consent-backups), the default policy,
# loopback only, and snapshot keys made under ./consent-keys on first use
# (an Ed25519 signing key and a pseudonymization key). Extra arguments go to
# consentd (e.g. --listen=127.0.0.1:50052). Stop it with Ctrl-C.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/build.sh" consentd consentctl

ctl="$root/build/client/consentctl"
keys="$PWD/consent-keys"
if [ ! -f "$keys/snapshot-signing.pem" ]; then
  mkdir -p "$keys" && chmod 700 "$keys"
  openssl genpkey -algorithm ed25519 -out "$keys/snapshot-signing.pem"
  openssl pkey -in "$keys/snapshot-signing.pem" -pubout -out "$keys/snapshot-signing.pub"
  head -c 32 /dev/urandom > "$keys/pseudonymize.key"
  chmod 600 "$keys/snapshot-signing.pem" "$keys/pseudonymize.key"
fi
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
  $ctl snapshot export registry.snap     # signed, for decisions inside a job
  $ctl snapshot verify registry.snap --public_key=$keys/snapshot-signing.pub

Stop with Ctrl-C (drains in-flight calls, then closes the store).

MSG
exec "$root/build/server/consentd" --data_dir="$PWD/consent-data" \
  --backup_dir="$PWD/consent-backups" --policy="$root/deploy/policy/default.textproto" \
  --snapshot_signing_key_file="$keys/snapshot-signing.pem" \
  --pseudonymize_key_file="$keys/pseudonymize.key" "$@"
