#!/usr/bin/env bash
# `make bench`: starts the test emulators, runs the benchmark commands, prints their figures.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mender-rs/target}
scripts/deps.sh emulators

# Everything is built first, so no build runs beside a measurement. Each deployed set builds in
# its own target directory, as it is deployed: the Lambda functions in one cargo call (as
# infra/function.mk does), the deviceconnect container alone, the artifact-bench tool alone. In
# one directory the three feature unifications would rebuild each other's dependencies (and
# relink every Lambda function) on every run.
DC_TARGET=${CARGO_TARGET_DIR%/}-deviceconnect
ART_TARGET=${CARGO_TARGET_DIR%/}-artifact-bench
cargo build -q -p black-box-tests --bins
if [ "${1:-}" != inventory ]; then
  LAMBDAS=$(cd functions && ls -d */ | tr -d / | grep -vx deviceconnect)
  # shellcheck disable=SC2046
  cargo build -q --release $(printf -- '-p %s ' $LAMBDAS)
  CARGO_TARGET_DIR=$DC_TARGET cargo build -q --release -p deviceconnect --bin deviceconnect
  CARGO_TARGET_DIR=$ART_TARGET cargo build -q --release -p mender-artifact --bin artifact-bench
fi
export STACK_NAME=bench
# 100,000 devices and their indexes in DynamoDB Local's memory.
export DDB_HEAP=${DDB_HEAP:-6g}
trap 'scripts/stack.sh stop' EXIT
scripts/stack.sh start
eval "$(scripts/stack.sh env)"
# Inventory lists at fleet scale (`make bench-inventory` runs only this).
cargo run -q -p black-box-tests --bin bench-inventory
[ "${1:-}" = inventory ] && exit 0
cargo run -q -p black-box-tests --bin bench-device-request

# deviceconnect: memory per idle device websocket and terminal frame relay RTT, measured on the
# real `deviceconnect` binary (release build, as deployed) as a child process holding 10,000
# device sockets (BENCH_DEVICES). The bench holds the client ends, so each of the two processes
# needs more than 10,000 open files: raise the limits (the hard one too, when root).
DC_FILES=$(( ${BENCH_DEVICES:-10000} + 4096 ))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$DC_FILES" ]; then
  ulimit -Hn "$DC_FILES" 2>/dev/null || true
fi
if [ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt "$DC_FILES" ]; then
  ulimit -Sn "$DC_FILES" 2>/dev/null || ulimit -Sn "$(ulimit -Hn)"
fi
DEVICECONNECT_BIN=$DC_TARGET/release/deviceconnect \
  cargo run -q -p black-box-tests --bin bench-deviceconnect

# Cold start of every Lambda function: its release `bootstrap` (thin LTO, as deployed) spawned
# against a local Lambda Runtime API with the template's environment, 5 cold starts each:
# init and first-request time, response status, binary size, sockets open during init.
# Budget: init under 20 ms, no network call in init (deviceconnect is a container, not here).
cargo run -q -p black-box-tests --bin bench-cold-start

# The artifact reader on a 256 MiB artifact, next to `mender-artifact read`/`validate` and
# `openssl dgst -sha256` of the same file: artifact-bench runs each ART_RUNS times (default 5)
# and prints the best times, MB/s, the reader/openssl throughput ratio and its peak RSS
# (release build of the reader; the file is made once and kept).
ART_DIR=${MENDER_RS_HOME:-$HOME/.cache/mender-rs}/bench
mkdir -p "$ART_DIR"
ART=$ART_DIR/256mib.mender
if [ ! -f "$ART" ]; then
  head -c $((256 * 1024 * 1024)) /dev/urandom > "$ART_DIR/payload.bin"
  mender-artifact write module-image -T single-file -n bench-256 -t bench --compression none \
    -f "$ART_DIR/payload.bin" -o "$ART"
  rm -f "$ART_DIR/payload.bin"
fi
echo "artifact: $ART ($(stat -c %s "$ART") bytes, uncompressed payload)"
"$ART_TARGET/release/artifact-bench" "$ART" "${ART_RUNS:-5}"
