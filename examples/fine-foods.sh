#!/usr/bin/env bash
# Train, evaluate, predict and export with graft on the bundled fine-foods reviews.
set -euo pipefail
GRAFT="${GRAFT:-graft}"

"$GRAFT" train configs/fine-foods-minilm.toml
"$GRAFT" eval --model runs/fine-foods --data datasets/fine-foods/testing_data.csv \
  --output runs/fine-foods/report.json

printf '%s\n' "Best coffee I have had in years, smooth and rich." \
  "Arrived stale and half the box was crushed." > /tmp/graft-example-texts.txt
"$GRAFT" predict --model runs/fine-foods --input /tmp/graft-example-texts.txt

# Mean pooling + linear head: a sentence-transformers folder whose encode() returns the logits.
"$GRAFT" export --model runs/fine-foods --out runs/fine-foods/export
"$GRAFT" inspect runs/fine-foods/export
