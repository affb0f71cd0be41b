#!/usr/bin/env bash
# Creates or updates the Secret keyward-replication that the primary and its
# sidecar followers share:
#
#   replication-secret  64 random hex characters; an existing one is kept
#                       (changing it cuts every follower off until restarted)
#   digest.key          the primary's /data/digest.key, once the primary has
#                       started (it creates the key on its first start)
#
#   deploy/sidecar/replication-secret.sh [PRIMARY_NAMESPACE [NAMESPACE...]]
#
# PRIMARY_NAMESPACE (default keyward) is where the primary runs; the Secret is
# written there and to every other NAMESPACE given (followers in another
# namespace need their own copy). Run it once before the primary's first
# apply, and again once keyward-0 is Running to add the digest key.
#
# The keyward image has no shell and no cat, so the key is read by an
# ephemeral busybox container beside keyward (`kubectl debug --target`),
# through /proc/1/root, with `kubectl exec`: the key is never written to a
# container log. The ephemeral container exits by itself after 2 minutes
# (ephemeral containers cannot be removed; it stays listed as terminated).
#
# Environment: KUBECTL (default kubectl), KEYWARD_POD (default keyward-0),
# DEBUG_IMAGE (default busybox:1.37). Prints no secret.
set -euo pipefail

KUBECTL=${KUBECTL:-kubectl}
POD=${KEYWARD_POD:-keyward-0}
DEBUG_IMAGE=${DEBUG_IMAGE:-busybox:1.37}
NAME=keyward-replication
if (($#)); then NAMESPACES=("$@"); else NAMESPACES=(keyward); fi
PRIMARY_NS=${NAMESPACES[0]}

umask 077
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

k() { "$KUBECTL" -n "$PRIMARY_NS" "$@"; }
# secret_key KEY: the existing Secret's KEY, decoded, on stdout (or nothing).
secret_key() {
  k get secret "$NAME" -o "go-template={{with index .data \"$1\"}}{{.}}{{end}}" 2>/dev/null | base64 -d
}

# 1. The replication secret.
secret_key replication-secret >"$WORK/replication-secret" || true
if [[ -s $WORK/replication-secret ]]; then
  echo "replication-secret: kept from secret/$NAME in $PRIMARY_NS"
else
  od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$WORK/replication-secret"
  echo "replication-secret: new (64 random hex characters)"
fi

# 2. The primary's digest key.
phase=$(k get pod "$POD" -o 'jsonpath={.status.phase}' 2>/dev/null || true)
if [[ $phase == Running ]]; then
  debug="digest-key-$(date +%s)"
  k debug "$POD" --image="$DEBUG_IMAGE" --target=keyward --container="$debug" \
    --profile=restricted --quiet -- sleep 120 >/dev/null
  for _ in $(seq 60); do
    k exec "$POD" -c "$debug" -- true >/dev/null 2>&1 && break
    sleep 1
  done
  k exec "$POD" -c "$debug" -- cat /proc/1/root/data/digest.key >"$WORK/digest.key"
  if ! grep -Eqx '[0-9a-fA-F]{64}' "$WORK/digest.key" || [[ $(wc -l <"$WORK/digest.key") -gt 1 ]]; then
    echo "$POD:/data/digest.key is not 64 hex characters; Secret not written" >&2
    exit 1
  fi
  echo "digest.key: read from $POD:/data/digest.key"
else
  secret_key digest.key >"$WORK/digest.key" || true
  if [[ -s $WORK/digest.key ]]; then
    echo "digest.key: kept from secret/$NAME ($POD is not Running)"
  else
    rm -f "$WORK/digest.key"
    echo "digest.key: not yet ($POD is not Running); run this again once it is"
  fi
fi

# 3. The Secret, in every namespace given.
files=(--from-file=replication-secret="$WORK/replication-secret")
[[ -f $WORK/digest.key ]] && files+=(--from-file=digest.key="$WORK/digest.key")
for ns in "${NAMESPACES[@]}"; do
  "$KUBECTL" -n "$ns" create secret generic "$NAME" "${files[@]}" --dry-run=client -o yaml |
    "$KUBECTL" -n "$ns" apply -f - >/dev/null
  echo "secret/$NAME written in namespace $ns"
done
