#!/usr/bin/env bash
# graft serve against sentence-transformers behind FastAPI, side by side on 127.0.0.1: the same
# model (all-MiniLM-L6-v2), the same route (TEI's POST /embed, one review per request), the same
# bounded load (scripts/bench/serve_load.py) at 1, 8 and 32 concurrent clients, one server at a
# time. Writes bench-results/serve.jsonl.
#   PYTHON=/path/to/venv/bin/python scripts/bench/serve.sh   # torch, sentence-transformers, fastapi, uvicorn
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/graft-target}"
: "${PYTHON:?set PYTHON to a Python with torch, sentence-transformers, fastapi and uvicorn}"
graft="$CARGO_TARGET_DIR/release/graft"
model=models/all-MiniLM-L6-v2
out=bench-results
mkdir -p "$out"
cargo build --release --workspace
wait_up() { for _ in $(seq 600); do curl -sf "$1/health" >/dev/null && return 0; sleep 0.1; done; return 1; }
load() { # name url
  for clients in 1 8 32; do
    "$PYTHON" scripts/bench/serve_load.py "$2/embed" "$clients" "${REQUESTS:-50}" "${SECONDS_PER_RUN:-60}" \
      | sed "s/^{/{\"server\": \"$1\", /" | tee -a "$out/serve.jsonl"
  done
}
"$graft" serve --model "$model" --port 8731 --backend flex 2>/dev/null &
pid=$!; trap 'kill $pid 2>/dev/null || true' EXIT
wait_up http://127.0.0.1:8731
load graft http://127.0.0.1:8731
kill -TERM $pid; wait $pid || true
"$PYTHON" scripts/bench/serve_peer.py "$model" 8732 &
pid=$!
wait_up http://127.0.0.1:8732
load fastapi+sentence-transformers http://127.0.0.1:8732
kill -TERM $pid; wait $pid || true
