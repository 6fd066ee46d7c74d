#!/usr/bin/env bash
# `make test` (and CI): installs what the tests need, starts a separate set of emulators
# (STACK_NAME=test), lints the template (cfn-lint, sam validate --lint), runs every test with
# cargo-nextest (tests/tests/black_box/template.rs: template vs code), then stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mender-rs/target}
started=$(date +%s)
scripts/deps.sh all
# The template, linted offline before anything is built (SAM CLI and cfn-lint from deps.sh iac).
sam_venv=${MENDER_RS_HOME:-$HOME/.cache/mender-rs}/sam/bin
export SAM_CLI_TELEMETRY=0
"$sam_venv/cfn-lint" infra/template.yaml
"$sam_venv/sam" validate --lint --template-file infra/template.yaml --region eu-west-1
echo "template: cfn-lint and sam validate --lint passed"
python3 scripts/coverage.py --check
export STACK_NAME=test
scripts/stack.sh stop
scripts/stack.sh start
trap 'scripts/stack.sh stop' EXIT
eval "$(scripts/stack.sh env)"
cargo nextest run --workspace --no-fail-fast "$@"
echo "make test: all passed in $(( $(date +%s) - started )) s"
