#!/usr/bin/env bash
# `make test` (and CI): installs what the tests need, starts a separate set of emulators
# (STACK_NAME=test), runs every test with cargo-nextest and the template checks, then stops
# what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mender-rs/target}
started=$(date +%s)
scripts/deps.sh all
export STACK_NAME=test
scripts/stack.sh stop
scripts/stack.sh start
trap 'scripts/stack.sh stop' EXIT
eval "$(scripts/stack.sh env)"
cargo nextest run --workspace --no-fail-fast "$@"
echo "make test: all passed in $(( $(date +%s) - started )) s"
