#!/usr/bin/env bash
# Local development stack: real servers standing in for the AWS services.
#
#   infra/local/dev.sh up        install what is missing, start the stack, provision it, start the model
#                                server, the API and the S3-event relay, print endpoints
#   infra/local/dev.sh test      run the whole test suite (starts the stack for the run if it is not up)
#   infra/local/dev.sh status    health of each stand-in
#   infra/local/dev.sh env       the variables that point the AWS SDKs at the stack (eval-able)
#   infra/local/dev.sh down      stop everything (data is kept; add --wipe to delete it)
#
# Stand-ins: PostgreSQL 15 (RDS), s3s-fs 0.14.1 (S3), dynalite 4 (DynamoDB),
# SecantusDB (DocumentDB, MongoDB wire protocol). The real SDK clients reach
# them through the standard AWS_ENDPOINT_URL_* variables; nothing in the
# code knows it is local.
#
# The platform's own processes (`up` only): the model server (generated
# DenseNet-121 weights, standing in for the SageMaker endpoint), the API, and
# `infer relay`, which delivers the S3 ObjectCreated events s3s-fs cannot
# send to the same handler the S3-triggered Lambda runs.
#
# Settings (environment): CXR_STACK_DIR (data, default .stack), CXR_TOOLS_DIR
# (installed tools, default ~/.cache/cxr-tools), CXR_PG_PORT (55432),
# CXR_S3_PORT (59000), CXR_DYNAMODB_PORT (58000), CXR_DOCUMENTDB_PORT (57017),
# CXR_MODEL_PORT (58080), CXR_API_PORT (3000).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK_DIR=${CXR_STACK_DIR:-$ROOT/.stack}
TOOLS_DIR=${CXR_TOOLS_DIR:-$HOME/.cache/cxr-tools}
PG_PORT=${CXR_PG_PORT:-55432}
S3_PORT=${CXR_S3_PORT:-59000}
DYNAMODB_PORT=${CXR_DYNAMODB_PORT:-58000}
DOCUMENTDB_PORT=${CXR_DOCUMENTDB_PORT:-57017}
MODEL_PORT=${CXR_MODEL_PORT:-58080}
API_PORT=${CXR_API_PORT:-3000}

S3S_FS_VERSION=0.14.1
DYNALITE_VERSION=4.0.0
SECANTUSDB_VERSION=0.7.0b3

# Credentials of the local stand-ins only; they guard nothing outside this machine.
ACCESS_KEY=cxr-local-access-key
SECRET_KEY=cxr-local-secret-key
PG_USER=cxr
PG_PASSWORD=cxr-local-password
PG_DATABASE=cxr

# PostgreSQL refuses to run as root, so as root it runs as the `postgres`
# user, which must be able to reach its files. In a checkout that user cannot
# enter (say a 0700 temporary directory) they live in a directory of its own,
# named after the stack directory, instead of under it.
PG_HOME=$STACK_DIR/pg
if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$(dirname "$STACK_DIR")" 2>/dev/null; then
  PG_HOME=/var/lib/cxr-stack/$(printf '%s' "$STACK_DIR" | sha256sum | cut -c1-16)
fi
PG_DATA=$PG_HOME/data

log() { printf '\033[1m[dev +%ss]\033[0m %s\n' "$SECONDS" "$*" >&2; }
die() { printf '\033[1;31m[dev] error:\033[0m %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root to run: $*"; fi; }

apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

pg_bin() {
  local d
  for d in /usr/lib/postgresql/15/bin "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")"; do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  done
  return 1
}

# ---------------------------------------------------------------- install
install_tools() {
  local missing=()
  pg_bin >/dev/null || missing+=(postgresql-15)
  command -v psql >/dev/null || missing+=(postgresql-client-15)
  command -v curl >/dev/null || missing+=(curl)
  command -v node >/dev/null || missing+=(nodejs npm)
  command -v runuser >/dev/null || missing+=(util-linux)
  if [ ${#missing[@]} -gt 0 ]; then log "installing Debian packages: ${missing[*]}"; apt_install "${missing[@]}"; fi

  if ! command -v s3s-fs >/dev/null || [ "$(s3s-fs --version 2>/dev/null | awk '{print $2}')" != "$S3S_FS_VERSION" ]; then
    log "installing s3s-fs $S3S_FS_VERSION (cargo, about 2-3 minutes)"
    cargo install --quiet --locked "s3s-fs@$S3S_FS_VERSION" --features binary
  fi

  if [ ! -f "$TOOLS_DIR/node/node_modules/dynalite/package.json" ] ||
     ! grep -q "\"version\": \"$DYNALITE_VERSION\"" "$TOOLS_DIR/node/node_modules/dynalite/package.json"; then
    log "installing dynalite $DYNALITE_VERSION (npm)"
    mkdir -p "$TOOLS_DIR/node"
    (cd "$TOOLS_DIR/node" && npm install --silent --no-audit --no-fund "dynalite@$DYNALITE_VERSION" >/dev/null)
  fi

  if [ ! -x "$TOOLS_DIR/venv/bin/secantusd-py" ] ||
     [ "$("$TOOLS_DIR/venv/bin/pip" show secantusdb 2>/dev/null | sed -n 's/^Version: //p')" != "$SECANTUSDB_VERSION" ]; then
    log "installing SecantusDB $SECANTUSDB_VERSION (pip)"
    python3 -m venv "$TOOLS_DIR/venv"
    "$TOOLS_DIR/venv/bin/pip" install --quiet --disable-pip-version-check "secantusdb==$SECANTUSDB_VERSION" "pymongo>=4,<5"
  fi

  if [ ! -x "$TOOLS_DIR/pytools/bin/python" ] || ! "$TOOLS_DIR/pytools/bin/python" -c "import pycocotools, openapi_spec_validator" 2>/dev/null; then
    log "installing pycocotools and openapi-spec-validator (pip; the COCO export and the OpenAPI document are checked with them)"
    python3 -m venv "$TOOLS_DIR/pytools"
    "$TOOLS_DIR/pytools/bin/pip" install --quiet --disable-pip-version-check "pycocotools>=2.0.7,<3" "openapi-spec-validator>=0.7,<0.8"
  fi

  if [ ! -x "$TOOLS_DIR/lint/bin/cfn-lint" ]; then
    log "installing cfn-lint (pip)"
    python3 -m venv "$TOOLS_DIR/lint"
    "$TOOLS_DIR/lint/bin/pip" install --quiet --disable-pip-version-check "cfn-lint>=1,<2"
  fi

  if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install --quiet --locked cargo-nextest
  fi
}

# ---------------------------------------------------------------- processes
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Starts a daemon in its own session so it outlives this script.
spawn() {
  local name=$1; shift
  setsid nohup "$@" >"$STACK_DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STACK_DIR/run/$name.pid"
}

wait_until() {
  local what=$1 tries=$2; shift 2
  local i
  for ((i = 0; i < tries; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  die "$what did not become healthy; see $STACK_DIR/logs/"
}

http_answers() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$@" | grep -qv '^000$'; }

healthy_postgres() { "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }
healthy_s3() { http_answers "http://127.0.0.1:$S3_PORT/"; }
healthy_dynamodb() {
  http_answers -X POST -H 'X-Amz-Target: DynamoDB_20120810.ListTables' \
    -H 'Content-Type: application/x-amz-json-1.0' -d '{}' "http://127.0.0.1:$DYNAMODB_PORT/"
}
healthy_documentdb() {
  "$TOOLS_DIR/venv/bin/python" - "$DOCUMENTDB_PORT" <<'EOF'
import sys, pymongo
pymongo.MongoClient(f"mongodb://127.0.0.1:{sys.argv[1]}/?directConnection=true",
                    serverSelectionTimeoutMS=1500).admin.command("ping")
EOF
}

pg_run() {
  # PostgreSQL refuses to run as root: run its programs as the postgres user.
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A server from another checkout (or anything else) on our port would be
# used without our data or credentials: refuse instead.
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
refuse_foreign() { die "port $2 is in use by a process this stack did not start; stop it or set $3 to another port (for $1)"; }

start_postgres() {
  local data=$PG_DATA bin
  bin=$(pg_bin)
  if [ -f "$data/postmaster.pid" ] && kill -0 "$(head -1 "$data/postmaster.pid")" 2>/dev/null && healthy_postgres; then
    log "postgres    already running on 127.0.0.1:$PG_PORT"; return
  fi
  port_taken "$PG_PORT" && refuse_foreign postgres "$PG_PORT" CXR_PG_PORT
  if [ ! -f "$data/PG_VERSION" ]; then
    log "initialising PostgreSQL data directory"
    rm -rf "$data"; mkdir -p "$data"
    local pwfile=$PG_HOME/pgpass
    printf '%s\n' "$PG_PASSWORD" >"$pwfile"
    if [ "$(id -u)" = 0 ]; then chown -R postgres: "$PG_HOME"; fi
    pg_run "$bin/initdb" -D "$data" -U "$PG_USER" --pwfile="$pwfile" --auth-local=trust \
      --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$STACK_DIR/logs/initdb.log"
    rm -f "$pwfile"
  fi
  # A test stack: durability off (fsync) for speed; many connections for parallel tests.
  pg_run "$bin/pg_ctl" -D "$data" -l "$PG_HOME/postgres.log" -w -t 30 start -o \
    "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >/dev/null
  wait_until postgres 120 healthy_postgres
  if [ "$(PGPASSWORD=$PG_PASSWORD psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc \
      "SELECT count(*) FROM pg_database WHERE datname = '$PG_DATABASE'")" = 0 ]; then
    PGPASSWORD=$PG_PASSWORD psql -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -c "CREATE DATABASE $PG_DATABASE"
  fi
  log "postgres    started on 127.0.0.1:$PG_PORT"
}

start_s3() {
  if pid_alive "$STACK_DIR/run/s3.pid" && healthy_s3; then log "s3 (s3s-fs) already running on 127.0.0.1:$S3_PORT"; return; fi
  port_taken "$S3_PORT" && refuse_foreign s3s-fs "$S3_PORT" CXR_S3_PORT
  mkdir -p "$STACK_DIR/s3"
  spawn s3 s3s-fs --host 127.0.0.1 --port "$S3_PORT" --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" "$STACK_DIR/s3"
  wait_until s3s-fs 80 healthy_s3
  log "s3 (s3s-fs) started on 127.0.0.1:$S3_PORT"
}

start_dynamodb() {
  if pid_alive "$STACK_DIR/run/dynamodb.pid" && healthy_dynamodb; then log "dynamodb    already running on 127.0.0.1:$DYNAMODB_PORT"; return; fi
  port_taken "$DYNAMODB_PORT" && refuse_foreign dynalite "$DYNAMODB_PORT" CXR_DYNAMODB_PORT
  mkdir -p "$STACK_DIR/dynamodb"
  # Table operations complete at once instead of after dynalite's simulated delay.
  spawn dynamodb node "$TOOLS_DIR/node/node_modules/dynalite/cli.js" --host 127.0.0.1 --port "$DYNAMODB_PORT" \
    --path "$STACK_DIR/dynamodb" --createTableMs 0 --deleteTableMs 0 --updateTableMs 0
  wait_until dynalite 80 healthy_dynamodb
  log "dynamodb    started on 127.0.0.1:$DYNAMODB_PORT"
}

start_documentdb() {
  if pid_alive "$STACK_DIR/run/documentdb.pid" && healthy_documentdb; then log "documentdb  already running on 127.0.0.1:$DOCUMENTDB_PORT"; return; fi
  port_taken "$DOCUMENTDB_PORT" && refuse_foreign secantusdb "$DOCUMENTDB_PORT" CXR_DOCUMENTDB_PORT
  mkdir -p "$STACK_DIR/documentdb"
  spawn documentdb "$TOOLS_DIR/venv/bin/secantusd-py" --host 127.0.0.1 --port "$DOCUMENTDB_PORT" \
    --storage-path "$STACK_DIR/documentdb" --log-level WARNING
  wait_until secantusdb 120 healthy_documentdb
  log "documentdb  started on 127.0.0.1:$DOCUMENTDB_PORT"
}

stop_pidfile() {
  local name=$1 file=$STACK_DIR/run/$1.pid i
  pid_alive "$file" || { rm -f "$file"; return 0; }
  local pid; pid=$(cat "$file")
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$file"
  log "$name stopped"
}

# ---------------------------------------------------------------- platform processes
healthy_model() { curl -sf -m 2 -o /dev/null "http://127.0.0.1:$MODEL_PORT/ping"; }
healthy_api() { curl -sf -m 2 -o /dev/null "http://127.0.0.1:$API_PORT/v1/health"; }
healthy_relay() { pid_alive "$STACK_DIR/run/relay.pid"; }

start_platform() {
  local bin=$ROOT/target/debug
  if [ ! -f "$STACK_DIR/model/model.json" ]; then
    log "writing a model with generated (untrained) DenseNet-121 weights to $STACK_DIR/model"
    "$bin/model-server" generate-model --kind densenet121-xrv --dir "$STACK_DIR/model" >/dev/null
  fi
  if pid_alive "$STACK_DIR/run/model.pid" && healthy_model; then
    log "model server already running on 127.0.0.1:$MODEL_PORT"
  else
    port_taken "$MODEL_PORT" && refuse_foreign model-server "$MODEL_PORT" CXR_MODEL_PORT
    spawn model "$bin/model-server" serve --model-dir "$STACK_DIR/model" --addr "127.0.0.1:$MODEL_PORT"
    wait_until "model server (warm-up)" 720 healthy_model
    log "model server started on 127.0.0.1:$MODEL_PORT"
  fi
  if pid_alive "$STACK_DIR/run/api.pid" && healthy_api; then
    log "api         already running on 127.0.0.1:$API_PORT"
  else
    port_taken "$API_PORT" && refuse_foreign api "$API_PORT" CXR_API_PORT
    spawn api "$bin/api"
    wait_until api 120 healthy_api
    log "api         started on http://127.0.0.1:$API_PORT"
  fi
  if healthy_relay; then
    log "relay       already running"
  else
    spawn relay "$bin/infer" relay
    log "relay       started (delivers S3 ObjectCreated events to the infer handler)"
  fi
}

stop_stack() {
  stop_pidfile relay
  stop_pidfile api
  stop_pidfile model
  stop_pidfile documentdb
  stop_pidfile dynamodb
  stop_pidfile s3
  if [ -f "$PG_DATA/postmaster.pid" ]; then
    pg_run "$(pg_bin)/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
    log "postgres stopped"
  fi
}

write_env() {
  cat >"$STACK_DIR/env" <<EOF
# Generated by infra/local/dev.sh: points the AWS SDKs and drivers at the local stack.
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_EC2_METADATA_DISABLED=true
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$S3_PORT
export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$DYNAMODB_PORT
export S3_FORCE_PATH_STYLE=true
export IMAGES_BUCKET=cxr-images
export BACKUP_BUCKET=cxr-backups
export RESULTS_TABLE=cxr-results
export DATABASE_URL=postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DATABASE
export DOCUMENTDB_URI=mongodb://127.0.0.1:$DOCUMENTDB_PORT/?directConnection=true
export DOCUMENTDB_DATABASE=cxr_warehouse
export COCO_DESTINATION=s3://cxr-data-mart/coco
export DEIDENTIFY_SECRET=local-development-only-deidentify-secret
export CXR_PYTHON=$TOOLS_DIR/pytools/bin/python
export API_DEV_TOKENS=local-dev-token-alice=alice,local-dev-token-bob00=bob
export API_ADDR=127.0.0.1:$API_PORT
export AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=http://127.0.0.1:$MODEL_PORT
export MODEL_ENDPOINT_NAME=cxr-local
EOF
}

start_stack() {
  mkdir -p "$STACK_DIR/run" "$STACK_DIR/logs"
  start_postgres
  start_s3
  start_dynamodb
  start_documentdb
  write_env
}

stack_healthy() {
  [ -f "$PG_DATA/postmaster.pid" ] && pid_alive "$STACK_DIR/run/s3.pid" &&
    pid_alive "$STACK_DIR/run/dynamodb.pid" && pid_alive "$STACK_DIR/run/documentdb.pid" &&
    healthy_postgres && healthy_s3 && healthy_dynamodb && healthy_documentdb
}

status() {
  local s
  for s in postgres s3 dynamodb documentdb model api relay; do
    if "healthy_$s" >/dev/null 2>&1; then printf '  %-11s healthy\n' "$s"; else printf '  %-11s DOWN\n' "$s"; fi
  done
}

# ---------------------------------------------------------------- commands
cmd_up() {
  install_tools
  start_stack
  # shellcheck disable=SC1091
  source "$STACK_DIR/env"
  # One cargo invocation for every binary `up` runs: more parallelism than
  # building the admin tool and the platform's processes one after another.
  log "building cxr-admin, the model server, the API and the inference handler (first build: several minutes)"
  (cd "$ROOT" && cargo build --quiet -p cxr-admin -p cxr-model-server -p cxr-api -p cxr-infer)
  log "provisioning (migrations, bucket, table)"
  "$ROOT/target/debug/cxr-admin" provision
  "$ROOT/target/debug/cxr-admin" check
  start_platform
  cat >&2 <<EOF

Local stack is up. Data: $STACK_DIR (logs in $STACK_DIR/logs)
  PostgreSQL (RDS)        $DATABASE_URL
  S3 (s3s-fs)             $AWS_ENDPOINT_URL_S3   buckets $IMAGES_BUCKET, $BACKUP_BUCKET
  DynamoDB (dynalite)     $AWS_ENDPOINT_URL_DYNAMODB   table $RESULTS_TABLE
  DocumentDB (SecantusDB) $DOCUMENTDB_URI   database $DOCUMENTDB_DATABASE
  Model server (SageMaker) $AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME   endpoint $MODEL_ENDPOINT_NAME (generated weights)
  API                     http://$API_ADDR/v1   (openapi: /v1/openapi.json; token: local-dev-token-alice)
  S3-event relay          running (logs: $STACK_DIR/logs/relay.log)

Use it from a shell:   source $STACK_DIR/env
Stop it:               infra/local/dev.sh down
EOF
}

cmd_test() {
  install_tools
  local started=
  if ! stack_healthy 2>/dev/null; then
    started=1
    start_stack
    # Leave the machine as we found it (CI runs on a clean checkout).
    trap 'stop_stack' EXIT
  else
    write_env
  fi
  # shellcheck disable=SC1091
  source "$STACK_DIR/env"
  # Databases made by earlier test runs (each test makes its own).
  PGPASSWORD=$PG_PASSWORD psql -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc \
    "SELECT 'DROP DATABASE \"' || datname || '\";' FROM pg_database WHERE datname LIKE 'test\_%'" |
    PGPASSWORD=$PG_PASSWORD psql -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres >/dev/null
  cd "$ROOT"
  log "linting the SAM template"
  "$TOOLS_DIR/lint/bin/cfn-lint" infra/template.yaml
  local profile=()
  [ -n "${CI:-}" ] && profile=(--profile ci)
  cargo nextest run --workspace --no-fail-fast "${profile[@]}" "$@"
  if [ -n "$started" ]; then log "stopping the stack this run started"; fi
}

case "${1:-}" in
  up) cmd_up ;;
  test) shift; cmd_test "$@" ;;
  down)
    stop_stack
    if [ "${2:-}" = "--wipe" ]; then rm -rf "$STACK_DIR" "$PG_HOME"; log "deleted $STACK_DIR and $PG_HOME"; fi ;;
  status) status ;;
  env) [ -f "$STACK_DIR/env" ] || write_env; cat "$STACK_DIR/env" ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
