#!/usr/bin/env bash
# Fuzzes graft's loaders at length: the seeded mutation harness of crates/graft/tests/fuzz.rs
# with millions of cases and a fresh random seed (printed first, so a failure can be replayed).
#
#   scripts/fuzz.sh                 # 2,000,000 cases, random seed
#   scripts/fuzz.sh 500000 1234     # CASES SEED
#   GRAFT_FUZZ_TARGET=pth scripts/fuzz.sh   # one target (safetensors, folder, pth, tokenizer,
#                                           # csv, jsonl, parquet, image, config, labels,
#                                           # tf-index, tf-data)
#
# A failing case is replayed alone with the GRAFT_FUZZ_SEED and GRAFT_FUZZ_CASE it names:
#   GRAFT_FUZZ_SEED=S GRAFT_FUZZ_CASE=N cargo test --release --workspace --test fuzz -- --nocapture
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/graft-target}"
cases="${1:-${GRAFT_FUZZ_CASES:-2000000}}"
seed="${2:-${GRAFT_FUZZ_SEED:-$(od -An -N6 -tu8 /dev/urandom | tr -d ' ')}}"
echo "fuzz: GRAFT_FUZZ_SEED=$seed GRAFT_FUZZ_CASES=$cases"
GRAFT_FUZZ_SEED="$seed" GRAFT_FUZZ_CASES="$cases" \
    cargo test --release --workspace --test fuzz -- --nocapture
