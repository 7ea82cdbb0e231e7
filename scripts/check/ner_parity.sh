#!/usr/bin/env bash
# The first steps of a token-classification fine-tune, graft against transformers, on one fixed
# batch: all-MiniLM-L6-v2 with dropout off (a copy of the folder with its dropout set to 0), the
# whole training file as one batch (so the data order cannot differ), every weight trained with
# AdamW at a constant rate. graft's initial model (a run at lr = 0, exported) is what the Python
# side starts from, so both start from the same head; then both take STEPS steps and print the
# loss of each (graft's from metrics.jsonl, transformers' from scripts/check/ner_reference.py).
#
#   PYTHON=/path/to/venv/bin/python scripts/check/ner_parity.sh [TRAIN_FILE] [STEPS] [LR]
set -euo pipefail
cd "$(dirname "$0")/../.."
python="${PYTHON:-python3}"
graft="${GRAFT:-${CARGO_TARGET_DIR:-$HOME/.cache/graft-target}/release/graft}"
train="${1:-datasets/conll2003-sample/train.conll}"
steps="${2:-3}"
lr="${3:-5e-5}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cp -r models/all-MiniLM-L6-v2 "$work/minilm"
"$python" - "$work/minilm/config.json" <<'PY'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config["hidden_dropout_prob"] = 0.0
config["attention_probs_dropout_prob"] = 0.0
json.dump(config, open(path, "w"), indent=2)
PY
sentences="$("$python" - "$train" <<'PY'
import json, sys
path = sys.argv[1]
if path.endswith(".jsonl"):
    print(sum(1 for line in open(path) if line.strip()))
else:
    blocks = open(path).read().split("\n\n")
    print(sum(1 for b in blocks if b.strip() and not b.strip().startswith("-DOCSTART-")))
PY
)"
case "$train" in
  *.jsonl) data="format = \"jsonl\"
text_column = \"tokens\"
label_column = \"tags\"" ;;
  *) data="format = \"conll\"" ;;
esac
config() { # name, lr, epochs
  cat > "$work/$1.toml" <<EOF
[model]
backbone = "$work/minilm"
max_length = 128

[data]
$data
train = "$train"
valid = "$train"
task = "token_classification"

[head]
kind = "native"
dropout = 0.0

[freeze]
backbone = false

[train]
epochs = $3
batch_size = $sentences
eval_batch_size = 32
lr = $2
optimizer = "adamw"
weight_decay = 0.01
seed = 42
backend = "flex"

[output]
dir = "$work/$1"
EOF
}
# (the rate must be positive: 1e-30 moves no f32 weight)
config init 1e-30 1
"$graft" train "$work/init.toml" >/dev/null 2>&1
"$graft" export --model "$work/init" --out "$work/init-export" >/dev/null
config steps "$lr" "$steps"
"$graft" train "$work/steps.toml" >/dev/null 2>&1
# One step per epoch (the whole file is the batch): each epoch's training loss is its step's.
echo "graft:        $("$python" -c '
import json, sys
epochs = [json.loads(l) for l in open(sys.argv[1])]
print(json.dumps([e["train_loss"] for e in epochs if e.get("kind") == "epoch"]))
' "$work/steps/metrics.jsonl")"
echo "transformers: $("$python" scripts/check/ner_reference.py parity "$work/init-export" "$train" "$steps" "$lr" 128)"
