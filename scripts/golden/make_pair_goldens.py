#!/usr/bin/env python3
"""Make golden logits of the native-head sequence classifiers on sentence pairs.

Usage:
    python scripts/golden/make_pair_goldens.py NATIVE_HEADS_DIR

NATIVE_HEADS_DIR holds the random-weight `<Family>ForSequenceClassification` folders made by
make_native_head_goldens.py, each with its own tokenizer. For every family, the folder is loaded
with AutoTokenizer and AutoModelForSequenceClassification (CPU, float32, eval, no_grad), and each
of PAIRS is tokenized as one input, `tokenizer(first, second, truncation=True, max_length=64)`
(longest_first truncation, so the last two pairs are cut to exactly 64 tokens, mostly on the
second side), with the pair template of the folder's tokenizer.json:
  - bert, electra, distilbert, modernbert, deberta-v2: `[CLS] A [SEP] B [SEP]`, type ids 0 / 1;
  - deberta-v3:  the same template (type ids 0 / 1), but the model has no token types;
  - roberta, xlm-roberta, camembert, mpnet: `<s> A </s></s> B </s>`, type ids all 0.
The generic fast tokenizer of these folders does not return token types unless asked, so they are
asked for (`return_token_type_ids=True`): they are the type ids of the tokenizer.json pair
template, which is what graft reads, and they are given to every model whose forward takes
`token_type_ids` (all but distilbert, mpnet and modernbert; of those, only bert, electra and
deberta-v2 have more than one token type, so only theirs change the logits). Each case holds the
text, the pair, the token ids, the type ids and the logits; under `batch` are the logits of all
pairs as one padded batch (`padding=True`, type ids padded with 0). All families go to
NATIVE_HEADS_DIR/pairs.json. A family that fails to load, tokenize or run is reported on stderr
and left out (and the exit status is 1).
"""
import argparse
import inspect
import json
import os
import sys

import tokenizers
import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer

MAX_LENGTH = 64
FAMILIES = ["bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert", "mpnet",
            "modernbert", "deberta-v3", "deberta-v2"]
PAIRS = [
    ("A man is playing a guitar.", "A person plays an instrument."),
    ("The cat sleeps on the sofa.", "A dog is barking loudly outside the house."),
    ("Is the store open on Sunday?",
     "Yes, the shop opens at ten on Sundays and closes at four in the afternoon, except on public "
     "holidays when it stays closed all day."),
    ("short",
     "A much longer second sentence that goes on and on so that truncation of the longest "
     "sequence first has to cut this side rather than the first one, which is very short indeed, "
     "and then keeps going for quite a while longer still."),
]


def encode(tok, pairs, **kw):
    first, second = zip(*pairs)
    return tok(list(first), list(second), truncation=True, max_length=MAX_LENGTH,
               return_token_type_ids=True, **kw)


def truncating_pairs(tokenizers_by_family):
    """PAIRS, with the last second text lengthened until, in every family, a case hits 64."""
    pairs = list(PAIRS)
    while True:
        short = [family for family, tok in tokenizers_by_family.items()
                 if all(len(ids) < MAX_LENGTH for ids in encode(tok, pairs)["input_ids"])]
        if not short:
            return pairs
        first, second = pairs[-1]
        pairs[-1] = (first, second + " And it goes on.")


def run(family, folder, tok, pairs):
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, dtype=torch.float32).eval()
    takes_types = "token_type_ids" in inspect.signature(model.forward).parameters

    def logits(enc):
        inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if takes_types:
            inputs["token_type_ids"] = enc["token_type_ids"]
        with torch.no_grad():
            return model(**inputs).logits

    cases = []
    for first, second in pairs:
        enc = encode(tok, [(first, second)], return_tensors="pt")
        cases.append({"text": first, "pair": second,
                      "input_ids": enc["input_ids"][0].tolist(),
                      "token_type_ids": enc["token_type_ids"][0].tolist(),
                      "logits": logits(enc)[0].tolist()})
    batch = logits(encode(tok, pairs, padding=True, return_tensors="pt")).tolist()
    config = model.config
    return {"model": model.__class__.__name__,
            "labels": [config.id2label[i] for i in range(config.num_labels)],
            "cases": cases,
            "batch": batch}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("native_heads_dir")
    args = parser.parse_args()
    torch.set_num_threads(1)
    failed = []
    toks = {}
    for family in FAMILIES:
        try:
            toks[family] = AutoTokenizer.from_pretrained(
                os.path.join(args.native_heads_dir, family))
        except Exception as e:  # noqa: BLE001 - reported, and the family left out
            print(f"{family}: tokenizer: {type(e).__name__}: {e}", file=sys.stderr)
            failed.append(family)
    pairs = truncating_pairs(toks)
    out = {}
    for family, tok in toks.items():
        try:
            out[family] = run(family, os.path.join(args.native_heads_dir, family), tok, pairs)
        except Exception as e:  # noqa: BLE001 - reported, and the family left out
            print(f"{family}: {type(e).__name__}: {e}", file=sys.stderr)
            failed.append(family)
    with open(os.path.join(args.native_heads_dir, "pairs.json"), "w") as f:
        json.dump({
            "made_with": {"torch": torch.__version__,
                          "transformers": transformers.__version__,
                          "tokenizers": tokenizers.__version__},
            "max_length": MAX_LENGTH,
            "families": out,
        }, f)
        f.write("\n")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
