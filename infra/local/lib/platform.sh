# shellcheck shell=bash
# Sourced by infra/local/dev.sh (its settings and helpers are in scope).
# The platform's own processes: the model server, the API and the S3-event relay.
healthy_model() { curl -sf -m 2 -o /dev/null "http://127.0.0.1:$MODEL_PORT/ping"; }
healthy_api() { curl -sf -m 2 -o /dev/null "http://127.0.0.1:$API_PORT/v1/health"; }
healthy_relay() { pid_alive "$STACK_DIR/run/relay.pid"; }

start_platform() {
  start_model
  start_api
  start_relay
}

start_model() {
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
}

start_api() {
  local bin=$ROOT/target/debug
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
}

start_relay() {
  if healthy_relay; then
    log "relay       already running"
  else
    spawn relay "$ROOT/target/debug/infer" relay
    log "relay       started (delivers S3 ObjectCreated events to the infer handler)"
  fi
}
