#!/usr/bin/env bash
# Peak memory (RSS) and throughput of `graft embed` as the input grows, beside
# sentence-transformers' `encode` on the same texts in the same command (issue: memory that stays
# flat). The texts are the fine-food reviews made unique with a suffix (" #k"), so no two are equal.
#
#   scripts/bench/memory.sh [SIZES...]          # default: 1000 3000 10000 30000
#   PYTHON=path/to/python scripts/bench/memory.sh   # a Python with sentence-transformers: also ST
#
# Then the frozen-backbone run (cold cache, one head epoch) at FROZEN_SIZES texts (default 2000
# 20000). Prints one JSON line per run and writes them to bench-results/memory.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/graft-target}"
graft="$CARGO_TARGET_DIR/release/graft"
model=models/all-MiniLM-L6-v2
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(1000 3000 10000 30000)
out=bench-results; mkdir -p "$out"; : > "$out/memory.jsonl"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
for n in "${sizes[@]}"; do
  texts="$work/texts-$n.txt"
  # One review per line (newlines inside reviews become spaces), cycled and numbered.
  python3 - "$n" "$texts" <<'PY'
import csv, sys
n, path = int(sys.argv[1]), sys.argv[2]
rows = [r["review"].replace("\n", " ").strip() for r in csv.DictReader(open("datasets/fine-foods/training_data.csv"))]
rows = [r for r in rows if r]
with open(path, "w") as f:
    for k in range(n):
        f.write(f"{rows[k % len(rows)]} #{k}\n")
PY
  /usr/bin/time -f "%M %e" -o "$work/time" "$graft" embed --model "$model" --input "$texts" \
    --output "$work/e.safetensors" --backend flex >/dev/null 2>&1
  read -r kib seconds < "$work/time"
  echo "{\"runtime\": \"graft\", \"texts\": $n, \"peak_rss_mib\": $((kib / 1024)), \"seconds\": $seconds, \"texts_per_second\": $(python3 -c "print(round($n / $seconds, 1))")}" | tee -a "$out/memory.jsonl"
  if [ -n "${PYTHON:-}" ]; then
    /usr/bin/time -f "%M %e" -o "$work/time" "$PYTHON" - "$model" "$texts" >/dev/null 2>&1 <<'PY'
import sys, torch
from sentence_transformers import SentenceTransformer
torch.set_num_threads(2)
texts = open(sys.argv[2]).read().splitlines()
SentenceTransformer(sys.argv[1], device="cpu").encode(texts, batch_size=32)
PY
    read -r kib seconds < "$work/time"
    echo "{\"runtime\": \"sentence-transformers\", \"texts\": $n, \"peak_rss_mib\": $((kib / 1024)), \"seconds\": $seconds, \"texts_per_second\": $(python3 -c "print(round($n / $seconds, 1))")}" | tee -a "$out/memory.jsonl"
  fi
done

# The frozen-backbone run at two sizes: features computed once (cold cache), one head epoch.
frozen_sizes=(${FROZEN_SIZES:-2000 20000})
for n in "${frozen_sizes[@]}"; do
  python3 - "$n" "$work/train-$n.csv" <<'PY'
import csv, sys
n, path = int(sys.argv[1]), sys.argv[2]
rows = [(r["review"].replace("\n", " ").strip(), r["score"]) for r in csv.DictReader(open("datasets/fine-foods/training_data.csv"))]
rows = [r for r in rows if r[0]]
with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["review", "score"])
    for k in range(n):
        text, score = rows[k % len(rows)]
        w.writerow([f"{text} #{k}", score])
PY
  cat > "$work/frozen-$n.toml" <<TOML
[model]
backbone = "$model"
max_length = 128
[data]
format = "csv"
train = "$work/train-$n.csv"
text_column = "review"
label_column = "score"
[train]
epochs = 1
backend = "flex"
checkpoints = false
cache_dir = "$work/cache-$n"
[output]
dir = "$work/frozen-$n"
TOML
  /usr/bin/time -f "%M %e" -o "$work/time" "$graft" train "$work/frozen-$n.toml" >/dev/null 2>&1
  read -r kib seconds < "$work/time"
  echo "{\"runtime\": \"graft\", \"frozen_run_texts\": $n, \"peak_rss_mib\": $((kib / 1024)), \"seconds\": $seconds}" | tee -a "$out/memory.jsonl"
done
