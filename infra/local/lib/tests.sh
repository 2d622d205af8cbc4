# shellcheck shell=bash
# Sourced by infra/local/dev.sh (its settings and helpers are in scope).
# The test command: formatting and lints, the dependency policy, the SAM template,
# cargo nextest (the fuzz corpora's replay included), the API's contract
# (schemathesis), the web app's checks and browser tests, then the fault
# suite (last: it stops and restarts the services everything else shares).
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
  local profile=()
  if [ -n "${CI:-}" ]; then
    profile=(--profile ci)
    # A one-shot build gains nothing from incremental state, which took
    # 2.7 GB of target/ (a third of a cold build's disk).
    export CARGO_INCREMENTAL=0
  fi
  log "checking formatting (cargo fmt, rustfmt.toml) and lints (clippy, warnings are errors)"
  cargo fmt --all --check
  cargo clippy --quiet --workspace --all-targets -- -D warnings
  log "checking the dependency policy (cargo deny: licenses, bans, sources; deny.toml)"
  cargo deny --log-level error check licenses bans sources
  deployment_checks
  local rust=0 web=0 faults=0
  cargo nextest run --workspace --no-fail-fast "${profile[@]}" "$@" || rust=$?
  web_tests || web=$?
  fault_tests "${profile[@]}" || faults=$?
  if [ -n "$started" ]; then log "stopping the stack this run started"; fi
  [ "$rust" = 0 ] && [ "$web" = 0 ] && [ "$faults" = 0 ]
}

# The platform's processes for the browser tests and the fault suite, built
# with the features the test build resolved (the whole workspace, dev-
# dependencies included), so they are the binaries nextest already linked;
# `cargo build -p ...` resolves fewer features and would build a second copy
# of about a third of the dependency graph.
build_platform_for_tests() {
  (cd "$ROOT" && cargo build --quiet --workspace --bins --tests)
}

# tests/faults.rs: during a load of distinct uploads through the running API,
# relay and model server, PostgreSQL, the S3 stand-in, the DynamoDB stand-in
# and the model server are stopped and restarted one at a time; nothing may
# be lost, duplicated or answered with an undocumented 5xx. Its matrix is
# printed and kept in $STACK_DIR/faults.md. About 3 minutes.
fault_tests() {
  log "fault suite: stopping and restarting postgres, s3, dynamodb and the model server under load"
  build_platform_for_tests || return 1
  "$ROOT/target/debug/cxr-admin" provision >/dev/null || return 1
  start_platform
  (cd "$ROOT" && cargo nextest run -p cxr-end-to-end --test faults --run-ignored only --no-capture "$@")
}

# The web app: type check, lint and unit tests, then the browser tests in
# Debian's Chromium against the real local stack (API, S3 stand-in behind
# its CORS front, relay, model server, OpenID provider), started here if
# it is not running.
web_tests() {
  log "web app: type check, lint, unit tests"
  (cd "$ROOT/frontend" && npm run --silent typecheck && npm run --silent lint && npm run --silent test:unit) || return 1
  log "web app: browser tests (building and starting the platform's processes if needed)"
  build_platform_for_tests || return 1
  "$ROOT/target/debug/cxr-admin" provision >/dev/null || return 1
  start_platform
  contract_tests || return 1
  build_web
  start_web
  (cd "$ROOT/frontend" && CXR_APP_URL="$APP_URL" CXR_API_URL="http://127.0.0.1:$API_PORT" CXR_STACK_DIR="$STACK_DIR" \
    CXR_S3_CORS_URL="http://127.0.0.1:$S3_CORS_PORT" CXR_OIDC_ISSUER="$OIDC_ISSUER" npm run --silent test:e2e)
}

# The running API against its own OpenAPI document: schemathesis with every
# check, a fixed seed and a bounded number of examples
# (infra/local/schemathesis.toml); any failure fails the suite.
contract_tests() {
  log "API contract: schemathesis $SCHEMATHESIS_VERSION against http://127.0.0.1:$API_PORT/v1/openapi.json"
  # Its own owner, its idempotency keys forgotten: the fixed seed makes the
  # same keys every run, and a replayed answer of an earlier run would
  # stand in for this server's.
  PGPASSWORD=$PG_PASSWORD psql -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d "$PG_DATABASE" \
    -c "DELETE FROM idempotency_keys WHERE owner = '$CONTRACT_OWNER'" >/dev/null || return 1
  (cd "$STACK_DIR" && "$TOOLS_DIR/pytools/bin/st" --config-file "$ROOT/infra/local/schemathesis.toml" run \
    "http://127.0.0.1:$API_PORT/v1/openapi.json" --header "Authorization: Bearer $CONTRACT_TOKEN" --checks all \
    --report junit --report-dir "$STACK_DIR/schemathesis" >"$STACK_DIR/logs/schemathesis.log" 2>&1)
  local rc=$?
  tail -n 25 "$STACK_DIR/logs/schemathesis.log"
  [ "$rc" = 0 ] || log "schemathesis found failures; the whole report is in $STACK_DIR/logs/schemathesis.log"
  return "$rc"
}

# The deployable stack, checked without an AWS account: cfn-lint with the
# serverless rules, the SAM CLI's own validation and lint, checkov on the
# template and the model server's Dockerfile (every skip is justified next to
# its resource), hadolint. Any finding fails the suite.
deployment_checks() {
  log "deployment checks: cfn-lint $CFN_LINT_VERSION + serverless rules, sam validate --lint, checkov $CHECKOV_VERSION, hadolint $HADOLINT_VERSION"
  "$TOOLS_DIR/iac/bin/cfn-lint" --append-rules cfn_lint_serverless.rules --template "$ROOT/infra/template.yaml"
  SAM_CLI_TELEMETRY=0 "$TOOLS_DIR/iac/bin/sam" validate --lint --template "$ROOT/infra/template.yaml" --region us-east-1 >/dev/null
  "$TOOLS_DIR/checkov/bin/checkov" --quiet --compact --skip-download --framework cloudformation -f "$ROOT/infra/template.yaml"
  "$TOOLS_DIR/checkov/bin/checkov" --quiet --compact --skip-download --framework dockerfile -f "$ROOT/model-server/Dockerfile"
  "$TOOLS_DIR/hadolint/bin/hadolint" --config "$ROOT/.hadolint.yaml" "$ROOT/model-server/Dockerfile"
}
