#!/usr/bin/env python3
"""The peer `graft serve` is measured against: sentence-transformers behind FastAPI (uvicorn, one
worker), answering text-embeddings-inference's `POST /embed` ({"inputs": str | [str]} → rows), the
same route and shapes graft serves. Run by scripts/bench/serve.sh.

Usage:
    python scripts/bench/serve_peer.py MODEL_DIR PORT
"""
import sys

import torch
import uvicorn
from fastapi import FastAPI, Request
from sentence_transformers import SentenceTransformer

model_dir, port = sys.argv[1], int(sys.argv[2])
model = SentenceTransformer(model_dir, device="cpu")
app = FastAPI()


@app.get("/health")
def health():
    return "ok"


@app.post("/embed")
async def embed(request: Request):
    body = await request.json()
    inputs = body["inputs"]
    texts = [inputs] if isinstance(inputs, str) else inputs
    with torch.inference_mode():
        rows = model.encode(texts, batch_size=32, normalize_embeddings=body.get("normalize", True))
    return rows.tolist()


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
