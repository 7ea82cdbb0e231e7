#!/usr/bin/env bash
# graft, PyTorch (sentence-transformers' model) and ONNX Runtime side by side on the embedding
# forward pass: all-MiniLM-L6-v2 at 128 and 256 tokens and a base-size BERT (random weights) at
# 128, one batch of 32 real reviews each, the same thread count everywhere. Each round is one
# `graft bench forward --compare`, which times graft and then the two references back to back;
# ROUNDS rounds (default 3) give per-round ratios whose median goes in BENCHMARKS.md.
#   PYTHON=/path/to/venv/bin/python scripts/bench/forward.sh     # writes bench-results/forward.jsonl
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/graft-target}"
: "${PYTHON:?set PYTHON to a Python with torch, sentence-transformers and onnxruntime}"
graft="$CARGO_TARGET_DIR/release/graft"
out=bench-results
mkdir -p "$out"
cargo build --release --workspace
base="$out/bert-base-random"
[ -f "$base/model.safetensors" ] || "$PYTHON" scripts/bench/reference_forward.py random-bert "$base" --size base
threads="${THREADS:-$(nproc)}"
for round in $(seq "${ROUNDS:-3}"); do
  for case in "models/all-MiniLM-L6-v2 128" "models/all-MiniLM-L6-v2 256" "$base 128"; do
    set -- $case
    "$graft" bench forward --model "$1" --data datasets/fine-foods/training_data.csv --column review \
      --backend flex --seq-len "$2" --repeats "${REPEATS:-5}" --threads "$threads" --compare "$PYTHON" \
      2>/dev/null | sed "s/^{/{\"round\": $round, \"model\": \"$(basename "$1")\", /" | tee -a "$out/forward.jsonl"
  done
done
"$PYTHON" - "$out/forward.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
cases = {}
for r in rows:
    cases.setdefault((r["model"], r["graft"]["seq_len"]), []).append(r)
print(f"{'model':<18} {'tokens':>6} {'graft seq/s':>11} {'pytorch':>8} {'ort':>8} {'÷ pytorch':>10} {'÷ ort':>7}  (medians of {len(rows) // max(len(cases), 1)} rounds)")
for (model, seq), rs in cases.items():
    med = lambda f: statistics.median(f(r) for r in rs)
    print(f"{model:<18} {seq:>6} {med(lambda r: r['graft']['sequences_per_second']):>11.1f} "
          f"{med(lambda r: r['pytorch']['sequences_per_second']):>8.1f} "
          f"{med(lambda r: r['onnxruntime']['sequences_per_second']):>8.1f} "
          f"{med(lambda r: r['graft_over_pytorch']):>10.2f} {med(lambda r: r['graft_over_onnxruntime']):>7.2f}")
PY
