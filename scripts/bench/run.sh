#!/usr/bin/env bash
# Runs every measurement in BENCHMARKS.md, one process at a time, and writes JSON lines to
# bench-results/. PYTHON names a Python with torch, transformers, sentence-transformers and
# onnxruntime for the reference side (skipped when unset). The GPU column is scripts/bench/gpu.sh's.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/graft-target}"
graft="$CARGO_TARGET_DIR/release/graft"
out=bench-results
mkdir -p "$out"
cargo build --release -p graft
model=models/all-MiniLM-L6-v2
train=datasets/fine-foods/training_data.csv

# 1. Forward throughput, batch 32 x 128 tokens, per backend (wgpu: what this machine offers).
for backend in flex ndarray wgpu; do
  "$graft" bench forward --model $model --data $train --column review --backend $backend \
    --repeats "${REPEATS:-5}" | tee -a "$out/backends.jsonl"
done
# ... and graft (flex), PyTorch and ONNX Runtime side by side at 128 and 256 tokens and on a
# base-size BERT (scripts/bench/forward.sh).
if [ -n "${PYTHON:-}" ]; then
  scripts/bench/forward.sh
fi

# 2. Length bucketing against file order, embedding the 4000 training reviews.
"$graft" bench bucketing --model $model --data $train --column review --backend flex \
  | tee -a "$out/bucketing.jsonl"

# 3. The whole frozen-backbone fine-tune (embed + 20 head epochs + test evaluation).
cache="$(mktemp -d)"
timed() { # label, command...
  local label="$1"; shift
  /usr/bin/time -f "{\"run\": \"$label\", \"wall_seconds\": %e, \"peak_rss_kib\": %M}" -o "$out/time.tmp" "$@" >"$out/$label.log" 2>&1
  tee -a "$out/finetune.jsonl" < "$out/time.tmp"
}
cfg() { # cache mode, epochs, output
  sed -e "s#^backend = .*#backend = \"flex\"\ncache = \"$1\"\ncache_dir = \"$cache\"#" \
      -e "s#^epochs = .*#epochs = $2#" -e "s#^dir = .*#dir = \"$3\"#" configs/fine-foods-minilm.toml
}
cfg auto 20 runs/bench-cold > "$out/cold.toml";  timed graft-cache-cold "$graft" train "$out/cold.toml"
cfg auto 20 runs/bench-warm > "$out/warm.toml";  timed graft-cache-warm "$graft" train "$out/warm.toml"
cfg off 1 runs/bench-uncached > "$out/uncached.toml"; timed graft-uncached-1-epoch "$graft" train "$out/uncached.toml"
rm -rf "$cache"
if [ -n "${PYTHON:-}" ]; then
  for mode in cached uncached; do
    /usr/bin/time -f "{\"run\": \"pytorch-$mode\", \"wall_seconds\": %e, \"peak_rss_kib\": %M}" -o "$out/time.tmp" \
      "$PYTHON" scripts/bench/pytorch_bench.py $mode | tee -a "$out/pytorch.jsonl"
    tee -a "$out/finetune.jsonl" < "$out/time.tmp"
  done
fi
rm -f "$out/time.tmp"
