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
#   infra/local/dev.sh stop S    stop one service (postgres, s3, dynamodb, documentdb, model, api, relay)
#   infra/local/dev.sh start S   start it again
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
SCHEMATHESIS_VERSION=4.32.5
# The owner the contract run (schemathesis) tests as, and its dev token.
CONTRACT_OWNER=contract
CONTRACT_TOKEN=local-dev-token-contract
# The owner the fault suite (tests/faults.rs) uploads as, and its dev token.
FAULTS_OWNER=faults
FAULTS_TOKEN=local-dev-token-faults
CARGO_DENY_VERSION=0.20.2
# The deployment checks (infra/template.yaml, model-server/Dockerfile).
SAM_CLI_VERSION=1.170.0
CFN_LINT_VERSION=1.58.0
CFN_LINT_SERVERLESS_VERSION=0.3.6
CHECKOV_VERSION=3.3.30
HADOLINT_VERSION=2.15.1
# Experiment tracking for training runs (`up` only). 3.17.2: 3.18.0 needs
# mlflow-tracing==3.18.0, which the package index did not have (2026-12-03).
MLFLOW_VERSION=3.17.2
DVC_VERSION=3.67.1
# The DVC pipeline's remote bucket on the S3 stand-in (ml-pipeline/.dvc/config).
DVC_BUCKET=cxr-dvc
MLFLOW_PORT=${CXR_MLFLOW_PORT:-58500}

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

# ---------------------------------------------------------------- the parts
# Each file below holds one seam of the stack; they share the settings and helpers above.
for part in tools stack platform web tests; do
  # shellcheck source=/dev/null
  source "$ROOT/infra/local/lib/$part.sh"
done

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
  install_mlflow
  start_mlflow
  build_web
  start_web
  cat >&2 <<EOF

Web app: $APP_URL   (sign in as alice / alice-password, or bob / bob-password)

Local stack is up. Data: $STACK_DIR (logs in $STACK_DIR/logs)
  PostgreSQL (RDS)        $DATABASE_URL
  S3 (s3s-fs)             $AWS_ENDPOINT_URL_S3   buckets $IMAGES_BUCKET, $BACKUP_BUCKET
  DynamoDB (dynalite)     $AWS_ENDPOINT_URL_DYNAMODB   table $RESULTS_TABLE
  DocumentDB (SecantusDB) $DOCUMENTDB_URI   database $DOCUMENTDB_DATABASE
  Model server (SageMaker) $AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME   endpoint $MODEL_ENDPOINT_NAME ($(model_description))
  MLflow (tracking)       http://127.0.0.1:$MLFLOW_PORT   (model-server train --mlflow-uri http://127.0.0.1:$MLFLOW_PORT)
  API                     http://$API_ADDR/v1   (openapi: /v1/openapi.json; token: local-dev-token-alice)
  S3-event relay          running (logs: $STACK_DIR/logs/relay.log)
  OpenID provider (Cognito) $OIDC_ISSUER   client $OIDC_CLIENT_ID
  S3 CORS front (browsers) http://127.0.0.1:$S3_CORS_PORT

Use it from a shell:   source $STACK_DIR/env
Stop it:               infra/local/dev.sh down
EOF
}

case "${1:-}" in
  up) cmd_up ;;
  test) shift; cmd_test "$@" ;;
  down)
    stop_stack
    if [ "${2:-}" = "--wipe" ]; then rm -rf "$STACK_DIR" "$PG_HOME"; log "deleted $STACK_DIR and $PG_HOME"; fi ;;
  status) status ;;
  stop | start) one_service "$1" "${2:-}" ;;
  env) [ -f "$STACK_DIR/env" ] || write_env; cat "$STACK_DIR/env" ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
