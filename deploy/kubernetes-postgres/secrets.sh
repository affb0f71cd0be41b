#!/usr/bin/env bash
# Creates or updates the three Secrets of PostgreSQL mode
# (deploy/kubernetes-postgres/); the pods wait for all three:
#
#   keyward-store        url: the connection string, postgres://USER:PASSWORD@HOST:5432/DB
#                        (KEYWARD_STORE). From $KEYWARD_STORE_URL, else asked
#                        for on the terminal (not echoed); an existing one is
#                        kept unless $KEYWARD_STORE_URL is set.
#   keyward-digest-key   digest.key: 64 hex characters (32 random bytes), the
#                        key of the verified digests, shared by every replica.
#                        An existing one is kept (a new key makes every stored
#                        digest useless: argon2 on each token's next use);
#                        else $DIGEST_KEY_FILE (e.g. the sled primary's
#                        /data/digest.key when moving to PostgreSQL); else
#                        keyward-replication's digest.key (which
#                        replication-secret.sh copied from the sled primary);
#                        else new.
#   keyward-replication  replication-secret (kept if there, else 64 random hex
#                        characters) and digest.key (the same key as above),
#                        as deploy/sidecar/replication-secret.sh writes it for
#                        the sled primary: sidecar followers read both.
#
#   deploy/kubernetes-postgres/secrets.sh [NAMESPACE [FOLLOWER_NAMESPACE...]]
#
# NAMESPACE (default keyward) is keyward's; keyward-replication is also
# written to every FOLLOWER_NAMESPACE (followers elsewhere need a copy).
# Environment: KUBECTL (default kubectl). Prints no secret.
set -euo pipefail

KUBECTL=${KUBECTL:-kubectl}
if (($#)); then NAMESPACES=("$@"); else NAMESPACES=(keyward); fi
NS=${NAMESPACES[0]}

umask 077
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

k() { "$KUBECTL" -n "$NS" "$@"; }
# secret_key SECRET KEY: the existing Secret's KEY, decoded, on stdout (or nothing).
secret_key() {
  k get secret "$1" -o "go-template={{with index .data \"$2\"}}{{.}}{{end}}" 2>/dev/null | base64 -d
}
# write NAMESPACE SECRET KEY=FILE...: creates or replaces the Secret.
write() {
  local ns=$1 name=$2
  shift 2
  local files=()
  for kv in "$@"; do files+=(--from-file="$kv"); done
  "$KUBECTL" -n "$ns" create secret generic "$name" "${files[@]}" --dry-run=client -o yaml |
    "$KUBECTL" -n "$ns" apply -f - >/dev/null
  echo "secret/$name written in namespace $ns"
}
is_hex_key() { grep -Eqx '[0-9a-fA-F]{64}' "$1" && [[ $(wc -l <"$1") -le 1 ]]; }

# 1. keyward-store: the connection string.
if [[ -n ${KEYWARD_STORE_URL:-} ]]; then
  printf '%s' "$KEYWARD_STORE_URL" >"$WORK/url"
  echo "keyward-store url: from \$KEYWARD_STORE_URL"
else
  secret_key keyward-store url >"$WORK/url" || true
  if [[ -s $WORK/url ]]; then
    echo "keyward-store url: kept from secret/keyward-store in $NS"
  elif [[ -t 0 ]]; then
    read -rsp 'PostgreSQL URL (postgres://USER:PASSWORD@HOST:5432/DB): ' url
    echo
    printf '%s' "$url" >"$WORK/url"
    unset url
  else
    echo "no secret/keyward-store in $NS: set KEYWARD_STORE_URL or run this on a terminal" >&2
    exit 1
  fi
fi
if ! grep -Eq '^postgres(ql)?://[^[:space:]]+$' "$WORK/url"; then
  echo "keyward-store url: not a postgres://USER:PASSWORD@HOST:5432/DB URL (one line, no spaces);" \
    "percent-encode special characters of the password; Secret not written" >&2
  exit 1
fi

# 2. keyward-digest-key: one key for every replica.
secret_key keyward-digest-key digest.key >"$WORK/digest.key" || true
if [[ -s $WORK/digest.key ]]; then
  echo "digest.key: kept from secret/keyward-digest-key in $NS"
elif [[ -n ${DIGEST_KEY_FILE:-} ]]; then
  tr -d '\n' <"$DIGEST_KEY_FILE" >"$WORK/digest.key"
  echo "digest.key: from $DIGEST_KEY_FILE"
elif secret_key keyward-replication digest.key >"$WORK/digest.key" && [[ -s $WORK/digest.key ]]; then
  echo "digest.key: from secret/keyward-replication in $NS (the sled primary's, copied there)"
else
  od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$WORK/digest.key"
  echo "digest.key: new (32 random bytes, 64 hex characters)"
fi
if ! is_hex_key "$WORK/digest.key"; then
  echo "digest.key is not 64 hex characters; no Secret written" >&2
  exit 1
fi

# 3. keyward-replication: the followers' secret, and the digest key for them.
secret_key keyward-replication replication-secret >"$WORK/replication-secret" || true
if [[ -s $WORK/replication-secret ]]; then
  echo "replication-secret: kept from secret/keyward-replication in $NS"
else
  od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$WORK/replication-secret"
  echo "replication-secret: new (64 random hex characters)"
fi

write "$NS" keyward-store url="$WORK/url"
write "$NS" keyward-digest-key digest.key="$WORK/digest.key"
for ns in "${NAMESPACES[@]}"; do
  write "$ns" keyward-replication replication-secret="$WORK/replication-secret" digest.key="$WORK/digest.key"
done
