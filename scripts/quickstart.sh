#!/usr/bin/env bash
# The quick start: set up, build, fine-tune a linear head on frozen all-MiniLM-L6-v2 with the
# bundled fine-foods reviews, and evaluate it on the test split. The setup (Vulkan driver, weights)
# runs while graft builds, since one waits on the network and the other on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/graft-target}"
started=$SECONDS
step() { printf '\n== [%s/4] %s (%d s so far)\n' "$1" "$2" "$((SECONDS - started))"; }

step 1 "setting up in the background: Vulkan driver and pretrained weights (log: target/quickstart-setup.log)"
mkdir -p target
./scripts/setup.sh > target/quickstart-setup.log 2>&1 &
setup_pid=$!

if [ -x "$CARGO_TARGET_DIR/release/graft" ]; then
  step 2 "building graft (already built once: seconds)"
else
  step 2 "building graft for the first time: about 20 minutes on 2 cores, most of it compiling burn's backends once"
fi
cargo build --release -p graft

if ! wait "$setup_pid"; then
  cat target/quickstart-setup.log >&2
  echo "the setup failed (above)" >&2
  exit 1
fi
cat target/quickstart-setup.log

step 3 "training a linear head on frozen all-MiniLM-L6-v2 (configs/fine-foods-minilm.toml)"
# A second quick start keeps the first run (graft never replaces a finished run unasked) and
# evaluates it again.
if ! "$CARGO_TARGET_DIR/release/graft" train configs/fine-foods-minilm.toml; then
  [ -f runs/fine-foods/graft.json ] || exit 1
  echo "evaluating the run already in runs/fine-foods"
fi
step 4 "evaluating on the held-out reviews"
"$CARGO_TARGET_DIR/release/graft" eval --model runs/fine-foods \
  --data datasets/fine-foods/testing_data.csv --output runs/fine-foods/eval-report.json
printf '\n== done in %d s: the run is in runs/fine-foods, its report in runs/fine-foods/eval-report.json\n' "$((SECONDS - started))"
