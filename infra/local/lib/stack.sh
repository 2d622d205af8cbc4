# shellcheck shell=bash
# Sourced by infra/local/dev.sh (its settings and helpers are in scope).
# The stand-ins' processes: spawning and supervising daemons, health checks, start,
# stop, the env file and status.
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
  # s3s-fs keeps a bucket as a directory: the DVC remote's exists from the start.
  mkdir -p "$STACK_DIR/s3/$DVC_BUCKET"
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


stop_postgres() {
  if [ -f "$PG_DATA/postmaster.pid" ]; then
    pg_run "$(pg_bin)/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
    log "postgres stopped"
  fi
}

# One service, stopped or started alone (the fault suite does this during a
# load; an operator can too). The names are those `status` prints.
SERVICES="postgres s3 dynamodb documentdb model api relay"
one_service() {
  local action=$1 name=${2:-}
  case " $SERVICES " in *" $name "*) ;; *) die "usage: dev.sh $action {${SERVICES// /|}}" ;; esac
  mkdir -p "$STACK_DIR/run" "$STACK_DIR/logs"
  if [ "$action" = stop ]; then
    if [ "$name" = postgres ]; then stop_postgres; else stop_pidfile "$name"; fi
  else
    write_env
    # shellcheck disable=SC1091
    source "$STACK_DIR/env"
    "start_$name"
  fi
}

stop_stack() {
  stop_pidfile mlflow
  stop_pidfile nginx
  stop_pidfile oidc
  stop_pidfile relay
  stop_pidfile api
  stop_pidfile model
  stop_pidfile documentdb
  stop_pidfile dynamodb
  stop_pidfile s3
  stop_postgres
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
export API_DEV_TOKENS=local-dev-token-alice=alice,local-dev-token-bob00=bob,$CONTRACT_TOKEN=$CONTRACT_OWNER,$FAULTS_TOKEN=$FAULTS_OWNER
export API_ADDR=127.0.0.1:$API_PORT
export CXR_FAULTS_OWNER=$FAULTS_OWNER
export CXR_FAULTS_TOKEN=$FAULTS_TOKEN
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
  for s in postgres s3 dynamodb documentdb model api relay oidc web; do
    if "healthy_$s" >/dev/null 2>&1; then printf '  %-11s healthy\n' "$s"; else printf '  %-11s DOWN\n' "$s"; fi
  done
}
