#!/usr/bin/env bash
# End-to-end walkthrough of the operator CLI (`keyward accounts|resources|
# tokens|authorize|introspect|audit`), against the release binary: the
# README's "A walkthrough with the CLI", step by step, each answer and exit
# code checked, refusals included (a bad grant is a usage error, exit 2; a
# permission refusal 5; not found 6; ...).
#
#   bash tests/cli_walkthrough.sh
#
# Needs: the release binary (built if missing) and python3 (JSON checks).
# Starts its own keyward on free loopback ports with a throw-away data dir,
# and stops it again (SIGTERM) whatever happens. No secret is ever on a
# command line: tokens go through files, stdin and KEYWARD_TOKEN.
set -euo pipefail

cd "$(dirname "$0")/.."

# shellcheck source=walkthrough_harness.sh
source tests/walkthrough_harness.sh

# The CLI as the README runs it.
keyward() { "$BIN" "$@"; }

# call CMD... [< FILE]: runs CMD; stdout to $OUT, stderr to $ERR, exit
# status to $RC (never aborts the script). Every secret the CLI prints must
# stay off stderr: checked on every call.
call() {
  RC=0
  OUT=$("$@" 2>"$WORK/stderr") || RC=$?
  ERR=$(cat "$WORK/stderr")
  if [[ "$ERR" =~ kw_[A-Za-z0-9]{20,} ]]; then
    fail "a token on stderr: $ERR"
  fi
}
expect_rc() {
  [[ $RC -eq $1 ]] || fail "expected exit $1, got $RC (stdout: $OUT) (stderr: $ERR)"
}
expect_ok() { expect_rc 0; }
# expect_err CODE TEXT: exit CODE, TEXT on stderr, nothing on stdout.
expect_err() {
  expect_rc "$1"
  grep -qF -- "$2" <<<"$ERR" || fail "expected '$2' on stderr, got: $ERR"
  [[ -z "$OUT" ]] || fail "stdout not empty on an error: $OUT"
}
# field PATH [DEFAULT]: a field of the last --json answer (dotted path,
# list items by index); null prints as DEFAULT (default: empty). The answer
# goes on stdin: it may hold a secret, which never goes on a command line.
field() {
  "$PY" -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v[int(k)] if isinstance(v, list) else v[k]
if v is None:
    v = sys.argv[2]
print(str(v).lower() if isinstance(v, bool) else v)
' "$1" "${2:-}" <<<"$OUT" || fail "no field $1 in: $OUT"
}
expect_eq() {
  [[ "$1" == "$2" ]] || fail "$3: expected '$2', got '$1' (answer: $OUT)"
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
# last_line: the last line of the last stdout (where a secret goes).
last_line() { tail -n 1 <<<"$OUT"; }


# ------------------------------------------------------------------ server

GRPC_PORT=$(free_port)
HTTP_PORT=$(free_port)
while [[ "$HTTP_PORT" == "$GRPC_PORT" ]]; do HTTP_PORT=$(free_port); done

# `keyward serve` (the same as no subcommand).
NO_COLOR=1 "$BIN" serve --data-dir "$WORK/data" \
  --node-name walkthrough-node \
  --grpc-addr "127.0.0.1:$GRPC_PORT" \
  --http-addr "127.0.0.1:$HTTP_PORT" \
  >"$WORK/keyward.out" 2>"$WORK/keyward.log" &
SERVER_PID=$!

step "server ready and root token printed"
ROOT=
for _ in $(seq 300); do
  kill -0 "$SERVER_PID" 2>/dev/null || fail "keyward exited during start-up"
  ROOT=$(sed -n 's/^root token: \(kw_[A-Za-z0-9]*\)$/\1/p' "$WORK/keyward.out")
  [[ -n "$ROOT" ]] && break
  sleep 0.1
done
[[ -n "$ROOT" ]] || fail "no root token within 30 s"
ok

# The CLI's settings, as an operator exports them.
export KEYWARD_SERVER=http://127.0.0.1:$GRPC_PORT
unset KEYWARD_TOKEN KEYWARD_TOKEN_FILE KEYWARD_ACCOUNT KEYWARD_TLS_CA KEYWARD_TLS_CERT KEYWARD_TLS_KEY
umask 077
cd "$WORK"

# ------------------------------------------------------------------ walkthrough

step "no credential: a usage error (exit 2) saying how to give one"
call keyward accounts list
expect_err 2 "no credential: set KEYWARD_TOKEN or give --token-file FILE"
ok

# The root token, in the environment (export is a shell builtin: no
# command line holds it) and in a file for later.
export KEYWARD_TOKEN=$ROOT
printf '%s\n' "$ROOT" >root.token

step "a server that is not there: exit 8 (unavailable)"
call keyward accounts list --server "http://127.0.0.1:$(free_port)"
expect_err 8 "cannot reach the server"
ok

step "introspect the root token (KEYWARD_TOKEN)"
call keyward introspect --json
expect_ok
expect_eq "$(field root)" true "root"
expect_eq "$(field account_id)" 0 "account_id"
ok

step "accounts create acme: the table, then the ADMIN token alone on the last line"
call keyward accounts create acme
expect_ok
last_line >acme.token
[[ "$(cat acme.token)" =~ ^kw_[A-Za-z0-9]+$ ]] || fail "last line is not a token: $OUT"
grep -q "^ID  *NAME  *CREATED" <<<"$OUT" || fail "no table header: $OUT"
grep -q "acme" <<<"$OUT" || fail "no account row: $OUT"
[[ $(grep -c 'kw_' <<<"$OUT") -eq 1 ]] || fail "the secret is printed more than once: $OUT"
ok

export KEYWARD_TOKEN_FILE=$WORK/acme.token

step "introspect as the admin (--token-file wins over KEYWARD_TOKEN): ADMIN on the account"
call keyward introspect --json
expect_ok
ACCOUNT=$(field account_id)
[[ "$ACCOUNT" =~ ^[1-9][0-9]*$ ]] || fail "no account id: $OUT"
expect_eq "$(field name)" "acme admin token" "name"
expect_eq "$(field grants.0.type)|$(field grants.0.id)|$(field grants.0.level)" "account|$ACCOUNT|admin" "grant"
ok

step "accounts create as the admin: permission denied (exit 5)"
call keyward accounts create other
expect_err 5 "permission denied:"
ok

step "resources register project p1 (the credential's own account)"
call keyward resources register project p1 --json
expect_ok
expect_eq "$(field resource.type)|$(field resource.id)" "project|p1" "resource"
expect_eq "$(field domain_token NONE)" NONE "domain_token"
ok

step "resources register domain example.com: its own token, once, on the last line"
call keyward resources register domain example.com
expect_ok
last_line >example.com.token
[[ "$(cat example.com.token)" =~ ^kw_ ]] || fail "last line is not a token: $OUT"
grep -q "the domain's token [0-9]* \"example.com token [0-9]*\"" <<<"$OUT" || fail "no domain token line: $OUT"
ok

step "resources register sandbox s1 --parent project:p1, then list"
call keyward resources register sandbox s1 --parent project:p1
expect_ok
call keyward resources list --json
expect_ok
expect_eq "$(field resources.0.type):$(field resources.0.id)" "project:p1" "resources[0]"
expect_eq "$(field resources.1.type):$(field resources.1.id):$(field resources.1.parent.id)" "sandbox:s1:p1" "resources[1]"
expect_eq "$(field resources.2.id)" "example.com" "resources[2]"
ok

step "resources register an unknown type: usage error (exit 2)"
call keyward resources register planet mars
expect_err 2 "\`planet\` is not a resource type"
ok

step "tokens create \"ci sender\": ADMIN on the domain, VIEWER on the project"
call keyward tokens create "ci sender" --grant domain:example.com=admin --grant project:p1=viewer --json
expect_ok
CI_ID=$(field token.id)
field secret >ci.token
[[ "$(cat ci.token)" =~ ^kw_ ]] || fail "no secret: $OUT"
expect_eq "$(field token.name)" "ci sender" "name"
expect_eq "$(field token.last_4_digits)" "$(tail -c 5 ci.token | head -c 4)" "last_4_digits"
expect_eq "$(field token.grants.0.type):$(field token.grants.0.id)=$(field token.grants.0.level)" "domain:example.com=admin" "grants[0]"
expect_eq "$(field token.grants.1.type):$(field token.grants.1.id)=$(field token.grants.1.level)" "project:p1=viewer" "grants[1]"
expect_eq "$(field token.expires_at NEVER)" NEVER "expires_at"
ok

step "tokens create with a bad grant: usage error (exit 2) naming the syntax"
call keyward tokens create oops --grant domain:example.com
expect_err 2 "expected TYPE:ID=LEVEL"
ok

step "tokens create on an unregistered resource: invalid argument (exit 3) naming the field"
call keyward tokens create oops --grant project:nope=viewer
expect_err 3 "invalid argument: grants[0]"
ok

step "tokens list: the admin, domain and ci sender tokens, in a table"
call keyward tokens list
expect_ok
grep -q "^ID  *NAME  *STATUS  *EXPIRES  *GRANTS  *SCOPES$" <<<"$OUT" || fail "no header: $OUT"
grep -q "^$CI_ID  *ci sender  *active  *never  *domain:example.com=admin project:p1=viewer  *all$" <<<"$OUT" || fail "no ci sender row: $OUT"
[[ $(wc -l <<<"$OUT") -eq 4 ]] || fail "expected 3 tokens: $OUT"
ok

step "authorize - domain:example.com=admin < ci.token: allowed, exit 0"
call keyward authorize - domain:example.com=admin --json <ci.token
expect_ok
expect_eq "$(field allowed)" true "allowed"
expect_eq "$(field token_id)" "$CI_ID" "token_id"
expect_eq "$(field account_id)" "$ACCOUNT" "account_id"
ok

step "authorize - project:p1=admin: denied, NO_GRANT, exit 5"
call keyward authorize - project:p1=admin <ci.token
expect_rc 5
grep -q "^decision  *denied: NO_GRANT$" <<<"$OUT" || fail "decision: $OUT"
ok

step "authorize a malformed token: denied, MALFORMED"
call keyward authorize kw_not-a-token domain:example.com=admin --json
expect_rc 5
expect_eq "$(field reason)" MALFORMED "reason"
ok

step "tokens create --rate-limit send=2/1m: two allowed, the third RATE_LIMITED with retry_after (exit 5)"
call keyward tokens create "limited" --grant project:p1=viewer --rate-limit send=2/1m --json
expect_ok
field secret >limited.token
expect_eq "$(field token.rate_limits.0.name)|$(field token.rate_limits.0.limit)|$(field token.rate_limits.0.period_seconds)" \
  "send|2|60" "rate_limits"
call keyward authorize - project:p1=viewer --cost 0 --json <limited.token
expect_ok
expect_eq "$(field remaining)" 2 "remaining after a check that spends nothing"
for left in 1 0; do
  call keyward authorize - project:p1=viewer --json <limited.token
  expect_ok
  expect_eq "$(field remaining)" "$left" "remaining"
done
call keyward authorize - project:p1=viewer --json <limited.token
expect_rc 5
expect_eq "$(field reason)" RATE_LIMITED "reason"
[[ "$(field retry_after_seconds)" -ge 29 ]] || fail "retry_after_seconds: $OUT"
ok

step "tokens reset ci sender: a new secret, the same grants; the old one in its grace"
call keyward tokens reset "$CI_ID" --json
expect_ok
CI2_ID=$(field token.id)
field secret >ci2.token
[[ "$(cat ci.token)" != "$(cat ci2.token)" ]] || fail "the same secret"
expect_eq "$(field token.replaces)" "$CI_ID" "replaces"
expect_eq "$(field token.grants.1.id)" p1 "grants[1]"
call keyward authorize - domain:example.com=admin --json <ci2.token
expect_ok
expect_eq "$(field token_id)" "$CI2_ID" "token_id"
ok

step "introspect - < ci.token: replaced, expires in 12 h, last used here"
call keyward introspect - --json <ci.token
expect_ok
expect_eq "$(field id)" "$CI_ID" "id"
expect_eq "$(field replaced_by)" "$CI2_ID" "replaced_by"
expect_in_12h "$(field expires_at)"
expect_eq "$(field last_used_by)" walkthrough-node "last_used_by"
ok

step "tokens reset with a grace above the server's: invalid argument (exit 3) naming grace"
call keyward tokens reset "$CI2_ID" --grace 13h
expect_err 3 "invalid argument: grace: must be at most 43200s"
ok

step "tokens reset the old token again: failed precondition (exit 7)"
call keyward tokens reset "$CI_ID"
expect_err 7 "failed precondition:"
ok

step "tokens update --expires-in 1h, then --no-expiry"
call keyward tokens update "$CI2_ID" --expires-in 1h --json
expect_ok
[[ -n "$(field expires_at)" ]] || fail "no expiry: $OUT"
call keyward tokens update "$CI2_ID" --no-expiry --json
expect_ok
expect_eq "$(field expires_at NEVER)" NEVER "expires_at"
ok

step "tokens update --expires-at in the past: invalid argument (exit 3)"
call keyward tokens update "$CI2_ID" --expires-at 2001-01-01T00:00:00Z
expect_err 3 "expires_at: must be in the future"
ok

step "accounts update: tokens must expire, within 30 days"
call keyward accounts update "$ACCOUNT" --max-token-lifetime 30d --require-expiry true --json
expect_ok
expect_eq "$(field policy.max_token_lifetime)" 2592000s "max_token_lifetime"
expect_eq "$(field policy.require_expiry)" true "require_expiry"
expect_eq "$(field name)" acme "name"
ok

step "tokens create with no expiry under the policy: invalid argument (exit 3)"
call keyward tokens create forever --grant project:p1=viewer
expect_err 3 "expires_at: is required"
ok

step "tokens list --expiring-before 13h: only the old token"
call keyward tokens list --expiring-before 13h --json
expect_ok
IDS=$("$PY" -c 'import json, sys; print("|".join(str(t["id"]) for t in json.load(sys.stdin)["tokens"]))' <<<"$OUT")
expect_eq "$IDS" "$CI_ID" "ids"
ok

step "accounts update: the policy cleared"
call keyward accounts update "$ACCOUNT" --max-token-lifetime 0s --require-expiry false --json
expect_ok
expect_eq "$(field policy.max_token_lifetime NONE)" NONE "max_token_lifetime"
expect_eq "$(field policy.require_expiry)" false "require_expiry"
ok

step "tokens pause: authorize denied, PAUSED; introspect unauthenticated (exit 4)"
call keyward tokens pause "$CI2_ID" --json
expect_ok
expect_eq "$(field paused)" true "paused"
call keyward authorize - domain:example.com=admin --json <ci2.token
expect_rc 5
expect_eq "$(field reason)" PAUSED "reason"
call keyward introspect - <ci2.token
expect_err 4 "unauthenticated: token is paused"
ok

step "tokens resume: allowed again"
call keyward tokens resume "$CI2_ID"
expect_ok
grep -q "^status  *active$" <<<"$OUT" || fail "status: $OUT"
call keyward authorize - domain:example.com=admin <ci2.token
expect_ok
ok

step "tokens report-leak < ci2.token: a live token, paused at once"
call keyward tokens report-leak --url https://ci.example/job/7 --json <ci2.token
expect_ok
expect_eq "$(field true_positive)" true "true_positive"
call keyward authorize - domain:example.com=admin --json <ci2.token
expect_eq "$(field reason)" PAUSED "reason"
ok

step "tokens delete, then get: not found (exit 6)"
call keyward tokens delete "$CI2_ID" --json
expect_ok
expect_eq "$(field token_id)" "$CI2_ID" "token_id"
call keyward tokens get "$CI2_ID"
expect_err 6 "not found:"
ok

step "tokens delete the last token on the domain: failed precondition (exit 7)"
call keyward tokens delete "$CI_ID"
expect_ok
DOMAIN_ID=$(keyward introspect - --json <example.com.token | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["id"])')
call keyward tokens delete "$DOMAIN_ID"
expect_err 7 "failed precondition:"
ok

step "audit --limit 3: the newest events, oldest first"
call keyward audit --limit 3 --json
expect_ok
ACTIONS=$("$PY" -c 'import json, sys; print("|".join(e["action"] + ":" + e["outcome"] for e in json.load(sys.stdin)["events"]))' <<<"$OUT")
expect_eq "$ACTIONS" "DeleteToken:OK|DeleteToken:OK|DeleteToken:FAILED_PRECONDITION" "actions"
ok

step "resources delete project p1: its sandbox too, grants dropped"
call keyward resources delete project p1 --json
expect_ok
expect_eq "$(field deleted.0.id)|$(field deleted.1.id)" "p1|s1" "deleted"
ok

step "as root (--token-file root.token): accounts list; elsewhere --account is needed"
call keyward accounts list --token-file root.token
expect_ok
grep -q "^$ACCOUNT  *acme " <<<"$OUT" || fail "no acme row: $OUT"
call keyward tokens list --token-file root.token
expect_err 2 "--account ID is needed"
call keyward tokens list --token-file root.token --account "$ACCOUNT" --json
expect_ok
ok

step "store backup of the running node (root): a checked file; as acme: permission denied (exit 69)"
call keyward store backup --to "$WORK/keyward.backup" --token-file root.token
expect_ok
grep -q "^records: 1 counters, [0-9]* accounts" <<<"$OUT" || fail "no record counts: $OUT"
[[ -f "$WORK/keyward.backup" ]] || fail "no backup file"
grep -qa "kw_" "$WORK/keyward.backup" && fail "a token string in the backup file"
call keyward store backup --to "$WORK/not-root.backup"
expect_rc 69
grep -q "PermissionDenied\|permission" <<<"$ERR" || fail "no refusal reason: $ERR"
[[ ! -e "$WORK/not-root.backup" ]] || fail "a refused backup left a file"
ok

step "store restore into a new data dir, then copy it: counts and checksum verified"
call keyward store restore --from "$WORK/keyward.backup" --to "$WORK/restored" \
  --digest-key-file "$WORK/data/digest.key"
expect_ok
SUM=$(grep "^checksum:" <<<"$OUT")
call keyward store copy --from "$WORK/restored" --to "$WORK/copied"
expect_ok
expect_eq "$(grep "^checksum:" <<<"$OUT")" "$SUM" "checksum of the copy"
call keyward store restore --from "$WORK/keyward.backup" --to "$WORK/copied"
expect_rc 73
ok

step "store restore of a damaged file: refused naming what is wrong (exit 65)"
head -c 200 "$WORK/keyward.backup" >"$WORK/damaged.backup"
call keyward store restore --from "$WORK/damaged.backup" --to "$WORK/never"
expect_rc 65
grep -q "truncated" <<<"$ERR" || fail "no reason: $ERR"
[[ ! -e "$WORK/never/keyward.store" ]] || fail "a damaged file was restored"
ok

step "completions bash|zsh|fish"
for shell in bash zsh fish; do
  call keyward completions "$shell"
  expect_ok
  grep -q "report-leak" <<<"$OUT" || fail "$shell completions lack report-leak"
done
ok

# ------------------------------------------------------------------ shutdown

step "SIGTERM stops keyward with exit status 0"
kill -TERM "$SERVER_PID"
for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$SERVER_PID" 2>/dev/null && fail "still running 10 s after SIGTERM"
STATUS=0
wait "$SERVER_PID" || STATUS=$?
SERVER_PID=
expect_eq "$STATUS" 0 "exit status"
ok

echo "$PASSED passed, 0 failed"
