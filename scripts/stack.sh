#!/usr/bin/env bash
# Starts and stops the offline AWS emulators on 127.0.0.1 and prints their environment:
#   DynamoDB Local (Java), s3s-fs (S3, checks SigV4 and presigned expiry), moto (SQS).
# Independent sets exist so tests never touch the data of `make run`:
#   STACK_NAME=local (default; ports 8000/8014/5000) and STACK_NAME=test (18000/18014/15000);
#   `make bench` uses STACK_NAME=bench (28000/28014/25000), `make soak` STACK_NAME=soak
#   (48000/48014/45000), so a soak can run beside `make test`.
# The data of STACK_NAME=local (`make run`) is kept across restarts: DynamoDB Local writes to
# $RUN/ddb (-dbPath), S3 objects stay in $RUN/s3data; `make reset` empties them. The other sets
# live in memory and their S3 directory is removed on stop. PERSIST=1/0 overrides.
# Usage: scripts/stack.sh start|stop|env|status
set -euo pipefail
HOME_DIR=${MENDER_RS_HOME:-$HOME/.cache/mender-rs}
STACK_NAME=${STACK_NAME:-local}
RUN=$HOME_DIR/run-$STACK_NAME
case $STACK_NAME in
  test) DDB_PORT=${DDB_PORT:-18000}; S3_PORT=${S3_PORT:-18014}; MOTO_PORT=${MOTO_PORT:-15000} ;;
  bench) DDB_PORT=${DDB_PORT:-28000}; S3_PORT=${S3_PORT:-28014}; MOTO_PORT=${MOTO_PORT:-25000} ;;
  soak) DDB_PORT=${DDB_PORT:-48000}; S3_PORT=${S3_PORT:-48014}; MOTO_PORT=${MOTO_PORT:-45000} ;;
  *) DDB_PORT=${DDB_PORT:-8000}; S3_PORT=${S3_PORT:-8014}; MOTO_PORT=${MOTO_PORT:-5000} ;;
esac
export DDB_LOCAL_TELEMETRY=0
mkdir -p "$RUN"
log() { echo "[stack:$STACK_NAME] $*" >&2; }
if [ "$STACK_NAME" = local ]; then PERSIST=${PERSIST:-1}; else PERSIST=${PERSIST:-0}; fi

wait_port() { # name port
  for _ in $(seq 1 300); do
    if curl -s -m1 -o /dev/null "http://127.0.0.1:$2/" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$1 did not come up on :$2 (see $RUN/$1.log)"; return 1
}

start_bg() { # name cmd...
  local name=$1; shift
  if [ -f "$RUN/$name.pid" ] && kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; then return 0; fi
  nohup "$@" >"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
}

start() {
  local jar; jar=$(ls "$HOME_DIR"/ddb/package/lib/*/DynamoDBLocal.jar 2>/dev/null | head -1)
  [ -n "$jar" ] || { log "DynamoDB Local missing: run scripts/deps.sh"; exit 1; }
  local storage=(-inMemory)
  if [ "$PERSIST" = 1 ]; then mkdir -p "$RUN/ddb"; storage=(-dbPath "$RUN/ddb"); fi
  (cd "$(dirname "$jar")" && start_bg dynamodb java -Xmx"${DDB_HEAP:-256m}" -Djava.library.path=./DynamoDBLocal_lib \
      -jar DynamoDBLocal.jar "${storage[@]}" -sharedDb -disableTelemetry -port "$DDB_PORT")
  mkdir -p "$RUN/s3data"
  start_bg s3s "$HOME_DIR/bin/s3s-fs" --host 127.0.0.1 --port "$S3_PORT" --access-key test --secret-key test "$RUN/s3data"
  start_bg moto "$HOME_DIR/moto/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT"
  wait_port s3s "$S3_PORT"; wait_port moto "$MOTO_PORT"; wait_port dynamodb "$DDB_PORT"
  log "emulators up (DynamoDB :$DDB_PORT, S3 :$S3_PORT, SQS :$MOTO_PORT)"
}

stop() {
  for f in "$RUN"/*.pid; do
    [ -f "$f" ] || continue
    kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
  [ "$PERSIST" = 1 ] || rm -rf "$RUN/s3data"
}

env_() {
  echo "export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true"
  echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT"
  echo "export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$DDB_PORT"
  echo "export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$S3_PORT"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  env) env_ ;;
  status) for f in "$RUN"/*.pid; do [ -f "$f" ] && { n=$(basename "$f" .pid); p=$(cat "$f"); kill -0 "$p" 2>/dev/null && echo "$n $p up" || echo "$n $p dead"; }; done ;;
  *) echo "usage: $0 start|stop|env|status" >&2; exit 2 ;;
esac
