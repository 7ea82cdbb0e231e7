#!/usr/bin/env bash
# graft's GPU numbers next to PyTorch CUDA on the same texts, in one command of a few minutes:
#   1. embedding throughput (graft on wgpu, PyTorch on CUDA): all-MiniLM-L6-v2's shape and a
#      base-size BERT (768 wide, 12 layers), one batch of 32 real reviews at 128 and 256 tokens;
#   2. a frozen run: embed the 4000 fine-food reviews once, then 20 epochs of a linear head
#      (graft train, cache cold, against pytorch_bench.py cached);
#   3. an unfrozen run: one epoch in which every backbone weight trains (graft train with
#      [freeze] backbone = false, against pytorch_bench.py finetune);
#   4. each of 1 and 3 in f16 and bf16 as well (graft --precision against PyTorch's autocast,
#      with GradScaler for f16 training).
# graft runs at its own autotune level (cubecl's `minimal`); the embedding rows and the frozen run
# are repeated at cubecl's default (`CUBECL_AUTOTUNE_LEVEL=balanced`) to show what that costs.
# The models get random weights of the real shapes (accuracies are therefore meaningless here).
#
# On the NVIDIA machine, from the repository root, with the bundle of scripts/bench/gpu-bundle.sh:
#   scripts/bench/gpu.sh [BUNDLE]        # BUNDLE defaults to .gpu-bundle
# Needs python3 with torch (CUDA), transformers and sentence-transformers there; no Rust, no
# network. Writes bench-results/gpu/*.jsonl and train.log (GPU_RESULTS overrides) and prints a summary.
# QUICK=1 shrinks everything for a dry run of the plumbing; TORCH_DEVICE=cpu and BACKEND=flex run
# the references and graft on the CPU (for that dry run on a machine without a GPU).
set -euo pipefail
cd "$(dirname "$0")/../.."
bundle="${1:-.gpu-bundle}"
python="${PYTHON:-python3}"
torch_device="${TORCH_DEVICE:-cuda}"
backend="${BACKEND:-wgpu}"
out="${GPU_RESULTS:-bench-results/gpu}"
mkdir -p "$out" && rm -f "$out"/*.jsonl "$out/train.log"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
graft="$work/graft"
"$python" -c 'import lzma, sys; open(sys.argv[2], "wb").write(lzma.open(sys.argv[1]).read())' \
  "$bundle/graft.xz" "$graft"
chmod +x "$graft"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if ! ldconfig -p | grep -q 'libvulkan.so.1'; then
  for f in "$bundle"/gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -f "$nvidia_icd" ]; then export VK_DRIVER_FILES="$nvidia_icd"; fi
(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true) | tee "$out/gpu.txt"

seqs=(128 256); repeats=10; head_epochs=20; train_rows=4001
if [ -n "${QUICK:-}" ]; then seqs=(32); repeats=2; head_epochs=2; train_rows=201; fi
for size in minilm base; do
  "$python" scripts/bench/reference_forward.py random-bert "$work/$size" --size "$size" \
    --tokenizer "$bundle/tokenizer" >/dev/null
done
data="$work/train.csv"
head -n "$train_rows" datasets/fine-foods/training_data.csv > "$data"
test_data="$work/test.csv"
head -n "$(( train_rows / 4 + 1 ))" datasets/fine-foods/testing_data.csv > "$test_data"

# 1. Embedding throughput.
precisions=(f32 f16 bf16)
for size in minilm base; do
  for seq in "${seqs[@]}"; do
    for precision in "${precisions[@]}"; do
      levels=(minimal); [ "$precision" = f32 ] && levels=(minimal balanced)
      for level in "${levels[@]}"; do
        CUBECL_AUTOTUNE_LEVEL=$level "$graft" bench forward --backend "$backend" --model "$work/$size" \
          --data datasets/fine-foods/training_data.csv --column review --seq-len "$seq" \
          --repeats "$repeats" --precision "$precision" |
          sed "s/^{/{\"model\": \"$size\", \"autotune\": \"$level\", /" | tee -a "$out/forward.jsonl" || true
      done
      "$python" scripts/bench/reference_forward.py torch --device "$torch_device" --model "$work/$size" \
        --seq-len "$seq" --repeats "$repeats" --precision "$precision" |
        sed "s#\"model\": \"[^\"]*\"#\"model\": \"$size\"#" | tee -a "$out/forward.jsonl"
    done
  done
done

# 2 and 3. Training, whole processes timed.
timed() { # label, command...
  local label="$1"; shift
  local start end
  start=$EPOCHREALTIME
  echo "== $label" >> "$out/train.log"
  "$@" >> "$out/train.log" 2>&1
  end=$EPOCHREALTIME
  awk -v label="$label" -v a="$start" -v b="$end" \
    'BEGIN { printf "{\"run\": \"%s\", \"wall_seconds\": %.2f}\n", label, b - a }' | tee -a "$out/train.jsonl"
}
config() { # epochs, max_length, freeze section, run dir
  cat <<TOML
[model]
backbone = "$work/minilm"
pooling = "mean"
normalize = true
max_length = $2
[data]
format = "csv"
train = "$data"
test = "$test_data"
text_column = "review"
label_column = "score"
valid_fraction = 0.1
[head]
kind = "linear"
[freeze]
$3
[train]
epochs = $1
batch_size = 32
lr = 1e-3
backbone_lr = 5e-5
optimizer = "adamw"
weight_decay = 0.01
seed = 42
backend = "$backend"
cache = "auto"
cache_dir = "$work/cache"
[output]
dir = "$4"
TOML
}
config "$head_epochs" 256 "backbone = true" "$work/frozen" > "$work/frozen.toml"
config 1 128 "backbone = false" "$work/unfrozen" > "$work/unfrozen.toml"
sed -i 's/^backbone_lr = .*//' "$work/frozen.toml"
timed graft-frozen "$graft" train "$work/frozen.toml"
sed "s#$work/cache#$work/cache-balanced#; s#$work/frozen\"#$work/frozen-balanced\"#" "$work/frozen.toml" > "$work/frozen-balanced.toml"
CUBECL_AUTOTUNE_LEVEL=balanced timed graft-frozen-balanced "$graft" train "$work/frozen-balanced.toml"
timed pytorch-frozen "$python" scripts/bench/pytorch_bench.py cached --device "$torch_device" \
  --model "$work/minilm" --train "$data" --test "$test_data" --epochs "$head_epochs"
for precision in "${precisions[@]}"; do
  sed "s#$work/unfrozen\"#$work/unfrozen-$precision\"#" "$work/unfrozen.toml" > "$work/unfrozen-$precision.toml"
  timed "graft-unfrozen-$precision" "$graft" train "$work/unfrozen-$precision.toml" --precision "$precision" || true
  timed "pytorch-unfrozen-$precision" "$python" scripts/bench/pytorch_bench.py finetune \
    --device "$torch_device" --model "$work/minilm" --train "$data" --test "$test_data" --epochs 1 \
    --precision "$precision"
done

"$python" - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
rows = [json.loads(l) for l in open(os.path.join(out, "forward.jsonl"))]
print("\nembedding throughput (sequences/s, batch 32)")
print(f"{'model':<8} {'tokens':>6} {'precision':>9} {'graft':>11} {'balanced':>9} {'pytorch':>9} {'graft ÷ pytorch':>16}")
key = lambda r: (r["model"], r["seq_len"], r.get("precision", "f32"))
graft = {key(r): r for r in rows if r.get("autotune") == "minimal"}
balanced = {key(r): r for r in rows if r.get("autotune") == "balanced"}
torch = {key(r): r for r in rows if r.get("runtime") == "pytorch"}
for k, t in torch.items():
    g = graft[k]["sequences_per_second"] if k in graft else float("nan")
    b = balanced[k]["sequences_per_second"] if k in balanced else float("nan")
    t = t["sequences_per_second"]
    print(f"{k[0]:<8} {k[1]:>6} {k[2]:>9} {g:>11.1f} {b:>9.1f} {t:>9.1f} {g / t:>16.2f}")
print("device:", next(iter(graft.values()))["device"] if graft else "?")
print("graft: cubecl's minimal autotune level (graft's default); balanced: cubecl's default (f32)")
print("pytorch f16/bf16: autocast; nan: graft refused the precision on this device")
runs = {r["run"]: r["wall_seconds"] for r in map(json.loads, open(os.path.join(out, "train.jsonl")))}
print("\ntraining, whole process (s)")
for kind in ("frozen", "unfrozen-f32", "unfrozen-f16", "unfrozen-bf16"):
    g, t = runs.get(f"graft-{kind}", float("nan")), runs[f"pytorch-{kind}"]
    print(f"{kind:<14} graft {g:8.1f}   pytorch {t:8.1f}   graft ÷ pytorch {g / t:5.2f}")
print(f"frozen at cubecl's default autotune level: graft {runs['graft-frozen-balanced']:.1f}")
PY
