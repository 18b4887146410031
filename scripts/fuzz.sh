#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan, in build-fuzz/) and
# runs each for SECONDS (default 60), as many at once as there are cores,
# from its seed corpus in tests/fuzz/corpus/<target>/ (new inputs go to a
# scratch copy). Prints the
# executions of each; exits non-zero on any finding (the crashing input is
# kept in build-fuzz/findings/).
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=60
targets=()
for arg in "$@"; do
  if [[ "$arg" =~ ^[0-9]+$ ]]; then seconds="$arg"; else targets+=("$arg"); fi
done
if [ ${#targets[@]} -eq 0 ]; then
  targets=(check_request_fuzzer subject_record_fuzzer policy_text_fuzzer history_event_fuzzer
           page_token_fuzzer)
fi

"$root/scripts/install-deps.sh" --with-clang
build="$root/build-fuzz"
echo "fuzz: configuring $build (clang, ASan + UBSan, libFuzzer)"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++ -DCONSENT_FUZZ=ON -DCONSENT_BUILD_TESTS=OFF \
  > "$build.configure.log" 2>&1 || { cat "$build.configure.log" >&2; exit 1; }
cmake --build "$build" --target "${targets[@]}"

mkdir -p "$build/findings"
# One target: its summary line on stdout, the log's tail on a finding.
run_one() {
  local target=$1 corpus log runs
  corpus=$(mktemp -d)
  cp "$root/tests/fuzz/corpus/$target"/* "$corpus/"
  log="$build/$target.log"
  if ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      "$build/tests/fuzz/$target" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=3072 \
      -print_final_stats=1 -artifact_prefix="$build/findings/$target-" "$corpus" > "$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    echo "fuzz: $target: ${runs:-?} executions in ${seconds}s, no finding"
  else
    echo "fuzz: $target: FINDING (log $log, input in $build/findings/)"
    tail -40 "$log"
    rm -rf "$corpus"
    return 1
  fi
  rm -rf "$corpus"
}

# As many targets at once as there are cores: each fuzzer is one process on
# one core, so its executions are those of a run on its own.
parallel=$(nproc)
echo "fuzz: ${#targets[@]} targets for ${seconds}s each, $parallel at a time"
for target in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n || true; done
  rm -f "$build/$target.status"
  { run_one "$target" > "$build/$target.summary" 2>&1; echo $? > "$build/$target.status"; } &
done
wait
status=0
for target in "${targets[@]}"; do
  cat "$build/$target.summary"
  if [ "$(cat "$build/$target.status" 2>/dev/null)" != 0 ]; then status=1; fi
done
exit $status
