#!/usr/bin/env bash
# `make soak`: the deviceconnect black-box tests (the real mender-connect terminal, file
# transfer and port forwarding included) SOAK_RUNS times in a row (default 10) while
# stress-ng keeps every core busy, on emulators of their own. Prints each run's result and the
# count; fails if any run failed. Usage: scripts/soak.sh [nextest args...]; names after `--`
# narrow the set (e.g. `scripts/soak.sh -- terminal`), a further -E would widen it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mender-rs/target}
runs=${SOAK_RUNS:-10}
scripts/deps.sh all
scripts/deps.sh load
# its own emulators (ports 48000/48014/45000): a soak can run beside `make test`
export STACK_NAME=soak
scripts/stack.sh stop
scripts/stack.sh start
eval "$(scripts/stack.sh env)"
# The deviceconnect and deviceconnect_hardening modules of the black_box test binary.
tests=(-p black-box-tests --test black_box -E 'test(/^deviceconnect(_hardening)?::/)')
cargo nextest run --no-run "${tests[@]}" "$@" >/dev/null
stress-ng --cpu "$(nproc)" --quiet &
stress=$!
trap 'kill "$stress" 2>/dev/null; wait "$stress" 2>/dev/null; scripts/stack.sh stop' EXIT
passed=0
for run in $(seq "$runs"); do
  started=$(date +%s)
  if cargo nextest run --no-fail-fast "${tests[@]}" "$@" >"/tmp/soak-$run.log" 2>&1; then
    passed=$((passed + 1))
    result=passed
  else
    result="FAILED (/tmp/soak-$run.log)"
  fi
  echo "soak run $run/$runs under stress-ng --cpu $(nproc): $(grep -o '[0-9]* tests run: .*' "/tmp/soak-$run.log" | tail -1) in $(( $(date +%s) - started )) s: $result"
done
echo "soak: $passed of $runs runs passed"
[ "$passed" = "$runs" ]
