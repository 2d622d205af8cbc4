# shellcheck shell=bash
# Sourced by infra/local/dev.sh (its settings and helpers are in scope).
# Installing what the stack and the tests need: Debian packages, s3s-fs, dynalite,
# SecantusDB, the Python tools, cargo-nextest, the web app's npm packages, Chromium.
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

  if [ ! -x "$TOOLS_DIR/pytools/bin/python" ] || ! "$TOOLS_DIR/pytools/bin/python" -c "import pycocotools, openapi_spec_validator" 2>/dev/null ||
     [ "$("$TOOLS_DIR/pytools/bin/pip" show schemathesis 2>/dev/null | sed -n 's/^Version: //p')" != "$SCHEMATHESIS_VERSION" ]; then
    log "installing pycocotools, openapi-spec-validator and schemathesis (pip; the COCO export, the OpenAPI document and the API's contract are checked with them)"
    python3 -m venv "$TOOLS_DIR/pytools"
    "$TOOLS_DIR/pytools/bin/pip" install --quiet --disable-pip-version-check "pycocotools>=2.0.7,<3" "openapi-spec-validator>=0.7,<0.8" \
      "schemathesis==$SCHEMATHESIS_VERSION"
  fi

  if [ ! -x "$TOOLS_DIR/lint/bin/cfn-lint" ]; then
    log "installing cfn-lint (pip)"
    python3 -m venv "$TOOLS_DIR/lint"
    "$TOOLS_DIR/lint/bin/pip" install --quiet --disable-pip-version-check "cfn-lint>=1,<2"
  fi

  if [ "$(cargo deny --version 2>/dev/null | awk '{print $2}')" != "$CARGO_DENY_VERSION" ]; then
    log "installing cargo-deny $CARGO_DENY_VERSION (cargo, about 4 minutes; checks deny.toml's dependency policy)"
    cargo install --quiet --locked "cargo-deny@$CARGO_DENY_VERSION"
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
