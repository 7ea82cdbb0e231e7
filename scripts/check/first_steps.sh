#!/usr/bin/env bash
# The first steps of a fine-tune, graft against transformers (or sentence-transformers), on one
# fixed batch:
# all-MiniLM-L6-v2 with dropout off (a copy of the folder with its dropout set to 0), the training
# slice as one batch (so the data order cannot differ), every weight trained with AdamW at a
# constant rate, the family's own head. graft's initial model (a run whose rate moves no weight,
# exported) is what the Python side starts from, so both start from the same head; then both
# take STEPS steps and print the loss of each (graft's from metrics.jsonl, the Python side's from
# scripts/check/ner_reference.py, pairs_reference.py or embedding_reference.py).
#
#   PYTHON=/path/to/venv/bin/python scripts/check/first_steps.sh TASK [STEPS] [LR]
#
# ner: token classification on datasets/conll2003-sample/train.conll (180 sentences);
# nli, sts: cross-encoders on the first 64 pairs of the SNLI and STS-B slices;
# mnrl, mnrl-negatives, triplet: embedding training on the first 64 rows of the SNLI triplets
# (anchor and positive; with the negative), MultipleNegativesRankingLoss or TripletLoss;
# cosine: embedding training on the first 64 STS-B pairs, CosineSimilarityLoss (scores / 5).
set -euo pipefail
cd "$(dirname "$0")/../.."
python="${PYTHON:-python3}"
graft="${GRAFT:-${CARGO_TARGET_DIR:-$HOME/.cache/graft-target}/release/graft}"
task="${1:-ner}"
steps="${2:-3}"
lr="${3:-5e-5}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
head="[head]
kind = \"native\"
dropout = 0.0"
loss=""
triplets() { # columns, loss
  train="$work/train.csv"
  "$python" - "$1" > "$train" <<'PY'
import csv, sys
columns = sys.argv[1].split(",")
rows = list(csv.DictReader(open("datasets/snli-triplets/train.csv", newline="")))[:64]
out = csv.writer(sys.stdout, lineterminator="\n")
out.writerow(columns)
out.writerows([r[c] for c in columns] for r in rows)
PY
  data="format = \"csv\"
task = \"embedding\"
columns = [\"${1//,/\", \"}\"]"
  head=""
  loss="$2"
}
case "$task" in
  mnrl) triplets anchor,positive multiple_negatives_ranking ;;
  mnrl-negatives) triplets anchor,positive,negative multiple_negatives_ranking ;;
  triplet) triplets anchor,positive,negative triplet ;;
  cosine)
    train="$work/train.csv"
    head -n 65 datasets/stsb-mini/train.csv > "$train"
    data="format = \"csv\"
task = \"embedding\"
columns = [\"sentence1\", \"sentence2\"]
label_column = \"score\"
score_scale = 0.2"
    head=""
    loss=cosine_similarity ;;
  ner)
    train=datasets/conll2003-sample/train.conll
    data="format = \"conll\"
task = \"token_classification\"" ;;
  nli)
    train="$work/train.csv"
    head -n 65 datasets/snli-mini/train.csv > "$train"
    data="format = \"csv\"
columns = [\"premise\", \"hypothesis\"]
label_column = \"label\"
task = \"classification\"" ;;
  sts)
    train="$work/train.csv"
    head -n 65 datasets/stsb-mini/train.csv > "$train"
    data="format = \"csv\"
columns = [\"sentence1\", \"sentence2\"]
label_column = \"score\"
task = \"regression\"
standardize = false" ;;
  *) echo "unknown task $task: ner, nli, sts, mnrl, mnrl-negatives, triplet or cosine" >&2; exit 2 ;;
esac

cp -r models/all-MiniLM-L6-v2 "$work/minilm"
"$python" - "$work/minilm/config.json" <<'PY'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config["hidden_dropout_prob"] = 0.0
config["attention_probs_dropout_prob"] = 0.0
json.dump(config, open(path, "w"), indent=2)
PY
examples="$("$python" - "$train" <<'PY'
import sys
path = sys.argv[1]
if path.endswith(".csv"):
    print(sum(1 for line in open(path) if line.strip()) - 1)
else:
    blocks = open(path).read().split("\n\n")
    print(sum(1 for b in blocks if b.strip() and not b.strip().startswith("-DOCSTART-")))
PY
)"
loss_section="${loss:+[loss]
kind = \"$loss\"}"
config() { # name, lr, epochs
  cat > "$work/$1.toml" <<EOF
[model]
backbone = "$work/minilm"
max_length = 128

[data]
$data
train = "$train"
valid = "$train"

$head
$loss_section

[freeze]
backbone = false

[train]
epochs = $3
batch_size = $examples
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
if [ "$task" = ner ]; then
  reference=(scripts/check/ner_reference.py parity "$work/init-export" "$train" "$steps" "$lr" 128)
elif [ -n "$loss" ]; then
  reference=(scripts/check/embedding_reference.py parity "$work/init-export" "$train" "$loss" "$steps" "$lr")
else
  reference=(scripts/check/pairs_reference.py parity "$task" "$work/init-export" "$train" "$steps" "$lr")
fi
# transformers' weight-loading progress bar goes to stderr; errors still show.
echo "python:       $("$python" "${reference[@]}" 2> >(grep -v "Loading weights" >&2))"
