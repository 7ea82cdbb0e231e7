#!/usr/bin/env python3
"""Make golden logits for two `graft export` folders with PyTorch.

Usage:
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    python scripts/golden/make_export_goldens.py MEAN_LINEAR_DIR CLS_POOLER_LINEAR_DIR OUT_DIR

MEAN_LINEAR_DIR is a sentence-transformers folder (Transformer, Pooling(mean),
Normalize, Dense with identity activation); it is loaded with
SentenceTransformer(path, device="cpu") and `encode` gives the logits.

CLS_POOLER_LINEAR_DIR is a transformers folder (BertForSequenceClassification);
it is loaded with AutoTokenizer + AutoModelForSequenceClassification.

Writes OUT_DIR/mean-linear/logits.json and OUT_DIR/cls-pooler-linear/logits.json.
Everything runs on CPU, float32, eval mode, no_grad.  Any warning printed while
loading, and any missing/unexpected key, is reported; the script fails if a
load is not clean (missing keys other than bert.embeddings.position_ids, or
unexpected keys).
"""
import argparse
import io
import json
import logging
import os
import re
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
import sentence_transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402
from transformers.modeling_utils import load_state_dict  # noqa: E402

MAX_LENGTH = 128
PROGRESS_RE = re.compile(r"^[\w .-]*:\s+\d+%\|.*\|")
ALLOWED_MISSING = {"bert.embeddings.position_ids", "embeddings.position_ids"}

TEXTS = [
    "This coffee is absolutely wonderful, rich and smooth.",
    "Stale, broken and tasteless. I want my money back.",
    "ok",
    "Café naïve 東京 déjà vu — pretty good tea!",
    "I bought this for my dog and he loves it.<br /><br />Will buy again.",
    "The cookies arrived crushed but tasted fine. " * 40,
]

ST_LOADER = 'SentenceTransformer(path, device="cpu").encode(texts, convert_to_numpy=True)'
HF_LOADER = (
    "AutoModelForSequenceClassification.from_pretrained(path).eval()"
    "(**AutoTokenizer.from_pretrained(path)(texts, padding=True, truncation=True, "
    'max_length=128, return_tensors="pt")).logits'
)


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records = []

    def emit(self, record):
        if record.levelno >= logging.WARNING:
            self.records.append(f"{record.name}: {record.getMessage()}")


def captured_load(fn):
    """Run fn() and return (result, list of warning lines printed/logged)."""
    handler = _Capture()
    loggers = [logging.getLogger(n) for n in ("transformers", "sentence_transformers", "")]
    for lg in loggers:
        lg.addHandler(handler)
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as wlist, redirect_stdout(out), redirect_stderr(err):
        warnings.simplefilter("always")
        result = fn()
    for lg in loggers:
        lg.removeHandler(handler)
    lines = list(handler.records)
    lines += [f"{w.category.__name__}: {w.message}" for w in wlist]
    lines += [f"stdout: {l}" for l in out.getvalue().splitlines() if l.strip()]
    # tqdm progress bars ("Loading weights: 100%|...") are not warnings.
    lines += [
        f"stderr: {l}"
        for l in err.getvalue().replace("\r", "\n").splitlines()
        if l.strip() and not PROGRESS_RE.match(l.strip())
    ]
    # A line can reach both a logging handler and stderr; keep each once.
    seen, uniq = set(), []
    for l in lines:
        if l not in seen:
            seen.add(l)
            uniq.append(l)
    return result, uniq


def f32(x):
    return repr(float(np.float32(x)))


def logits_rows(arr):
    arr = np.asarray(arr, dtype=np.float32)
    return [[float(np.float32(v)) for v in row] for row in arr]


def strict_keys(model, folder):
    """Missing/unexpected keys of a strict load of folder/model.safetensors into model."""
    sd = load_state_dict(os.path.join(folder, "model.safetensors"))
    res = model.load_state_dict(sd, strict=False)
    return sorted(res.missing_keys), sorted(res.unexpected_keys)


def write(out_dir, name, loader, logits):
    made_with = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
    }
    path = os.path.join(out_dir, name, "logits.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    doc = {
        "made_with": made_with,
        "loader": loader,
        "max_length": MAX_LENGTH,
        "texts": TEXTS,
        "logits": logits,
    }
    with open(path, "w", encoding="utf-8") as f:
        # json.dump writes floats with repr(), i.e. the shortest string that
        # round-trips; each value is the exact float32 widened to float64.
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    return path


def run_mean_linear(folder):
    st, warns = captured_load(lambda: SentenceTransformer(folder, device="cpu", local_files_only=True))
    st.eval()
    print(f"[mean-linear] modules: {[type(m).__name__ for m in st]}")
    print(f"[mean-linear] max_seq_length = {st.max_seq_length}")
    assert st.max_seq_length == MAX_LENGTH, st.max_seq_length
    # Strict check of the backbone weights against the Transformer module.
    bert = st[0].auto_model
    missing, unexpected = strict_keys(bert, folder)
    missing_bad = [k for k in missing if k not in ALLOWED_MISSING]
    print(f"[mean-linear] backbone strict: missing={missing} unexpected={unexpected}")
    # Tokens of the long text: must be cut at MAX_LENGTH.
    lens = [len(st.tokenizer(t, truncation=True, max_length=st.max_seq_length)["input_ids"]) for t in TEXTS]
    print(f"[mean-linear] token counts: {lens}")
    with torch.no_grad():
        emb = st.encode(TEXTS, convert_to_numpy=True, batch_size=len(TEXTS))
    assert emb.shape == (len(TEXTS), 2), emb.shape
    return st, warns, missing, unexpected, missing_bad, emb


def run_cls_pooler_linear(folder):
    tok, twarns = captured_load(lambda: AutoTokenizer.from_pretrained(folder, local_files_only=True))
    (model, info), mwarns = captured_load(
        lambda: AutoModelForSequenceClassification.from_pretrained(
            folder, local_files_only=True, dtype=torch.float32, output_loading_info=True
        )
    )
    model.eval()
    print(f"[cls-pooler-linear] class: {type(model).__name__} id2label={model.config.id2label}")
    print(f"[cls-pooler-linear] loading_info: {info}")
    missing, unexpected = strict_keys(model, folder)
    missing_bad = [k for k in missing if k not in ALLOWED_MISSING]
    print(f"[cls-pooler-linear] strict: missing={missing} unexpected={unexpected}")
    enc = tok(TEXTS, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    print(f"[cls-pooler-linear] token counts: {enc['attention_mask'].sum(1).tolist()}")
    with torch.no_grad():
        logits = model(**enc).logits.float().numpy()
    assert logits.shape == (len(TEXTS), 2), logits.shape
    return twarns + mwarns, info, missing, unexpected, missing_bad, logits


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mean_linear_dir", help="export folder of the mean-pooling + linear run (sentence-transformers)")
    ap.add_argument("cls_pooler_linear_dir", help="export folder of the CLS/pooler + linear run (transformers)")
    ap.add_argument("out_dir", help="golden folder; writes <out_dir>/{mean-linear,cls-pooler-linear}/logits.json")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    ok = True

    _, st_warns, st_missing, st_unexpected, st_bad, st_logits = run_mean_linear(args.mean_linear_dir)
    print(f"[mean-linear] load warnings ({len(st_warns)}):")
    for w in st_warns:
        print(f"    {w}")
    if st_bad or st_unexpected:
        ok = False
    p1 = write(args.out_dir, "mean-linear", ST_LOADER, logits_rows(st_logits))

    hf_warns, info, hf_missing, hf_unexpected, hf_bad, hf_logits = run_cls_pooler_linear(args.cls_pooler_linear_dir)
    print(f"[cls-pooler-linear] load warnings ({len(hf_warns)}):")
    for w in hf_warns:
        print(f"    {w}")
    if hf_bad or hf_unexpected or info.get("unexpected_keys") or [
        k for k in info.get("missing_keys", []) if k not in ALLOWED_MISSING
    ]:
        ok = False
    p2 = write(args.out_dir, "cls-pooler-linear", HF_LOADER, logits_rows(hf_logits))

    print("versions:", torch.__version__, transformers.__version__, sentence_transformers.__version__)
    for name, arr in (("mean-linear", st_logits), ("cls-pooler-linear", hf_logits)):
        print(f"{name} logits:")
        for t, row in zip(TEXTS, arr):
            print(f"    [{f32(row[0])}, {f32(row[1])}]  argmax={int(np.argmax(row))}  {t[:40]!r}")
    print(f"wrote {p1} and {p2}")
    if not ok:
        sys.exit("a load was not clean (missing/unexpected keys); see above")


if __name__ == "__main__":
    main()
