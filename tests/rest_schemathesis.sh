#!/usr/bin/env bash
# Property tests of the REST facades with schemathesis (PyPI), against a real
# keyward: every operation in the served /openapi.json (Mailtrap's spec as
# built from the reference page, plus MailerSend's), with generated valid
# and invalid requests. Fails on any server error (5xx) or any response that
# the document does not allow (status code, content type, headers, schema).
#
#   bash tests/rest_schemathesis.sh            # uses target/release/keyward
#   KEYWARD_BIN=target/debug/keyward bash tests/rest_schemathesis.sh
#
# Needs: schemathesis, grpcurl, curl, python3 (scripts/test.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${KEYWARD_BIN:-target/release/keyward}
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-60}
for tool in schemathesis grpcurl curl python3; do
  command -v "$tool" >/dev/null || { # The token the destructive operations act on (see tests/schemathesis.toml).
VICTIM=$(curl -sf "$HTTP/api/api_tokens" -H "Authorization: Bearer $ADMIN" -H 'content-type: application/json' \
  -d '{"name":"victim","resources":[{"resource_type":"project","resource_id":1,"access_level":10}]}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
export KEYWARD_ST_ADMIN=$ADMIN KEYWARD_ST_VICTIM=$VICTIM

echo "schemathesis suite: $tool is not installed" >&2; exit 1; }
done
[[ -x $BIN ]] || { # The token the destructive operations act on (see tests/schemathesis.toml).
VICTIM=$(curl -sf "$HTTP/api/api_tokens" -H "Authorization: Bearer $ADMIN" -H 'content-type: application/json' \
  -d '{"name":"victim","resources":[{"resource_type":"project","resource_id":1,"access_level":10}]}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
export KEYWARD_ST_ADMIN=$ADMIN KEYWARD_ST_VICTIM=$VICTIM

echo "schemathesis suite: $BIN is not built" >&2; exit 1; }

WORK=$(mktemp -d)
PID=
cleanup() {
  local rc=$?
  if [[ -n $PID ]]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  if [[ $rc -ne 0 && -f $WORK/keyward.log ]]; then
    echo "# last lines of the server log:" >&2
    tail -n 20 "$WORK/keyward.log" | sed 's/^/#   /' >&2
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

# Starts keyward on free loopback ports picked by the kernel; tries again if
# another process took a port between the pick and keyward's bind.
start() {
  read -r GRPC_PORT HTTP_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
  GRPC=127.0.0.1:$GRPC_PORT
  HTTP=http://127.0.0.1:$HTTP_PORT
  "$BIN" --data-dir "$WORK/data" --grpc-addr "$GRPC" --http-addr "127.0.0.1:$HTTP_PORT" \
    >"$WORK/stdout" 2>"$WORK/keyward.log" &
  PID=$!
  for _ in $(seq 100); do
    curl -sf "$HTTP/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  return 1
}
for attempt in 1 2 3; do
  start && break
  grep -q "Address already in use" "$WORK/keyward.log" && [[ $attempt -lt 3 ]] ||
    { echo "keyward did not become ready" >&2; exit 1; }
  wait "$PID" 2>/dev/null || true
  rm -rf "$WORK/data"
done
ROOT=$(sed -n 's/^root token: //p' "$WORK/stdout")
[[ -n $ROOT ]] || { echo "no root token on stdout" >&2; exit 1; }

# An account with a project and a domain, and its admin token: the facades'
# calls without an account in the path act in the caller's account.
ADMIN=$(grpcurl -plaintext -H "authorization: Bearer $ROOT" -d '{"name":"Schemathesis"}' \
  "$GRPC" keyward.v1.Accounts/CreateAccount |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["adminToken"]["secret"])')
for resource in '{"type":"RESOURCE_TYPE_PROJECT","id":"1"}' '{"type":"RESOURCE_TYPE_DOMAIN","id":"example.com"}'; do
  grpcurl -plaintext -H "authorization: Bearer $ADMIN" \
    -d "{\"account_id\":1,\"resource\":$resource}" "$GRPC" keyward.v1.Resources/RegisterResource >/dev/null
done

# The token the destructive operations act on (see tests/schemathesis.toml).
VICTIM=$(curl -sf "$HTTP/api/api_tokens" -H "Authorization: Bearer $ADMIN" -H 'content-type: application/json' \
  -d '{"name":"victim","resources":[{"resource_type":"project","resource_id":1,"access_level":10}]}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
export KEYWARD_ST_ADMIN=$ADMIN KEYWARD_ST_VICTIM=$VICTIM

echo "schemathesis $(schemathesis --version | awk '{print $NF}') against $HTTP/openapi.json (max $MAX_EXAMPLES examples per operation)"
schemathesis --config-file tests/schemathesis.toml run "$HTTP/openapi.json" \
  --url "$HTTP" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "$MAX_EXAMPLES" \
  --workers 1 \
  --seed 20261126 \
  --suppress-health-check all \
  --no-color
