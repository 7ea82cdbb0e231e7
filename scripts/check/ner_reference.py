"""The Python reference for graft's token-classification (NER) runs: transformers'
AutoModelForTokenClassification trained with the same recipe as configs/conll-minilm.toml and
configs/wnut-minilm.toml, scored with seqeval on the same test file.

    python scripts/check/ner_reference.py train conll [SEED]   # CoNLL-2003 sample, 10 epochs
    python scripts/check/ner_reference.py train wnut [SEED]    # WNUT-2016 slice, 3 epochs
    python scripts/check/ner_reference.py train conll2003 [SEED]  # full CoNLL-2003 test set, 3 epochs
    python scripts/check/ner_reference.py parity RUN_INIT_DIR TRAIN_FILE STEPS LR [MAXLEN]

`train` fine-tunes all-MiniLM-L6-v2 with a new head (transformers' own init) and prints the
per-epoch test loss and F1, and the precision/recall/F1 of the epoch with the lowest test loss
(as graft's `monitor = "valid_loss"` picks it with `valid` = the test file) and of the last.
`conll2003` (scripts/data/fetch_conll2003.sh fetches it; configs/conll2003-minilm.toml) picks the
epoch by the loss on a separate dev slice and scores only that epoch's model on the test set.

`parity` is the first-steps loss check: RUN_INIT_DIR is the BertForTokenClassification folder
graft exported (graft's initial head on MiniLM's encoder, id2label in its config.json); every
sentence of TRAIN_FILE (.conll or .jsonl) goes in ONE batch with dropout off, so the run is
full-batch gradient descent and does not depend on data order. It prints the loss of each of
the STEPS steps (taken before that step's update), to compare with graft's step losses.

The recipe: tags are the sorted set of the training file's tags (label id = index in that list);
words are tokenized with `is_split_into_words=True`, truncated to 128 tokens; the first token
of each word carries the word's tag, its other tokens and the special tokens are ignored (-100),
as transformers' run_ner.py does; the loss is the mean cross-entropy over the non-ignored tokens
of the batch; AdamW (betas 0.9/0.999, eps 1e-8, weight decay 0.01, none on biases and LayerNorm
weights) at a constant 5e-5 (no warmup, no schedule, no gradient clipping), batches of 16 padded
to their longest, shuffled each epoch with the seed. The test loss is summed over the file's
labelled tokens and divided by their count, as graft's valid_loss is. Each word's prediction is
the argmax of its first token's logits; seqeval (default mode) scores the words, leaving out
those that truncation cut off. Prints one JSON line. Needs torch, transformers and seqeval; not a
test dependency.
"""

import json
import os
import platform
import random
import sys
import time
from importlib.metadata import version

import numpy as np
import torch
import transformers
from seqeval.metrics import f1_score, precision_score, recall_score
from transformers import AutoModelForTokenClassification, AutoTokenizer

BACKBONE = "models/all-MiniLM-L6-v2"
DATASETS = {
    # name: (train, valid (picks the epoch), test, epochs)
    "conll": (
        "datasets/conll2003-sample/train.conll",
        "datasets/conll2003-sample/test.conll",
        "datasets/conll2003-sample/test.conll",
        10,
    ),
    "wnut": ("datasets/wnut16-mini/train.jsonl", "datasets/wnut16-mini/test.jsonl", "datasets/wnut16-mini/test.jsonl", 3),
    "conll2003": (
        "datasets/conll2003/train-2000.conll",
        "datasets/conll2003/dev-500.conll",
        "datasets/conll2003/test.conll",
        3,
    ),
}
IGNORE = -100


def read(path):
    """Sentences as (words, tags) pairs from a CoNLL file (word first, tag last on each line, a
    blank line between sentences, `-DOCSTART-` lines skipped) or a JSON Lines file of
    `{"tokens": [...], "tags": [...]}`."""
    sentences = []
    with open(path, encoding="utf-8") as f:
        if path.endswith(".jsonl"):
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    assert len(row["tokens"]) == len(row["tags"]), path
                    if row["tokens"]:
                        sentences.append((row["tokens"], row["tags"]))
            return sentences
        words, tags = [], []
        for line in f:
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if words:
                    sentences.append((words, tags))
                words, tags = [], []
                continue
            words.append(fields[0])
            tags.append(fields[-1])
        if words:
            sentences.append((words, tags))
    return sentences


def encode(tokenizer, sentences, label_ids, maxlen):
    """One padded batch: the encoding, the aligned labels and each row's word ids."""
    enc = tokenizer(
        [words for words, _ in sentences],
        is_split_into_words=True,
        truncation=True,
        max_length=maxlen,
        padding=True,
        return_tensors="pt",
    )
    labels, word_ids = [], []
    for row, (_, tags) in enumerate(sentences):
        ids = enc.word_ids(row)
        aligned, previous = [], None
        for w in ids:
            aligned.append(label_ids[tags[w]] if w is not None and w != previous else IGNORE)
            previous = w
        labels.append(aligned)
        word_ids.append(ids)
    return enc, torch.tensor(labels), word_ids


def optimizer_for(model, lr):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        # Biases and LayerNorm weights (BERT's only one-dimensional parameters) get no decay.
        (no_decay if name.endswith(".bias") or "LayerNorm" in name else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.999),
        eps=1e-8,
    )


def loss_of(logits, labels, reduction="mean"):
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE, reduction=reduction
    )


def parity(run_init, train_file, steps, lr, maxlen):
    sentences = read(train_file)
    tags = sorted({t for _, ts in sentences for t in ts})
    model = AutoModelForTokenClassification.from_pretrained(
        run_init, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0
    )
    exported = [model.config.id2label[i] for i in range(model.config.num_labels)]
    assert exported == tags, f"id2label {exported} != sorted training tags {tags}"
    # The exported folder may hold no tokenizer: then it is MiniLM's, whose encoder it holds.
    has_tokenizer = any(os.path.exists(os.path.join(run_init, f)) for f in ("tokenizer.json", "vocab.txt"))
    tokenizer = AutoTokenizer.from_pretrained(run_init if has_tokenizer else BACKBONE)
    enc, labels, _ = encode(tokenizer, sentences, {t: i for i, t in enumerate(tags)}, maxlen)
    optimizer = optimizer_for(model, lr)
    model.train()  # dropout is 0 everywhere, so this is the same as eval
    losses = []
    for _ in range(steps):
        loss = loss_of(model(**enc).logits, labels)
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    print(json.dumps({"mode": "parity", "losses": losses, "tags": tags}))


def evaluate(model, tokenizer, test, tags, label_ids, maxlen):
    model.eval()
    loss_sum, count, truth, predicted = 0.0, 0, [], []
    with torch.no_grad():
        for start in range(0, len(test), 64):
            rows = test[start : start + 64]
            enc, labels, word_ids = encode(tokenizer, rows, label_ids, maxlen)
            logits = model(**enc).logits
            loss_sum += loss_of(logits, labels, "sum").item()
            count += int((labels != IGNORE).sum())
            best = logits.argmax(-1).tolist()
            for row, (_, gold) in enumerate(rows):
                previous, truth_row, predicted_row = None, [], []
                for position, w in enumerate(word_ids[row]):
                    if w is not None and w != previous:  # each word's first token
                        truth_row.append(gold[w])
                        predicted_row.append(tags[best[row][position]])
                    previous = w
                truth.append(truth_row)
                predicted.append(predicted_row)
    return {
        "test_loss": loss_sum / max(count, 1),
        "precision": precision_score(truth, predicted),
        "recall": recall_score(truth, predicted),
        "f1": f1_score(truth, predicted),
    }


def train(dataset, seed, maxlen=128, size=16, lr=5e-5):
    train_file, valid_file, test_file, epochs = DATASETS[dataset]
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    train_rows, test = read(train_file), read(test_file)
    valid = test if valid_file == test_file else read(valid_file)
    tags = sorted({t for _, ts in train_rows for t in ts})
    label_ids = {t: i for i, t in enumerate(tags)}
    unknown = sorted({t for _, ts in test + valid for t in ts} - set(tags))
    assert not unknown, f"test tags not in train: {unknown}"
    tokenizer = AutoTokenizer.from_pretrained(BACKBONE)
    model = AutoModelForTokenClassification.from_pretrained(
        BACKBONE,
        num_labels=len(tags),
        id2label=dict(enumerate(tags)),
        label2id=label_ids,
    )
    optimizer = optimizer_for(model, lr)
    started = time.time()
    history, best_valid, best_state = [], None, None
    for epoch in range(1, epochs + 1):
        model.train()
        order = list(range(len(train_rows)))
        random.shuffle(order)
        train_sum, batches = 0.0, 0
        for start in range(0, len(order), size):
            rows = [train_rows[i] for i in order[start : start + size]]
            enc, labels, _ = encode(tokenizer, rows, label_ids, maxlen)
            loss = loss_of(model(**enc).logits, labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            train_sum += loss.item()
            batches += 1
        scores = evaluate(model, tokenizer, valid, tags, label_ids, maxlen)
        if valid is not test:  # the epoch is picked on the dev slice; only it is scored on test
            scores = {"valid_loss": scores["test_loss"]}
            if best_valid is None or scores["valid_loss"] < best_valid[1]:
                best_valid = (epoch, scores["valid_loss"])
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.append({"epoch": epoch, "train_loss": train_sum / batches, **scores})
    pick = lambda e: {k: e[k] for k in ("epoch", "test_loss", "precision", "recall", "f1")}
    if valid is not test:
        model.load_state_dict(best_state)
        best = {"epoch": best_valid[0], **evaluate(model, tokenizer, test, tags, label_ids, maxlen)}
        summary = {"valid_loss": [round(e["valid_loss"], 5) for e in history], "best": pick(best)}
    else:
        best = min(history, key=lambda e: e["test_loss"])
        summary = {
            "test_loss": [round(e["test_loss"], 5) for e in history],
            "f1": [round(e["f1"], 4) for e in history],
            "best": pick(best),
            "last": pick(history[-1]),
        }
    print(
        json.dumps(
            {
                "mode": "train",
                "dataset": dataset,
                "seed": seed,
                "tags": tags,
                **summary,
                "seconds": round(time.time() - started, 1),
                "threads": torch.get_num_threads(),
                "versions": {
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "seqeval": version("seqeval"),
                },
            }
        )
    )


def main():
    torch.set_num_threads(2)
    mode = sys.argv[1]
    if mode == "parity":
        run_init, train_file, steps, lr = sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
        maxlen = int(sys.argv[6]) if len(sys.argv) > 6 else 128
        parity(run_init, train_file, steps, lr, maxlen)
    elif mode == "train":
        train(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 42)
    else:
        sys.exit(f"unknown mode {mode!r}: expected parity or train")


if __name__ == "__main__":
    main()
