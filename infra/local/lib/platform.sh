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

# The model served: the phantom-trained demo model committed in
# model-server/demo-model (its file holds only what training changed, under
# 1 MB; the rest of the weights is regenerated from its seed at load).
# CXR_MODEL=generated serves the untrained generated DenseNet-121 instead.
DEMO_MODEL=$ROOT/model-server/demo-model

start_model() {
  local bin=$ROOT/target/debug
  if [ "${CXR_MODEL:-demo}" = generated ]; then
    if ! grep -q '"trained": false' "$STACK_DIR/model/model.json" 2>/dev/null; then
      log "writing a model with generated (untrained) DenseNet-121 weights to $STACK_DIR/model"
      rm -rf "$STACK_DIR/model"
      "$bin/model-server" generate-model --kind densenet121-xrv --dir "$STACK_DIR/model" >/dev/null
    fi
  elif ! cmp -s "$DEMO_MODEL/model.json" "$STACK_DIR/model/model.json"; then
    log "serving the phantom-trained demo model (synthetic data, not for clinical use) from $DEMO_MODEL"
    stop_pidfile model
    rm -rf "$STACK_DIR/model" && mkdir -p "$STACK_DIR/model"
    cp "$DEMO_MODEL/model.json" "$DEMO_MODEL/model.safetensors" "$STACK_DIR/model/"
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

model_description() {
  if grep -q '"trained": false' "$STACK_DIR/model/model.json" 2>/dev/null; then echo "generated, untrained weights"
  else echo "trained on synthetic phantoms: not for clinical use"; fi
}

# MLflow's own server (`up` only; the tests do not need it): a SQLite
# backend store and the artefacts under .stack/mlflow, served through its
# artefact proxy so `model-server train` uploads over HTTP.
install_mlflow() {
  if [ "$("$TOOLS_DIR/mlflow/bin/pip" show mlflow 2>/dev/null | sed -n 's/^Version: //p')" != "$MLFLOW_VERSION" ]; then
    log "installing MLflow $MLFLOW_VERSION and DVC $DVC_VERSION (pip, about 2 minutes the first time)"
    python3 -m venv "$TOOLS_DIR/mlflow"
    "$TOOLS_DIR/mlflow/bin/pip" install --quiet --disable-pip-version-check "mlflow==$MLFLOW_VERSION" "dvc[s3]==$DVC_VERSION"
  fi
}

healthy_mlflow() { curl -sf -m 2 -o /dev/null "http://127.0.0.1:$MLFLOW_PORT/health"; }

start_mlflow() {
  if pid_alive "$STACK_DIR/run/mlflow.pid" && healthy_mlflow; then
    log "mlflow      already running on 127.0.0.1:$MLFLOW_PORT"
    return 0
  fi
  port_taken "$MLFLOW_PORT" && refuse_foreign mlflow "$MLFLOW_PORT" CXR_MLFLOW_PORT
  mkdir -p "$STACK_DIR/mlflow/artifacts"
  spawn mlflow "$TOOLS_DIR/mlflow/bin/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
    --backend-store-uri "sqlite:///$STACK_DIR/mlflow/mlflow.db" --artifacts-destination "$STACK_DIR/mlflow/artifacts" --serve-artifacts
  wait_until mlflow 480 healthy_mlflow
  log "mlflow      started on 127.0.0.1:$MLFLOW_PORT"
}
