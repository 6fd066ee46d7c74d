#!/usr/bin/env bash
# `make run`: installs what is missing, starts the emulators, then the whole API on
# https://localhost:8443 with the queue consumers. Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mender-rs/target}
scripts/deps.sh emulators
export STACK_NAME=local
scripts/stack.sh start
trap 'scripts/stack.sh stop' EXIT
eval "$(scripts/stack.sh env)"
cargo build -q -p local-stack --bin mender-local
"$CARGO_TARGET_DIR/debug/mender-local" serve &
server=$!
trap 'kill -INT $server 2>/dev/null; wait $server 2>/dev/null; scripts/stack.sh stop' EXIT
trap 'exit 130' INT TERM
wait $server
