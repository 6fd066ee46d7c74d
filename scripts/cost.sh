#!/usr/bin/env bash
# `make cost`: measures what the two requests of an idle device cost in calls and time
# (bench-device-request against the emulators, STACK_NAME=bench), then prints the monthly AWS
# cost for 1,000 and 100,000 devices from those figures (scripts/cost.py: prices as named
# constants with their date).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mender-rs/target}
scripts/deps.sh emulators
export STACK_NAME=bench
trap 'scripts/stack.sh stop' EXIT
scripts/stack.sh start
eval "$(scripts/stack.sh env)"
figures=$(mktemp -t cost-figures.XXXXXX.json)
BENCH_JSON=$figures cargo run -q -p black-box-tests --bin bench-device-request >/dev/null
python3 scripts/cost.py "$figures" 1000 100000
rm -f "$figures"
