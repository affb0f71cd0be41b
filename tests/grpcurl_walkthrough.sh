#!/usr/bin/env bash
# End-to-end walkthrough of keyward's gRPC API with grpcurl, against the
# release binary. It doubles as documentation: every step below is one
# grpcurl call, with the answer it must get.
#
#   bash tests/grpcurl_walkthrough.sh
#
# Needs: grpcurl (1.8.x; it uses server reflection), curl, python3.
# Starts its own keyward on free loopback ports with a throw-away data dir,
# and stops it again (SIGTERM) whatever happens.
set -euo pipefail

cd "$(dirname "$0")/.."

# shellcheck source=walkthrough_harness.sh
source tests/walkthrough_harness.sh
for tool in grpcurl curl; do
  command -v "$tool" >/dev/null || { echo "walkthrough: $tool is not installed" >&2; exit 1; }
done

# call CMD...: runs CMD; its stdout goes to $OUT, its stderr to $ERR and its
# exit status to $RC (never aborts the script).
call() {
  RC=0
  OUT=$("$@" 2>"$WORK/stderr") || RC=$?
  ERR=$(cat "$WORK/stderr")
}
# expect_ok: the last call succeeded.
expect_ok() {
  [[ $RC -eq 0 ]] || fail "expected success, got exit $RC: $ERR"
}
# expect_code CODE: the last call failed with gRPC status CODE (grpcurl
# prints "Code: <Name>").
expect_code() {
  [[ $RC -ne 0 ]] || fail "expected gRPC error $1, but the call succeeded: $OUT"
  grep -q "Code: $1\$" <<<"$ERR" || fail "expected gRPC error $1, got: $ERR"
}
# field PATH: a field of the last JSON answer, by dotted path (list items by
# index: grants.0.level). proto3 JSON leaves out default values, so a missing
# field prints as false / "" / 0 according to DEFAULT (default: empty).
field() {
  "$PY" -c '
import json, sys
v = json.loads(sys.argv[1])
for k in sys.argv[2].split("."):
    try:
        v = v[int(k)] if isinstance(v, list) else v[k]
    except (KeyError, IndexError, ValueError):
        v = sys.argv[3]
        break
print(str(v).lower() if isinstance(v, bool) else v)
' "$OUT" "$1" "${2:-}"
}
# expect_eq ACTUAL EXPECTED WHAT
expect_eq() {
  [[ "$1" == "$2" ]] || fail "$3: expected '$2', got '$1' (answer: $OUT)"
}
# expect_decision ALLOWED REASON: the last Authorize answer.
expect_decision() {
  expect_ok
  expect_eq "$(field allowed false)" "$1" "allowed"
  expect_eq "$(field reason DENY_REASON_UNSPECIFIED)" "$2" "reason"
}

# expect_in_12h TIME: TIME (RFC 3339) is 12 h from now, within a minute.
expect_in_12h() {
  "$PY" -c '
import datetime, sys
t = datetime.datetime.fromisoformat(sys.argv[1].replace("Z", "+00:00"))
left = (t - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
sys.exit(0 if abs(left - 12 * 3600) < 60 else 1)
' "$1" || fail "expected a time 12 h from now, got '$1' (answer: $OUT)"
}


# ------------------------------------------------------------------ server

GRPC_PORT=$(free_port)
HTTP_PORT=$(free_port)
while [[ "$HTTP_PORT" == "$GRPC_PORT" ]]; do HTTP_PORT=$(free_port); done
GRPC=127.0.0.1:$GRPC_PORT

# A P-256 key standing in for GitHub's, and its keys file (GitHub's
# format), for the leak report steps (README, "Leak reports", "Try it").
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/leak.pem" 2>/dev/null
openssl ec -in "$WORK/leak.pem" -pubout -out "$WORK/leak.pub" 2>/dev/null
"$PY" -c 'import json, sys; print(json.dumps({"public_keys": [{"key_identifier": "test-key", "key": open(sys.argv[1]).read(), "is_current": True}]}))' \
  "$WORK/leak.pub" >"$WORK/leak-keys.json"

# NO_COLOR: plain server log (it is shown if a step fails).
NO_COLOR=1 "$BIN" --data-dir "$WORK/data" \
  --node-name walkthrough-node \
  --leak-report-keys "$WORK/leak-keys.json" \
  --grpc-addr "127.0.0.1:$GRPC_PORT" \
  --http-addr "127.0.0.1:$HTTP_PORT" \
  >"$WORK/keyward.out" 2>"$WORK/keyward.log" &
SERVER_PID=$!

step "server ready (/readyz) and root token printed"
ROOT=
for _ in $(seq 300); do
  kill -0 "$SERVER_PID" 2>/dev/null || fail "keyward exited during start-up"
  if curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null; then
    # On the very first start keyward prints "root token: kw_..." to stdout.
    ROOT=$(sed -n 's/^root token: \(kw_[A-Za-z0-9]*\)$/\1/p' "$WORK/keyward.out")
    [[ -n "$ROOT" ]] && break
  fi
  sleep 0.1
done
[[ -n "$ROOT" ]] || fail "not ready with a root token within 30 s"
ok

# ------------------------------------------------------------------ walkthrough

step "Health/Check is SERVING"
call grpcurl -plaintext -d '{"service": ""}' \
  "$GRPC" grpc.health.v1.Health/Check
expect_ok
expect_eq "$(field status)" SERVING "status"
ok

step "reflection lists the keyward services"
call grpcurl -plaintext "$GRPC" list
expect_ok
for svc in keyward.v1.Accounts keyward.v1.Resources keyward.v1.Tokens keyward.v1.Authorizer \
  keyward.v1.Audit keyward.v1.Admin envoy.service.auth.v3.Authorization grpc.health.v1.Health; do
  grep -qx "$svc" <<<"$OUT" || fail "$svc not listed: $OUT"
done
ok

step "Envoy's Check through reflection alone (no Envoy protos): no routes file, denied 403"
call grpcurl -plaintext -d '{"attributes": {"request": {"http": {"method": "GET", "path": "/v1/email", "headers": {"authorization": "Bearer kw_not_a_token"}}}}}' \
  "$GRPC" envoy.service.auth.v3.Authorization/Check
expect_ok
expect_eq "$(field deniedResponse.status.code)" Forbidden "deniedResponse.status.code"
ok

step "reflection lists Authorizer's methods, Introspect among them"
call grpcurl -plaintext "$GRPC" list keyward.v1.Authorizer
expect_ok
for m in Authorize AuthorizeBatch Introspect; do
  grep -qx "keyward.v1.Authorizer.$m" <<<"$OUT" || fail "$m not listed: $OUT"
done
ok

step "a call without credentials is Unauthenticated"
call grpcurl -plaintext -d '{}' \
  "$GRPC" keyward.v1.Accounts/ListAccounts
expect_code Unauthenticated
ok

step "CreateAccount (root token) returns the account and its ADMIN token"
call grpcurl -plaintext -H "authorization: Bearer $ROOT" \
  -d '{"name": "acme"}' \
  "$GRPC" keyward.v1.Accounts/CreateAccount
expect_ok
ACCOUNT_ID=$(field account.id)
ADMIN=$(field adminToken.secret)
[[ "$ACCOUNT_ID" =~ ^[1-9][0-9]*$ ]] || fail "no account id: $OUT"
[[ "$ADMIN" == kw_* ]] || fail "no admin token secret: $OUT"
expect_eq "$(field adminToken.token.grants.0.resource.type)" RESOURCE_TYPE_ACCOUNT "admin grant type"
expect_eq "$(field adminToken.token.grants.0.level)" ACCESS_LEVEL_ADMIN "admin grant level"
ok

step "RegisterResource project p1"
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" -d @ \
  "$GRPC" keyward.v1.Resources/RegisterResource <<EOF
{
  "accountId": "$ACCOUNT_ID",
  "resource": {"type": "RESOURCE_TYPE_PROJECT", "id": "p1"}
}
EOF
expect_ok
expect_eq "$(field resource.id)" p1 "resource.id"
expect_eq "$(field domainToken)" "" "domainToken (none for a project)"
ok

step "RegisterResource domain example.com returns the domain's own token"
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" -d @ \
  "$GRPC" keyward.v1.Resources/RegisterResource <<EOF
{
  "accountId": "$ACCOUNT_ID",
  "resource": {"type": "RESOURCE_TYPE_DOMAIN", "id": "example.com"}
}
EOF
expect_ok
DOMAIN_TOKEN=$(field domainToken.secret)
DOMAIN_TOKEN_ID=$(field domainToken.token.id)
[[ "$DOMAIN_TOKEN" == kw_* ]] || fail "no domain token secret: $OUT"
expect_eq "$(field domainToken.token.name)" "example.com token $DOMAIN_TOKEN_ID" "domain token name"
ok

step "CreateToken \"ci sender\": ADMIN on the domain, VIEWER on the project"
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" -d @ \
  "$GRPC" keyward.v1.Tokens/CreateToken <<EOF
{
  "accountId": "$ACCOUNT_ID",
  "name": "ci sender",
  "grants": [
    {"resource": {"type": "RESOURCE_TYPE_DOMAIN", "id": "example.com"}, "level": "ACCESS_LEVEL_ADMIN"},
    {"resource": {"type": "RESOURCE_TYPE_PROJECT", "id": "p1"}, "level": "ACCESS_LEVEL_VIEWER"}
  ]
}
EOF
expect_ok
CI=$(field secret)
CI_ID=$(field token.id)
[[ "$CI" == kw_* ]] || fail "no secret: $OUT"
expect_eq "$(field token.name)" "ci sender" "token.name"
expect_eq "$(field token.last4Digits)" "${CI: -4}" "token.last4Digits"
ok

step "ListTokens shows the admin, domain and ci sender tokens"
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" \
  -d "{\"accountId\": \"$ACCOUNT_ID\"}" \
  "$GRPC" keyward.v1.Tokens/ListTokens
expect_ok
NAMES=$("$PY" -c 'import json, sys; print("|".join(t["name"] for t in json.loads(sys.argv[1])["tokens"]))' "$OUT")
expect_eq "$NAMES" "acme admin token|example.com token $DOMAIN_TOKEN_ID|ci sender" "token names"
ok

# authorize TOKEN TYPE ID LEVEL: one Authorizer/Authorize call (no caller
# credential: the token being checked is in the request).
authorize() {
  call grpcurl -plaintext -d @ \
    "$GRPC" keyward.v1.Authorizer/Authorize <<EOF
{
  "token": "$1",
  "resource": {"type": "$2", "id": "$3"},
  "level": "$4"
}
EOF
}

step "Authorize ci sender on the domain at ADMIN: allowed"
authorize "$CI" RESOURCE_TYPE_DOMAIN example.com ACCESS_LEVEL_ADMIN
expect_decision true DENY_REASON_UNSPECIFIED
expect_eq "$(field tokenId)" "$CI_ID" "tokenId"
expect_eq "$(field accountId)" "$ACCOUNT_ID" "accountId"
ok

step "Authorize ci sender on the project at ADMIN: denied, NO_GRANT"
authorize "$CI" RESOURCE_TYPE_PROJECT p1 ACCESS_LEVEL_ADMIN
expect_decision false DENY_REASON_NO_GRANT
ok

step "Authorize ci sender on the project at VIEWER: allowed"
authorize "$CI" RESOURCE_TYPE_PROJECT p1 ACCESS_LEVEL_VIEWER
expect_decision true DENY_REASON_UNSPECIFIED
ok

step "Authorize a malformed token: denied, MALFORMED"
authorize "kw_not-a-token" RESOURCE_TYPE_DOMAIN example.com ACCESS_LEVEL_ADMIN
expect_decision false DENY_REASON_MALFORMED
ok

step "CreateToken with rate_limits: 2 per minute"
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" -d @ \
  "$GRPC" keyward.v1.Tokens/CreateToken <<EOF
{
  "accountId": "$ACCOUNT_ID",
  "name": "limited sender",
  "grants": [{"resource": {"type": "RESOURCE_TYPE_PROJECT", "id": "p1"}, "level": "ACCESS_LEVEL_VIEWER"}],
  "rateLimits": [{"name": "per_minute", "limit": "2", "period": "60s"}]
}
EOF
expect_ok
LIMITED=$(field secret)
expect_eq "$(field token.rateLimits.0.name)" "per_minute" "rateLimits.0.name"
expect_eq "$(field token.rateLimits.0.limit)" "2" "rateLimits.0.limit"
expect_eq "$(field token.rateLimits.0.period)" "60s" "rateLimits.0.period"
ok

step "Authorize the limited token twice: allowed, remaining 1 then 0"
authorize "$LIMITED" RESOURCE_TYPE_PROJECT p1 ACCESS_LEVEL_VIEWER
expect_decision true DENY_REASON_UNSPECIFIED
expect_eq "$(field remaining)" "1" "remaining"
authorize "$LIMITED" RESOURCE_TYPE_PROJECT p1 ACCESS_LEVEL_VIEWER
expect_decision true DENY_REASON_UNSPECIFIED
expect_eq "$(field remaining 0)" "0" "remaining"
ok

step "Authorize the limited token a third time: RATE_LIMITED, retryAfter up to 30s"
authorize "$LIMITED" RESOURCE_TYPE_PROJECT p1 ACCESS_LEVEL_VIEWER
expect_decision false DENY_REASON_RATE_LIMITED
RETRY=$(field retryAfter)
"$PY" -c 'import sys; s = float(sys.argv[1].rstrip("s")); sys.exit(0 if 20 <= s <= 30 else 1)' "$RETRY" \
  || fail "retryAfter: expected up to 30s, got '$RETRY'"
ok

step "ResetToken ci sender returns a new token with the same grants"
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" \
  -d "{\"accountId\": \"$ACCOUNT_ID\", \"tokenId\": \"$CI_ID\"}" \
  "$GRPC" keyward.v1.Tokens/ResetToken
expect_ok
CI2=$(field secret)
CI2_ID=$(field token.id)
[[ "$CI2" == kw_* && "$CI2" != "$CI" ]] || fail "no new secret: $OUT"
expect_eq "$(field token.replaces)" "$CI_ID" "token.replaces"
expect_eq "$(field token.grants.0.resource.id)" example.com "token.grants[0]"
expect_eq "$(field token.grants.1.resource.id)" p1 "token.grants[1]"
ok

step "Authorize the new secret: allowed"
authorize "$CI2" RESOURCE_TYPE_DOMAIN example.com ACCESS_LEVEL_ADMIN
expect_decision true DENY_REASON_UNSPECIFIED
expect_eq "$(field tokenId)" "$CI2_ID" "tokenId"
ok

step "Authorize the old secret during the 12 h grace: still allowed"
authorize "$CI" RESOURCE_TYPE_DOMAIN example.com ACCESS_LEVEL_ADMIN
expect_decision true DENY_REASON_UNSPECIFIED
expect_eq "$(field tokenId)" "$CI_ID" "tokenId"
expect_eq "$(field replacedBy)" "$CI2_ID" "replacedBy"
expect_in_12h "$(field expiresAt)"
ok

# introspect TOKEN: one Authorizer/Introspect call (the token itself is
# the credential).
introspect() {
  call grpcurl -plaintext -d "{\"token\": \"$1\"}" \
    "$GRPC" keyward.v1.Authorizer/Introspect
}

step "Introspect the old secret in its grace: replacedBy, expiresAt, last use, no secret"
introspect "$CI"
expect_ok
expect_eq "$(field token.id)" "$CI_ID" "token.id"
expect_eq "$(field token.name)" "ci sender" "token.name"
expect_eq "$(field token.replacedBy)" "$CI2_ID" "token.replacedBy"
expect_eq "$(field token.grants.0.resource.id)" example.com "token.grants[0]"
expect_in_12h "$(field token.expiresAt)"
[[ -n "$(field token.lastUsedAt)" ]] || fail "no lastUsedAt after its Authorize calls: $OUT"
expect_eq "$(field token.lastUsedBy)" walkthrough-node "token.lastUsedBy (the server's --node-name)"
grep -q "${CI#kw_}" <<<"$OUT" && fail "the answer holds the secret"
grep -q 'argon2' <<<"$OUT" && fail "the answer holds a hash"
ok

step "Introspect the new secret: replaces the old one, never expires"
introspect "$CI2"
expect_ok
expect_eq "$(field token.id)" "$CI2_ID" "token.id"
expect_eq "$(field token.replaces)" "$CI_ID" "token.replaces"
expect_eq "$(field token.expiresAt)" "" "token.expiresAt"
ok

step "Introspect a malformed token: Unauthenticated, invalid token"
introspect "kw_not-a-token"
expect_code Unauthenticated
grep -q "Message: invalid token" <<<"$ERR" || fail "message: $ERR"
ok

step "ResetToken with a grace above the server's 12 h: InvalidArgument, nothing changes"
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" \
  -d "{\"accountId\": \"$ACCOUNT_ID\", \"tokenId\": \"$CI2_ID\", \"grace\": \"43201s\"}" \
  "$GRPC" keyward.v1.Tokens/ResetToken
expect_code InvalidArgument
grep -q "grace: must be at most 43200s, the server's reset grace" <<<"$ERR" || fail "no limit in: $ERR"
authorize "$CI2" RESOURCE_TYPE_DOMAIN example.com ACCESS_LEVEL_ADMIN
expect_decision true DENY_REASON_UNSPECIFIED
ok

step "UpdateToken expires_at: the new token now expires in an hour"
EXPIRES=$("$PY" -c 'import datetime as d; print((d.datetime.now(d.timezone.utc) + d.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))')
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" \
  -d "{\"accountId\": \"$ACCOUNT_ID\", \"tokenId\": \"$CI2_ID\", \"expiresAt\": \"$EXPIRES\", \"updateMask\": {\"paths\": [\"expires_at\"]}}" \
  "$GRPC" keyward.v1.Tokens/UpdateToken
expect_ok
expect_eq "$(field expiresAt)" "$EXPIRES" "expiresAt"
expect_eq "$(field name)" "ci sender token $CI2_ID" "name unchanged"
ok

step "UpdateToken expires_at in the past: InvalidArgument"
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" \
  -d "{\"accountId\": \"$ACCOUNT_ID\", \"tokenId\": \"$CI2_ID\", \"expiresAt\": \"2001-01-01T00:00:00Z\", \"updateMask\": {\"paths\": [\"expires_at\"]}}" \
  "$GRPC" keyward.v1.Tokens/UpdateToken
expect_code InvalidArgument
grep -q "expires_at: must be in the future" <<<"$ERR" || fail "no reason in: $ERR"
ok

step "UpdateToken with expires_at in the mask and no value: the expiry is cleared"
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" \
  -d "{\"accountId\": \"$ACCOUNT_ID\", \"tokenId\": \"$CI2_ID\", \"updateMask\": {\"paths\": [\"expires_at\"]}}" \
  "$GRPC" keyward.v1.Tokens/UpdateToken
expect_ok
expect_eq "$(field expiresAt NEVER)" NEVER "expiresAt"
ok

step "UpdateAccount policy: tokens must expire, within 30 days"
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" \
  -d "{\"accountId\": \"$ACCOUNT_ID\", \"policy\": {\"maxTokenLifetime\": \"2592000s\", \"requireExpiry\": true}, \"updateMask\": {\"paths\": [\"policy\"]}}" \
  "$GRPC" keyward.v1.Accounts/UpdateAccount
expect_ok
expect_eq "$(field policy.maxTokenLifetime)" "2592000s" "policy.maxTokenLifetime"
expect_eq "$(field policy.requireExpiry false)" "true" "policy.requireExpiry"
expect_eq "$(field name)" "acme" "name unchanged"
ok

step "CreateToken with no expiry under the policy: InvalidArgument naming it"
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" -d "{
  \"accountId\": \"$ACCOUNT_ID\", \"name\": \"forever\",
  \"grants\": [{\"resource\": {\"type\": \"RESOURCE_TYPE_PROJECT\", \"id\": \"p1\"}, \"level\": \"ACCESS_LEVEL_VIEWER\"}]}" \
  "$GRPC" keyward.v1.Tokens/CreateToken
expect_code InvalidArgument
grep -q "expires_at: is required: the account's policy max_token_lifetime (2592000s) needs an expiry" <<<"$ERR" || fail "no policy in: $ERR"
ok

step "ListTokens expiringBefore 13 h from now: only the old token in its grace"
BEFORE=$("$PY" -c 'import datetime as d; print((d.datetime.now(d.timezone.utc) + d.timedelta(hours=13)).strftime("%Y-%m-%dT%H:%M:%SZ"))')
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" \
  -d "{\"accountId\": \"$ACCOUNT_ID\", \"expiringBefore\": \"$BEFORE\"}" \
  "$GRPC" keyward.v1.Tokens/ListTokens
expect_ok
IDS=$("$PY" -c 'import json, sys; print("|".join(t["id"] for t in json.loads(sys.argv[1]).get("tokens", [])))' "$OUT")
expect_eq "$IDS" "$CI_ID" "ids expiring before $BEFORE"
ok

step "UpdateAccount with an empty policy: no policy again"
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" \
  -d "{\"accountId\": \"$ACCOUNT_ID\", \"updateMask\": {\"paths\": [\"policy\"]}}" \
  "$GRPC" keyward.v1.Accounts/UpdateAccount
expect_ok
expect_eq "$(field policy.maxTokenLifetime NONE)" "NONE" "policy.maxTokenLifetime"
expect_eq "$(field policy.requireExpiry false)" "false" "policy.requireExpiry"
ok

step "ResetToken with \"grace\": \"0s\" (a leak): the old token is refused at once"
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" -d "{
  \"accountId\": \"$ACCOUNT_ID\", \"name\": \"leaky\",
  \"grants\": [{\"resource\": {\"type\": \"RESOURCE_TYPE_PROJECT\", \"id\": \"p1\"}, \"level\": \"ACCESS_LEVEL_VIEWER\"}]}" \
  "$GRPC" keyward.v1.Tokens/CreateToken
expect_ok
LEAKY=$(field secret)
LEAKY_ID=$(field token.id)
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" \
  -d "{\"accountId\": \"$ACCOUNT_ID\", \"tokenId\": \"$LEAKY_ID\", \"grace\": \"0s\"}" \
  "$GRPC" keyward.v1.Tokens/ResetToken
expect_ok
LEAKY2=$(field secret)
authorize "$LEAKY" RESOURCE_TYPE_PROJECT p1 ACCESS_LEVEL_VIEWER
expect_decision false DENY_REASON_EXPIRED
authorize "$LEAKY2" RESOURCE_TYPE_PROJECT p1 ACCESS_LEVEL_VIEWER
expect_decision true DENY_REASON_UNSPECIFIED
ok

step "ResetToken the old token again: FailedPrecondition"
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" \
  -d "{\"accountId\": \"$ACCOUNT_ID\", \"tokenId\": \"$CI_ID\"}" \
  "$GRPC" keyward.v1.Tokens/ResetToken
expect_code FailedPrecondition
ok

step "PauseToken the new token"
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" \
  -d "{\"accountId\": \"$ACCOUNT_ID\", \"tokenId\": \"$CI2_ID\"}" \
  "$GRPC" keyward.v1.Tokens/PauseToken
expect_ok
expect_eq "$(field paused false)" true "paused"
ok

step "Authorize the paused token: denied, PAUSED"
authorize "$CI2" RESOURCE_TYPE_DOMAIN example.com ACCESS_LEVEL_ADMIN
expect_decision false DENY_REASON_PAUSED
ok

step "Introspect the paused token: Unauthenticated, token is paused"
introspect "$CI2"
expect_code Unauthenticated
grep -q "Message: token is paused" <<<"$ERR" || fail "message: $ERR"
ok

step "ResumeToken the new token"
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" \
  -d "{\"accountId\": \"$ACCOUNT_ID\", \"tokenId\": \"$CI2_ID\"}" \
  "$GRPC" keyward.v1.Tokens/ResumeToken
expect_ok
expect_eq "$(field paused false)" false "paused"
ok

step "Authorize the resumed token: allowed"
authorize "$CI2" RESOURCE_TYPE_DOMAIN example.com ACCESS_LEVEL_ADMIN
expect_decision true DENY_REASON_UNSPECIFIED
ok

# A leak found by a scanner of one's own: any authenticated caller reports a
# secret it came across; a live keyward token is paused at once (and never
# described in the answer); anything else is a false positive.
step "ReportLeak a string that is no token: not a true positive"
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" \
  -d '{"secret": "kw_not_a_token", "url": "https://ci.example/job/7"}' \
  "$GRPC" keyward.v1.Tokens/ReportLeak
expect_ok
expect_eq "$(field truePositive false)" false "truePositive"
ok

step "ReportLeak the new token: a true positive, paused at once"
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" \
  -d "{\"secret\": \"$CI2\", \"url\": \"https://ci.example/job/7\"}" \
  "$GRPC" keyward.v1.Tokens/ReportLeak
expect_ok
expect_eq "$(field truePositive false)" true "truePositive"
authorize "$CI2" RESOURCE_TYPE_DOMAIN example.com ACCESS_LEVEL_ADMIN
expect_decision false DENY_REASON_PAUSED
ok

step "ReportLeak without a credential: Unauthenticated"
call grpcurl -plaintext -d "{\"secret\": \"$CI2\"}" \
  "$GRPC" keyward.v1.Tokens/ReportLeak
expect_code Unauthenticated
ok

step "DeleteToken the new token"
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" \
  -d "{\"accountId\": \"$ACCOUNT_ID\", \"tokenId\": \"$CI2_ID\"}" \
  "$GRPC" keyward.v1.Tokens/DeleteToken
expect_ok
expect_eq "$(field tokenId)" "$CI2_ID" "tokenId"
ok

step "Authorize the deleted token: denied, UNKNOWN_TOKEN"
authorize "$CI2" RESOURCE_TYPE_DOMAIN example.com ACCESS_LEVEL_ADMIN
expect_decision false DENY_REASON_UNKNOWN_TOKEN
ok

# The old ci sender token (in its grace period) still holds ADMIN on the
# domain; delete it too, so that the domain's own token is the last one.
step "DeleteToken the old (reset) token"
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" \
  -d "{\"accountId\": \"$ACCOUNT_ID\", \"tokenId\": \"$CI_ID\"}" \
  "$GRPC" keyward.v1.Tokens/DeleteToken
expect_ok
ok

step "DeleteToken the last token on the domain: FailedPrecondition"
call grpcurl -plaintext -H "authorization: Bearer $ADMIN" \
  -d "{\"accountId\": \"$ACCOUNT_ID\", \"tokenId\": \"$DOMAIN_TOKEN_ID\"}" \
  "$GRPC" keyward.v1.Tokens/DeleteToken
expect_code FailedPrecondition
ok

step "the domain token still authorizes"
authorize "$DOMAIN_TOKEN" RESOURCE_TYPE_DOMAIN example.com ACCESS_LEVEL_ADMIN
expect_decision true DENY_REASON_UNSPECIFIED
ok

# ------------------------------------------------------------------ REST facades

HTTP=http://127.0.0.1:$HTTP_PORT
# hcall METHOD PATH [JSON]: an HTTP call as the account admin; the body goes
# to $OUT and the status to $CODE.
hcall() {
  local args=(-s -o "$WORK/body" -w '%{http_code}' -X "$1" "$HTTP$2" -H "Api-Token: $ADMIN")
  [[ $# -ge 3 ]] && args+=(-H 'Content-Type: application/json' -d "$3")
  CODE=$(curl "${args[@]}") || fail "curl failed"
  OUT=$(cat "$WORK/body")
}
expect_http() {
  [[ "$CODE" == "$1" ]] || fail "expected HTTP $1, got $CODE: $OUT"
}

step "Mailtrap API: list tokens (the caller's account)"
hcall GET /api/api_tokens
expect_http 200
expect_eq "$(field 0.resources.0.access_level)" 100 "first token's level"
ok

step "Mailtrap API: create a token for project p1 (shown once)"
hcall POST /api/api_tokens '{"name": "reports", "resources": [{"resource_type": "project", "resource_id": "p1", "access_level": 10}]}'
expect_http 200
REPORTS_ID=$(field id)
[[ "$(field token)" == kw_* ]] || fail "no token in the answer"
authorize "$(field token)" RESOURCE_TYPE_PROJECT p1 ACCESS_LEVEL_VIEWER
expect_decision true DENY_REASON_UNSPECIFIED
ok

step "Mailtrap API: get, reset, and get in the account path"
hcall GET "/api/api_tokens/$REPORTS_ID"
expect_http 200
expect_eq "$(field token MISSING)" MISSING "token is never shown again"
hcall POST "/api/api_tokens/$REPORTS_ID/reset"
expect_http 200
expect_eq "$(field resources.0.resource_id)" p1 "reset keeps the resources"
hcall GET "/api/accounts/$ACCOUNT_ID/api_tokens/$REPORTS_ID"
expect_http 200
ok

step "Mailtrap API: delete (204), then 404 {\"error\"}"
hcall DELETE "/api/api_tokens/$REPORTS_ID"
expect_http 204
hcall GET "/api/api_tokens/$REPORTS_ID"
expect_http 404
[[ -n "$(field error)" ]] || fail "no error message"
ok

step "Mailtrap API: invalid level is 422 per field"
hcall POST /api/api_tokens '{"name": "x", "resources": [{"resource_type": "project", "resource_id": "p1", "access_level": 50}]}'
expect_http 422
[[ "$OUT" == *'"resources[0].access_level":['* ]] || fail "no field error: $OUT"
ok

step "MailerSend API: create a domain token with scopes"
hcall POST /v1/token '{"name": "mailer", "domain_id": "example.com", "scopes": ["email_full", "domains_read"]}'
expect_http 200
MAILER_ID=$(field data.id)
MAILER=$(field data.accessToken)
expect_eq "$(field data.status)" unpause "status"
expect_eq "$(field data.domain_ids.0)" example.com "domain_ids"
ok

step "MailerSend API: no domain_id, a token for every domain of the account"
hcall POST /v1/token '{"name": "every domain", "scopes": ["email_full"]}'
expect_http 200
expect_eq "$(field data.domain_ids.0)|$(field data.domain_ids.1 NONE)" "example.com|NONE" "domain_ids"
ok

step "MailerSend API: list, rename, pause (Authorize: PAUSED), delete"
hcall GET "/v1/token?page=1&limit=10"
expect_http 200
[[ "$(field meta.total)" -ge 2 ]] || fail "meta.total: $OUT"
hcall PUT "/v1/token/$MAILER_ID" '{"name": "mailer 2"}'
expect_eq "$(field data.name)" "mailer 2" "renamed"
hcall PUT "/v1/token/$MAILER_ID/settings" '{"status": "pause"}'
expect_eq "$(field data.status)" pause "status"
authorize "$MAILER" RESOURCE_TYPE_DOMAIN example.com ACCESS_LEVEL_ADMIN
expect_eq "$(field reason)" DENY_REASON_PAUSED "reason"
hcall DELETE "/v1/token/$MAILER_ID"
expect_http 204
ok

step "a signed leak report (openssl + curl) pauses a live token: true_positive"
hcall POST /api/api_tokens '{"name": "leaked", "resources": [{"resource_type": "project", "resource_id": "p1", "access_level": 10}]}'
expect_http 200
LEAKED=$(field token)
BODY="[{\"token\": \"$LEAKED\", \"type\": \"keyward_api_token\", \"url\": \"https://github.com/octo/leaky/blob/main/.env\", \"source\": \"content\"}, {\"token\": \"kw_not_a_token\", \"type\": \"keyward_api_token\", \"url\": \"https://github.com/octo/leaky\", \"source\": \"content\"}]"
SIG=$(printf %s "$BODY" | openssl dgst -sha256 -sign "$WORK/leak.pem" | base64 -w0)
CODE=$(curl -s -o "$WORK/body" -w '%{http_code}' "$HTTP/v1/secret-scanning/reports" \
  -H "Github-Public-Key-Identifier: test-key" -H "Github-Public-Key-Signature: $SIG" \
  -H 'Content-Type: application/json' -d "$BODY") || fail "curl failed"
OUT=$(cat "$WORK/body")
expect_http 200
expect_eq "$(field 0.label)|$(field 1.label)" "true_positive|false_positive" "labels"
authorize "$LEAKED" RESOURCE_TYPE_PROJECT p1 ACCESS_LEVEL_VIEWER
expect_decision false DENY_REASON_PAUSED
ok

step "the same report again (a replay): 401"
CODE=$(curl -s -o "$WORK/body" -w '%{http_code}' "$HTTP/v1/secret-scanning/reports" \
  -H "Github-Public-Key-Identifier: test-key" -H "Github-Public-Key-Signature: $SIG" \
  -H 'Content-Type: application/json' -d "$BODY") || fail "curl failed"
OUT=$(cat "$WORK/body")
expect_http 401
ok

step "GET /openapi.json describes both facades"
hcall GET /openapi.json
expect_http 200
[[ "$OUT" == *'"/api/api_tokens"'* && "$OUT" == *'"/v1/token"'* ]] || fail "paths missing"
ok

# ------------------------------------------------------------------ shutdown

step "SIGTERM stops keyward with exit status 0 within 10 s"
kill -TERM "$SERVER_PID"
for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$SERVER_PID" 2>/dev/null && fail "still running 10 s after SIGTERM"
STATUS=0
wait "$SERVER_PID" || STATUS=$?
SERVER_PID=
expect_eq "$STATUS" 0 "exit status"
ok

echo "$PASSED passed, 0 failed"
