#!/usr/bin/env bash
# `make test` (after lint): fresh in-memory emulators on free loopback ports,
# their endpoints exported, every test of the workspace, emulators stopped even
# on failure. Exit status = the tests'.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE="${CC_TEST_STATE_DIR:-.local/test}"
CC=target/debug/cc-local

cargo build --workspace --bins
"$CC" down --state-dir "$STATE" >/dev/null 2>&1 || true
trap '"$CC" down --state-dir "$STATE" >/dev/null || true' EXIT
"$CC" up --state-dir "$STATE" --ports auto --in-memory --prefix test-

set -a
# shellcheck disable=SC1090
. "$STATE/env"
set +a
export CC_BIN_DIR="$PWD/target/debug"

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
