#!/usr/bin/env bash
# scripts/with-stack.sh NAME COMMAND...: builds every binary, starts fresh
# in-memory emulators on free loopback ports (state in .local/NAME), runs
# COMMAND with their endpoints exported, and stops them again, even on failure.
# Exit status = COMMAND's. Used by `make demo` and `make bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME="$1"; shift
STATE="$PWD/.local/$NAME"
CC=target/debug/cc-local

cargo build --workspace --bins
"$CC" down --state-dir "$STATE" >/dev/null 2>&1 || true
trap '"$CC" down --state-dir "$STATE" >/dev/null || true' EXIT
"$CC" up --state-dir "$STATE" --ports auto --in-memory --prefix "$NAME-" >/dev/null

set -a
# shellcheck disable=SC1090
. "$STATE/env"
set +a
export CC_BIN_DIR="$PWD/target/debug"
"$@"
