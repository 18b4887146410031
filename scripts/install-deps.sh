#!/usr/bin/env bash
# Installs the Debian 12 packages consent-registry needs to build, test and run.
# Idempotent: packages already present are not reinstalled, and apt-get update
# runs only when something is missing. Used by the README, .ci/run and the
# Dockerfile, so all three build from the same set.
#
# Usage: scripts/install-deps.sh [--runtime-only] [--with-test-tools] [--with-clang]
#                                [--with-bench-peers]
set -euo pipefail

build_pkgs=(
  build-essential cmake ninja-build ccache pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  librocksdb-dev libabsl-dev prometheus-cpp-dev libcivetweb-dev libssl-dev openssl
  libgtest-dev libgmock-dev libbenchmark-dev libnats-dev
)
# Tools the test suite uses: an independent Python gRPC client, the Python
# package's build and test needs (a virtual environment, pip, pandas, and
# for its offline module numpy, Python's headers and pybind11),
# Prometheus, clang-format, nats-server (a JetStream cluster for the command
# log's tests), and the openssl command line (certificates made
# at test time).
test_pkgs=(python3-grpcio python3-protobuf python3-venv python3-pip python3-setuptools
           python3-wheel python3-pandas python3-numpy python3-dev pybind11-dev curl clang-format
           prometheus openssl nats-server)
# The peers bench/run.sh measures consentd beside: Redis and its
# redis-benchmark, h2load, and curl to check h2load's replayed request.
bench_peer_pkgs=(redis-server redis-tools nghttp2-client curl)
runtime_pkgs=(
  libgrpc++1.51 libprotobuf32 librocksdb7.8 libprometheus-cpp-core1.0 libcivetweb1
  libabsl20220623 libnats3.4 ca-certificates
)

want=("${build_pkgs[@]}")
for arg in "$@"; do
  case "$arg" in
    --runtime-only) want=("${runtime_pkgs[@]}") ;;
    --with-test-tools) want+=("${test_pkgs[@]}") ;;
    # clang for the thread-safety analysis and the fuzzers.
    --with-clang) want+=(clang libclang-rt-14-dev) ;;
    --with-bench-peers) want+=("${bench_peer_pkgs[@]}") ;;
    *) echo "install-deps.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#want[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
