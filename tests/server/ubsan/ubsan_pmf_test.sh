#!/usr/bin/env bash
# Backs the comment on RegistryService::ServeWrite: with GCC's
# -fsanitize=vptr (part of -fsanitize=undefined) a pointer-to-member call reached through `this` inside a
# lambda is reported as a type error for a valid object, and the form
# ServeWrite uses (a local pointer) is not. Usage: ubsan_pmf_test.sh CXX.
set -euo pipefail
cxx=${1:?usage: ubsan_pmf_test.sh CXX}
src="$(dirname "${BASH_SOURCE[0]}")/pmf_in_lambda.cc"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags=(-std=c++17 -O1 -fsanitize=undefined -fno-sanitize-recover=all)
"$cxx" "${flags[@]}" "$src" -o "$out/local"
"$cxx" "${flags[@]}" -DREACH_THROUGH_THIS "$src" -o "$out/through_this"
if ! "$out/local" >"$out/local.log" 2>&1; then
  echo "FAIL: the local-pointer form (ServeWrite's) is reported:" >&2
  cat "$out/local.log" >&2
  exit 1
fi
echo "local pointer: clean ($(cat "$out/local.log"))"
if "$out/through_this" >"$out/this.log" 2>&1; then
  echo "the (registry_->*write) form is clean with this compiler: the workaround in" \
       "ServeWrite is no longer needed here ($("$cxx" --version | head -1))"
  exit 0
fi
grep -q "does not point to an object of type 'RegistryService'\|member access within null pointer of type 'struct RegistryService'" \
  "$out/this.log" || { echo "FAIL: unexpected failure:" >&2; cat "$out/this.log" >&2; exit 1; }
echo "(registry_->*write) form: reported as expected: $(head -1 "$out/this.log")"
