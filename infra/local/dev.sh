#!/usr/bin/env bash
# Local development stack: real servers standing in for the AWS services.
#
#   infra/local/dev.sh up        install what is missing, start the stack, provision it, start the model
#                                server, the API, the S3-event relay, the OpenID provider and the web
#                                app (nginx), print the app's URL and the endpoints
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
# send to the same handler the S3-triggered Lambda runs. The web app: a
# standards OpenID provider standing in for Cognito (frontend/dev/
# oidc-provider.mjs, users alice and bob), and nginx serving the built app on
# one origin with /v1 passed to the API, plus a CORS front before s3s-fs
# (which has no CORS) that browsers' presigned uploads go through.
#
# Settings (environment): CXR_STACK_DIR (data, default .stack), CXR_TOOLS_DIR
# (installed tools, default ~/.cache/cxr-tools), CXR_PG_PORT (55432),
# CXR_S3_PORT (59000), CXR_DYNAMODB_PORT (58000), CXR_DOCUMENTDB_PORT (57017),
# CXR_MODEL_PORT (58080), CXR_API_PORT (3000), CXR_APP_PORT (8000), CXR_S3_CORS_PORT
# (59001), CXR_OIDC_PORT (58090).
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
APP_PORT=${CXR_APP_PORT:-8000}
S3_CORS_PORT=${CXR_S3_CORS_PORT:-59001}
OIDC_PORT=${CXR_OIDC_PORT:-58090}
APP_URL=http://127.0.0.1:$APP_PORT
OIDC_ISSUER=http://127.0.0.1:$OIDC_PORT
OIDC_CLIENT_ID=cxr-web-local

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
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
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

  # The web app's packages (pinned in package-lock.json), again whenever the lock changes.
  if [ ! -f "$ROOT/frontend/node_modules/.package-lock.json" ] ||
     ! cmp -s "$ROOT/frontend/package-lock.json" "$ROOT/frontend/node_modules/.cxr-installed-lock"; then
    log "installing the web app's npm packages (npm ci)"
    (cd "$ROOT/frontend" && npm ci --silent --no-audit --no-fund >/dev/null && cp package-lock.json node_modules/.cxr-installed-lock)
  fi
}

# The browser the web app's tests drive (Debian's Chromium; nothing is downloaded).
install_browser() {
  if [ ! -x /usr/bin/chromium ]; then log "installing chromium (Debian)"; apt_install chromium; fi
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
    # Browsers reach S3 through the CORS front, and sign in at the local
    # OpenID provider, whose JWTs the API verifies as API Gateway would.
    spawn api env S3_PRESIGN_ENDPOINT_URL="http://127.0.0.1:$S3_CORS_PORT" OIDC_ISSUER="$OIDC_ISSUER" \
      OIDC_AUDIENCE="$OIDC_CLIENT_ID" "$bin/api"
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

# ---------------------------------------------------------------- web app
healthy_oidc() { curl -sf -m 2 -o /dev/null "$OIDC_ISSUER/.well-known/openid-configuration"; }
healthy_web() { curl -sf -m 2 -o /dev/null "$APP_URL/config.json"; }
nginx_bin() { command -v nginx || echo /usr/sbin/nginx; }

write_nginx_conf() {
  mkdir -p "$STACK_DIR/nginx/tmp" "$STACK_DIR/web"
  # One build serves every stage: the local settings are served beside it.
  cat >"$STACK_DIR/web/config.json" <<EOF
{ "apiUrl": "", "oidcAuthority": "$OIDC_ISSUER", "oidcClientId": "$OIDC_CLIENT_ID" }
EOF
  local user_line=""
  if [ "$(id -u)" = 0 ]; then user_line="user root;"; fi
  cat >"$STACK_DIR/nginx/nginx.conf" <<EOF
# Generated by infra/local/dev.sh.
$user_line
daemon off;
worker_processes 1;
pid $STACK_DIR/nginx/nginx.pid;
error_log $STACK_DIR/logs/nginx-error.log warn;
events { worker_connections 512; }
http {
  include /etc/nginx/mime.types;
  access_log $STACK_DIR/logs/nginx-access.log;
  client_body_temp_path $STACK_DIR/nginx/tmp/body;
  proxy_temp_path $STACK_DIR/nginx/tmp/proxy;
  fastcgi_temp_path $STACK_DIR/nginx/tmp/fastcgi;
  uwsgi_temp_path $STACK_DIR/nginx/tmp/uwsgi;
  scgi_temp_path $STACK_DIR/nginx/tmp/scgi;
  client_max_body_size 70m;

  # The web app on one origin: the build, its settings, and /v1 to the API.
  server {
    listen 127.0.0.1:$APP_PORT;
    root $ROOT/frontend/dist;
    location = /config.json { alias $STACK_DIR/web/config.json; add_header Cache-Control "no-store"; }
    location /assets/ { add_header Cache-Control "public, max-age=31536000, immutable"; }
    location /v1/ { proxy_pass http://127.0.0.1:$API_PORT; proxy_set_header Host \$http_host; proxy_buffering off; }
    location / { try_files \$uri /index.html; add_header Cache-Control "no-cache"; }
  }

  # s3s-fs has no CORS: this front adds it for the app's origins. The Host
  # header is passed unchanged, so SigV4 signatures made for this address
  # (the API's S3_PRESIGN_ENDPOINT_URL) verify at s3s-fs.
  map \$http_origin \$cors_origin {
    default "";
    "$APP_URL" \$http_origin;
    "http://localhost:$APP_PORT" \$http_origin;
    "http://127.0.0.1:5173" \$http_origin;
  }
  server {
    listen 127.0.0.1:$S3_CORS_PORT;
    location / {
      if (\$request_method = OPTIONS) {
        add_header Access-Control-Allow-Origin \$cors_origin;
        add_header Access-Control-Allow-Methods "GET, PUT, HEAD";
        add_header Access-Control-Allow-Headers "content-type, content-md5";
        add_header Access-Control-Max-Age 600;
        return 204;
      }
      add_header Access-Control-Allow-Origin \$cors_origin always;
      add_header Access-Control-Expose-Headers "ETag" always;
      proxy_pass http://127.0.0.1:$S3_PORT;
      proxy_set_header Host \$http_host;
      proxy_request_buffering off;
      proxy_buffering off;
    }
  }
}
EOF
}

nginx_cmd() { "$(nginx_bin)" -p "$STACK_DIR/nginx" -c "$STACK_DIR/nginx/nginx.conf" -e "$STACK_DIR/logs/nginx-error.log" "$@"; }

build_web() {
  log "building the web app (tsc + vite)"
  (cd "$ROOT/frontend" && npm run --silent build >"$STACK_DIR/logs/web-build.log" 2>&1) || die "web app build failed; see $STACK_DIR/logs/web-build.log"
}

start_web() {
  if pid_alive "$STACK_DIR/run/oidc.pid" && healthy_oidc; then
    log "oidc        already running on $OIDC_ISSUER"
  else
    port_taken "$OIDC_PORT" && refuse_foreign oidc-provider "$OIDC_PORT" CXR_OIDC_PORT
    spawn oidc env OIDC_PORT="$OIDC_PORT" OIDC_ISSUER="$OIDC_ISSUER" OIDC_CLIENT_ID="$OIDC_CLIENT_ID" \
      OIDC_APP_ORIGINS="$APP_URL,http://localhost:$APP_PORT,http://127.0.0.1:5173" node "$ROOT/frontend/dev/oidc-provider.mjs"
    wait_until "OpenID provider" 80 healthy_oidc
    log "oidc        started on $OIDC_ISSUER (users alice / alice-password, bob / bob-password)"
  fi
  write_nginx_conf
  if pid_alive "$STACK_DIR/run/nginx.pid" && healthy_web; then
    nginx_cmd -s reload 2>/dev/null || true
    log "web         already running on $APP_URL (configuration reloaded)"
  else
    port_taken "$APP_PORT" && refuse_foreign nginx "$APP_PORT" CXR_APP_PORT
    port_taken "$S3_CORS_PORT" && refuse_foreign nginx "$S3_CORS_PORT" CXR_S3_CORS_PORT
    spawn nginx "$(nginx_bin)" -p "$STACK_DIR/nginx" -c "$STACK_DIR/nginx/nginx.conf" -e "$STACK_DIR/logs/nginx-error.log"
    wait_until nginx 40 healthy_web
    log "web         started on $APP_URL"
  fi
}

stop_stack() {
  stop_pidfile nginx
  stop_pidfile oidc
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
  for s in postgres s3 dynamodb documentdb model api relay oidc web; do
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
  build_web
  start_web
  cat >&2 <<EOF

Web app: $APP_URL   (sign in as alice / alice-password, or bob / bob-password)

Local stack is up. Data: $STACK_DIR (logs in $STACK_DIR/logs)
  PostgreSQL (RDS)        $DATABASE_URL
  S3 (s3s-fs)             $AWS_ENDPOINT_URL_S3   buckets $IMAGES_BUCKET, $BACKUP_BUCKET
  DynamoDB (dynalite)     $AWS_ENDPOINT_URL_DYNAMODB   table $RESULTS_TABLE
  DocumentDB (SecantusDB) $DOCUMENTDB_URI   database $DOCUMENTDB_DATABASE
  Model server (SageMaker) $AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME   endpoint $MODEL_ENDPOINT_NAME (generated weights)
  API                     http://$API_ADDR/v1   (openapi: /v1/openapi.json; token: local-dev-token-alice)
  S3-event relay          running (logs: $STACK_DIR/logs/relay.log)
  OpenID provider (Cognito) $OIDC_ISSUER   client $OIDC_CLIENT_ID
  S3 CORS front (browsers) http://127.0.0.1:$S3_CORS_PORT

Use it from a shell:   source $STACK_DIR/env
Stop it:               infra/local/dev.sh down
EOF
}

cmd_test() {
  install_tools
  install_browser
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
  log "checking formatting (cargo fmt, rustfmt.toml) and lints (clippy, warnings are errors)"
  cargo fmt --all --check
  cargo clippy --quiet --workspace --all-targets -- -D warnings
  log "linting the SAM template"
  "$TOOLS_DIR/lint/bin/cfn-lint" infra/template.yaml
  local profile=()
  [ -n "${CI:-}" ] && profile=(--profile ci)
  local rust=0 web=0
  cargo nextest run --workspace --no-fail-fast "${profile[@]}" "$@" || rust=$?
  web_tests || web=$?
  if [ -n "$started" ]; then log "stopping the stack this run started"; fi
  [ "$rust" = 0 ] && [ "$web" = 0 ]
}

# The web app: type check, lint and unit tests, then the browser tests in
# Debian's Chromium against the real local stack (API, S3 stand-in behind
# its CORS front, relay, model server, OpenID provider), started here if
# it is not running.
web_tests() {
  log "web app: type check, lint, unit tests"
  (cd "$ROOT/frontend" && npm run --silent typecheck && npm run --silent lint && npm run --silent test:unit) || return 1
  log "web app: browser tests (building and starting the platform's processes if needed)"
  (cd "$ROOT" && cargo build --quiet -p cxr-admin -p cxr-model-server -p cxr-api -p cxr-infer) || return 1
  "$ROOT/target/debug/cxr-admin" provision >/dev/null || return 1
  start_platform
  build_web
  start_web
  (cd "$ROOT/frontend" && CXR_APP_URL="$APP_URL" CXR_API_URL="http://127.0.0.1:$API_PORT" CXR_STACK_DIR="$STACK_DIR" \
    CXR_S3_CORS_URL="http://127.0.0.1:$S3_CORS_PORT" CXR_OIDC_ISSUER="$OIDC_ISSUER" npm run --silent test:e2e)
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
