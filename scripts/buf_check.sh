#!/usr/bin/env bash
# The public API, checked: `buf lint` (buf.yaml) and `buf breaking` of
# keyward's protos (proto/keyward; the vendored proto/third_party is not
# ours), then proof that the breaking check has teeth: a copy of the protos
# with one field renumbered must fail it. Run by scripts/test.sh; installs
# buf from npm (@bufbuild/buf, pinned) into ~/.cache/keyward-tools when
# missing, and Node.js/npm from apt when those are missing.
#
# `buf breaking` compares against the parent of the last commit that changed
# proto/keyward (so every run checks the newest change of the API), or
# against HEAD while the working tree changes proto/keyward.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib.sh
source scripts/lib.sh

BUF_VERSION=1.75.0
TOOLS=${KEYWARD_TOOLS_DIR:-$HOME/.cache/keyward-tools}
BUF=$TOOLS/buf-$BUF_VERSION/node_modules/.bin/buf
if [[ ! -x $BUF ]]; then
  if ! command -v npm >/dev/null; then
    echo "installing Node.js and npm (apt-get)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
  fi
  echo "installing buf $BUF_VERSION (npm @bufbuild/buf)"
  npm install --prefix "$TOOLS/buf-$BUF_VERSION" --silent --no-audit --no-fund "@bufbuild/buf@$BUF_VERSION" >/dev/null
  [[ -x $BUF ]] || die "npm did not install buf at $BUF"
fi
echo "buf: $BUF ($("$BUF" --version))"

echo "buf lint"
"$BUF" lint

if ! git diff --quiet HEAD -- proto/keyward; then
  AGAINST=HEAD
  WHY="the working tree changes proto/keyward"
else
  LAST=$(git log -1 --format=%H -- proto/keyward)
  [[ -n $LAST ]] || die "no commit changed proto/keyward (is this a git clone?)"
  if git cat-file -e "$LAST^" 2>/dev/null; then
    AGAINST="$LAST^"
    WHY="the parent of $(git log -1 --format='%h (%s)' "$LAST" | cut -c1-90)"
  else
    AGAINST=$LAST
    WHY="$LAST itself: its parent is not in this (shallow?) clone, so only the current tree is checked"
  fi
fi
# buf clones this repository at a depth (50 commits by default with a ref):
# deep enough to reach AGAINST from HEAD, however many commits ago it was.
DEPTH=$(($(git rev-list --count "$AGAINST..HEAD") + 1))
echo "buf breaking against $WHY ($DEPTH commits deep)"
"$BUF" breaking --against ".git#ref=$AGAINST,subdir=proto,depth=$DEPTH"

echo "buf breaking must refuse a renumbered field (Token.name 3 -> 1003)"
COPY=$(mktemp -d)
trap 'rm -rf "$COPY"' EXIT
cp -r proto buf.yaml "$COPY/"
python3 - "$COPY/proto/keyward/v1/keyward.proto" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
old = "  // Display name. Pinned.\n  string name = 3;"
assert old in text, "Token.name = 3 not found: update scripts/buf_check.sh"
open(path, "w").write(text.replace(old, "  // Display name. Pinned.\n  string name = 1003;", 1))
PY
if OUT=$("$BUF" breaking "$COPY" --against . 2>&1); then
  die "buf breaking accepted a renumbered field"
fi
grep -q 'Previously present field "3" with name "name" on message "Token"' <<<"$OUT" \
  || die "buf breaking failed, but not for the renumbered field: $OUT"
echo "refused as it must be: $(head -1 <<<"$OUT")"
echo "buf: ok"
