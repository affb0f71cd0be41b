#!/usr/bin/env bash
# Runs every fuzz target for $SECS seconds (default 300) with the memory
# limits keyward promises, growing a scratch corpus seeded from the kept
# one, then minimises the result back into fuzz/corpus/<target> (cmin).
#
#   ./fuzz/run_all.sh                 # every target, 5 minutes each
#   SECS=60 ./fuzz/run_all.sh authorize
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Scratch corpora and logs go to $WORK (default target/fuzz-work); crashes
# to fuzz/artifacts/<target>/ (ignored by git).
set -euo pipefail
cd "$(dirname "$0")"
SECS=${SECS:-300}
WORK=${WORK:-$(pwd)/../target/fuzz-work}
TARGET_DIR=${FUZZ_TARGET_DIR:-$(pwd)/../target/fuzz}
LIMITS=(-rss_limit_mb=512 -malloc_limit_mb=256)
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(token_parse grpc_requests authorize store_records)

cargo +nightly fuzz build --target-dir "$TARGET_DIR"
for t in "${targets[@]}"; do
  mkdir -p "$WORK/$t" "corpus/$t"
  echo "==> $t: ${SECS}s"
  cargo +nightly fuzz run --target-dir "$TARGET_DIR" "$t" "$WORK/$t" "corpus/$t" -- \
    "${LIMITS[@]}" -max_total_time="$SECS" -print_final_stats=1 2>&1 | tee "$WORK/$t.log" |
    grep -E '^(#[0-9]+\s+DONE|Done|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+== ERROR)' || true
  # Minimise the kept corpus plus what this run found into a fresh dir:
  # the smallest set of inputs that covers the same edges (hit counts are
  # not kept, so the corpus stays small enough to replay in `cargo test`).
  rm -rf "$WORK/$t.min" && mkdir -p "$WORK/$t.min"
  "$TARGET_DIR/x86_64-unknown-linux-gnu/release/$t" -set_cover_merge=1 -use_counters=0 "${LIMITS[@]}" \
    "$WORK/$t.min" "corpus/$t" "$WORK/$t" >"$WORK/$t.cmin.log" 2>&1
  rm -rf "corpus/$t" && mv "$WORK/$t.min" "corpus/$t"
  echo "$t: corpus after cmin: $(ls "corpus/$t" | wc -l) files"
done
