#!/usr/bin/env bash
# `make bench`: starts the test emulators, runs the benchmark commands, prints their figures.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mender-rs/target}
scripts/deps.sh emulators
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
# real `deviceconnect` binary (debug build) as a child process holding 2,000 device sockets
# (this process holds the client ends: both need more than the usual 1,024 open files).
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 8192 ]; then
  ulimit -Sn 8192 2>/dev/null || ulimit -Sn "$(ulimit -Hn)"
fi
cargo build -q -p deviceconnect --bin deviceconnect
cargo run -q -p black-box-tests --bin bench-deviceconnect

# The artifact reader on a 256 MiB artifact, next to `mender-artifact read` and plain sha256 of
# the same file (release build of the reader; the file is made once and kept).
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
cargo build -q --release -p mender-artifact --bin artifact-bench
"$CARGO_TARGET_DIR/release/artifact-bench" "$ART"
timed() { # label command...
  local label=$1; shift
  local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" -v l="$label" 'BEGIN { printf "%s: %.3f s\n", l, b - a }'
}
timed "mender-artifact read (header parse)" mender-artifact read "$ART"
timed "mender-artifact validate (full checksums)" mender-artifact validate "$ART"
timed "openssl dgst -sha256 of the same file" openssl dgst -sha256 "$ART"
