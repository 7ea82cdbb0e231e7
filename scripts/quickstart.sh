#!/usr/bin/env bash
# The quick start: set up, build, fine-tune a linear head on frozen all-MiniLM-L6-v2 with the
# bundled fine-foods reviews, and evaluate it on the test split.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/graft-target}"
./scripts/setup.sh
cargo build --release -p graft
# A second quick start keeps the first run (graft never replaces a finished run unasked) and
# evaluates it again.
if ! "$CARGO_TARGET_DIR/release/graft" train configs/fine-foods-minilm.toml; then
  [ -f runs/fine-foods/graft.json ] || exit 1
  echo "evaluating the run already in runs/fine-foods"
fi
"$CARGO_TARGET_DIR/release/graft" eval --model runs/fine-foods \
  --data datasets/fine-foods/testing_data.csv --output runs/fine-foods/eval-report.json
