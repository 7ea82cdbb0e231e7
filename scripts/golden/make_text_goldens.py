#!/usr/bin/env python3
"""Make golden text-embedding vectors for all-MiniLM-L6-v2 with PyTorch.

Usage:
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    python scripts/golden/make_text_goldens.py MODEL_DIR OUT_JSON [--csv TRAINING_CSV]

Writes OUT_JSON (per-text embeddings, batch of 1, no padding) and, beside it,
minilm_batch.json (the same texts as one padded batch).  Everything runs on
CPU in float32 eval mode; the model is loaded only from MODEL_DIR.
"""
import argparse
import csv
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
import sentence_transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

MAX_LENGTH = 256
TOL = 1e-6

LONG_PARAGRAPH = (
    "I ordered these cookies after reading several glowing reviews, and I have to "
    "say they mostly lived up to the hype. The texture is crisp on the outside and "
    "chewy in the middle, the chocolate chunks are generous, and the sweetness is "
    "balanced rather than cloying. My only complaint is the packaging: two of the "
    "twelve bags arrived crushed, so a fair number of cookies were crumbs. Customer "
    "service replaced them quickly, though, which I appreciated. "
)


def reviews_from_csv(path, n=2):
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            text = row["review"]
            if text and text.strip():
                out.append(text)
            if len(out) == n:
                break
    if len(out) < n:
        sys.exit(f"could not read {n} reviews from {path}")
    return out


def build_texts(csv_path):
    texts = [
        "The quick brown fox jumps over the lazy dog.",
        "delicious",
        "Café naïve 東京 🚀 déjà vu",
        LONG_PARAGRAPH * 8,
        'This tea is "amazing"!<br /><br />I\'d buy it again, it\'s the best.',
        "GRAFT v2.0 scored 98.6% on Test-3 (n=1,024); wow!!! #1 @ $4.99/lb?",
        "!",
    ]
    texts += reviews_from_csv(csv_path, 2)
    texts.append("  Extra   spaces\tand\ttabs \t here\n\nand  newlines   ")
    return texts


def f32_list(t):
    """Tensor -> list of Python floats, each the exact float32 value."""
    return [float(x) for x in t.detach().cpu().numpy().astype(np.float32)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", help="folder of the HF/sentence-transformers model")
    ap.add_argument("out_json", help="path of minilm_embeddings.json to write")
    ap.add_argument("--batch-out", help="path of the padded-batch file (default: minilm_batch.json beside out_json)")
    ap.add_argument("--csv", help="training_data.csv with a `review` column (default: datasets/fine-foods/training_data.csv)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    repo_root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    csv_path = args.csv or os.path.join(repo_root, "datasets", "fine-foods", "training_data.csv")
    batch_out = args.batch_out or os.path.join(os.path.dirname(os.path.abspath(args.out_json)), "minilm_batch.json")

    texts = build_texts(csv_path)

    tok = AutoTokenizer.from_pretrained(args.model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(args.model_dir, local_files_only=True, dtype=torch.float32)
    model.eval()
    st = SentenceTransformer(args.model_dir, device="cpu", local_files_only=True)
    st.max_seq_length = MAX_LENGTH
    st.eval()

    cases = []
    max_diff = 0.0
    with torch.no_grad():
        for text in texts:
            enc = tok(text, truncation=True, max_length=MAX_LENGTH, padding=False, return_tensors="pt")
            h = model(**enc).last_hidden_state[0].float()  # [T, 384]
            mask = enc["attention_mask"][0].unsqueeze(-1).float()
            mean = (h * mask).sum(0) / mask.sum(0).clamp(min=1e-9)
            mean_norm = torch.nn.functional.normalize(mean, p=2, dim=0)
            cls = h[0]
            mx = h.max(dim=0).values

            st_vec = st.encode(text, convert_to_numpy=True)
            diff = float(np.abs(st_vec.astype(np.float64) - mean_norm.numpy().astype(np.float64)).max())
            max_diff = max(max_diff, diff)
            assert diff <= TOL, f"mean_normalized differs from SentenceTransformer.encode by {diff} for {text[:40]!r}"

            ids = enc["input_ids"][0].tolist()
            assert len(ids) <= MAX_LENGTH
            cases.append({
                "text": text,
                "input_ids": ids,
                "token_type_ids": enc["token_type_ids"][0].tolist(),
                "mean_normalized": f32_list(mean_norm),
                "mean": f32_list(mean),
                "cls": f32_list(cls),
                "max": f32_list(mx),
            })
            print(f"tokens={len(ids):3d} diff={diff:.3e} text={text[:50]!r}")

        # One padded batch.
        benc = tok(texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
        bh = model(**benc).last_hidden_state.float()  # [B, T, 384]
        bmask = benc["attention_mask"].unsqueeze(-1).float()
        bmean = (bh * bmask).sum(1) / bmask.sum(1).clamp(min=1e-9)
        bnorm = torch.nn.functional.normalize(bmean, p=2, dim=1)
        batch_cases = []
        batch_vs_single = 0.0
        for i, text in enumerate(texts):
            batch_cases.append({
                "text": text,
                "input_ids": benc["input_ids"][i].tolist(),
                "attention_mask": benc["attention_mask"][i].tolist(),
                "mean_normalized": f32_list(bnorm[i]),
            })
            single = np.asarray(cases[i]["mean_normalized"], dtype=np.float64)
            batch_vs_single = max(batch_vs_single, float(np.abs(single - bnorm[i].numpy()).max()))

    made_with = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
    }
    out = {
        "model": "all-MiniLM-L6-v2",
        "made_with": made_with,
        "max_length": MAX_LENGTH,
        "cases": cases,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out_json)), exist_ok=True)
    with open(args.out_json, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)
        f.write("\n")
    with open(batch_out, "w", encoding="utf-8") as f:
        json.dump({"max_length": MAX_LENGTH, "cases": batch_cases}, f, ensure_ascii=False)
        f.write("\n")

    print(f"versions: {made_with}")
    print(f"cases: {len(cases)}")
    print(f"max |mean_normalized - SentenceTransformer.encode| = {max_diff:.3e}")
    print(f"max |batch mean_normalized - single mean_normalized| = {batch_vs_single:.3e}")
    print(f"wrote {args.out_json} and {batch_out}")


if __name__ == "__main__":
    main()
