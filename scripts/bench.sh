#!/usr/bin/env bash
# `make bench`: starts the test emulators, runs the benchmark commands, prints their figures.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mender-rs/target}
scripts/deps.sh emulators
export STACK_NAME=test
trap 'scripts/stack.sh stop' EXIT
scripts/stack.sh start
eval "$(scripts/stack.sh env)"
cargo run -q -p black-box-tests --bin bench-device-request
