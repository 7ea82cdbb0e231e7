#!/usr/bin/env bash
# Embed texts with all-MiniLM-L6-v2 as it is (mean pooling, normalized: the folder's defaults).
set -euo pipefail
GRAFT="${GRAFT:-graft}"

printf '%s\n' "A cup of strong black coffee." "Espresso with no milk." "A bag of dog food." \
  > /tmp/graft-example-embed.txt
"$GRAFT" embed --model models/all-MiniLM-L6-v2 --input /tmp/graft-example-embed.txt \
  --output /tmp/graft-example-embeddings.safetensors
# The embeddings are unit length, so a dot product is the cosine similarity.
python3 - <<'PY'
import json, struct
raw = open("/tmp/graft-example-embeddings.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
info = header["embeddings"]
rows, width = info["shape"]
start, end = info["data_offsets"]
values = struct.unpack(f"<{rows * width}f", raw[8 + n + start:8 + n + end])
vec = [values[i * width:(i + 1) * width] for i in range(rows)]
dot = lambda a, b: sum(x * y for x, y in zip(a, b))
print(f"coffee~espresso {dot(vec[0], vec[1]):.3f}   coffee~dog food {dot(vec[0], vec[2]):.3f}")
PY
