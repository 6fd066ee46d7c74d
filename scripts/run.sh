#!/usr/bin/env bash
# `make run`: installs what is missing, starts the emulators, then the whole API on
# https://localhost:8443 with the queue consumers. Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mender-rs/target}
scripts/deps.sh emulators
export STACK_NAME=local
trap 'scripts/stack.sh stop' EXIT
scripts/stack.sh start
eval "$(scripts/stack.sh env)"
cargo build -q -p local-stack --bin mender-local
# In the foreground: Ctrl-C reaches it, it shuts down, then the EXIT trap stops the emulators.
"$CARGO_TARGET_DIR/debug/mender-local" serve
