#!/usr/bin/env python3
"""Record transformers' per-token `last_hidden_state` of every text family graft reads.

Usage:
    python scripts/golden/make_token_goldens.py GOLDEN_DIR

GOLDEN_DIR is `crates/graft-model/tests/golden`. The script reads the committed random-weight
folders there (made by `make_text_family_goldens.py` and, for BERT and CamemBERT,
`make_native_head_goldens.py`) and changes none of them. It loads each folder's base model with
`AutoModel` (CPU, float32, eval, no_grad) and tokenizes with the folder's `tokenizer.json` through
the `tokenizers` library, truncated to 64 tokens. Two texts of different lengths run as one batch
padded with the tokenizer's own pad id.

It writes GOLDEN_DIR/tokens/<family>.json. For each text, the file holds the token ids and the
last hidden state at the non-padding positions only, each value rounded to 7 significant digits.
The script checks that the ids equal those of the folder's own golden JSON. Where that JSON has
the text's mean-pooled features, it also checks that the mean of these rows gives them.
"""
import argparse
import json
import os

import torch
import tokenizers
import transformers
from tokenizers import Tokenizer
from transformers import AutoModel

MAX_TOKENS = 64
# A text with HTML breaks (30 to 36 tokens) and a one-word text (4 or 5), from the family goldens.
TEXTS = [
    "I bought this for my dog and he loves it.<br /><br />Will buy again.",
    "ok",
]
# The token golden's name and the committed folder it reads.
FOLDERS = [
    ("bert", "native_heads/bert"),
    ("roberta", "text_families/roberta"),
    ("xlm-roberta", "text_families/xlm-roberta"),
    ("camembert", "native_heads/camembert"),
    ("electra", "text_families/electra"),
    ("distilbert", "text_families/distilbert"),
    ("mpnet", "text_families/mpnet"),
    ("modernbert", "text_families/modernbert"),
    ("deberta-v3", "text_families/deberta-v3"),
    ("deberta-v2", "text_families/deberta-v2"),
]


def rounded(values):
    return [float(f"{v:.7g}") for v in values]


def make(name, folder, golden_dir):
    path = os.path.join(golden_dir, folder)
    model, info = AutoModel.from_pretrained(path, output_loading_info=True)
    # A sequence classifier without a pretrained pooler leaves the base model's pooler random;
    # the last hidden state does not read it. Nothing else may be missing.
    missing = [k for k in info["missing_keys"] if not k.startswith("pooler.")]
    assert not missing, f"{folder}: missing {missing}"
    model.eval()
    tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    tok.enable_truncation(MAX_TOKENS)
    pad = next(t for t in ["[PAD]", "<pad>"] if tok.token_to_id(t) is not None)
    tok.enable_padding(pad_id=tok.token_to_id(pad), pad_token=pad)
    encs = tok.encode_batch(TEXTS)
    ids = torch.tensor([e.ids for e in encs])
    mask = torch.tensor([e.attention_mask for e in encs])
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state

    with open(os.path.join(golden_dir, f"{folder}.json")) as f:
        family_cases = {c["text"]: c for c in json.load(f)["cases"]}
    cases = []
    for text, enc, states in zip(TEXTS, encs, hidden):
        n = sum(enc.attention_mask)
        family_case = family_cases[text]
        assert enc.ids[:n] == family_case["input_ids"], f"{folder}: ids of {text!r}"
        if "mean" in family_case:
            mean = states[:n].mean(0)
            diff = (mean - torch.tensor(family_case["mean"])).abs().max().item()
            assert diff < 1e-5, f"{folder}: mean of {text!r} is {diff} off"
        cases.append({
            "text": text,
            "input_ids": enc.ids[:n],
            "token_type_ids": enc.type_ids[:n],
            "last_hidden_state": [rounded(row.tolist()) for row in states[:n]],
        })
    out = os.path.join(golden_dir, "tokens", f"{name}.json")
    with open(out, "w") as f:
        json.dump({
            "family": name,
            "folder": folder,
            "max_tokens": MAX_TOKENS,
            "pad_token_id": tok.token_to_id(pad),
            "hidden_size": hidden.shape[-1],
            "cases": cases,
            "made_with": {m.__name__: m.__version__ for m in (torch, transformers, tokenizers)},
        }, f)
        f.write("\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("golden_dir")
    golden_dir = parser.parse_args().golden_dir
    torch.set_num_threads(1)
    os.makedirs(os.path.join(golden_dir, "tokens"), exist_ok=True)
    for name, folder in FOLDERS:
        make(name, folder, golden_dir)


if __name__ == "__main__":
    main()
