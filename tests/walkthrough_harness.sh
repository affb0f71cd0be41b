# shellcheck shell=bash
# Shared by tests/grpcurl_walkthrough.sh and tests/cli_walkthrough.sh
# (sourced, not run, from the repository root): the release binary (built
# if missing), python3, a throw-away work dir, the server stopped
# (SIGTERM) and its log shown on failure whatever happens, and the step
# bookkeeping. Sets BIN, PY, WORK, SERVER_PID (for the caller to fill),
# PASSED, STEP.

TARGET=${CARGO_TARGET_DIR:-target}
[[ "$TARGET" == /* ]] || TARGET=$PWD/$TARGET
BIN=$TARGET/release/keyward
if [[ ! -x "$BIN" ]]; then
  echo "# $BIN is missing: cargo build --release"
  cargo build --release
fi
command -v python3 >/dev/null || { echo "${0##*/}: python3 is not installed" >&2; exit 1; }
# The interpreter itself, not a pyenv shim: it runs several times per step.
PY=$(python3 -c 'import sys; print(sys.executable)')

WORK=$(mktemp -d)
SERVER_PID=
PASSED=0
STEP="start-up"

cleanup() {
  local rc=$?
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -f "$WORK/keyward.log" ]]; then
    echo "# last lines of the server log:" >&2
    tail -n 20 "$WORK/keyward.log" | sed 's/^/#   /' >&2
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# step NAME: starts a step.
step() { STEP=$1; }
# ok: the current step passed.
ok() { PASSED=$((PASSED + 1)); echo "ok - $STEP"; }
# fail MESSAGE: the current step failed; stops the walkthrough.
fail() {
  echo "not ok - $STEP: $*" >&2
  echo "$PASSED passed, 1 failed"
  exit 1
}

# free_port: a free loopback TCP port.
free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
