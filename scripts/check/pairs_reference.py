"""The Python reference for graft's pair runs: transformers' AutoModelForSequenceClassification
fine-tuned on the same pairs with the same recipe as configs/snli-minilm.toml and
configs/stsb-minilm.toml, scored on the same test file.

    python scripts/check/pairs_reference.py nli   # SNLI slice: accuracy
    python scripts/check/pairs_reference.py sts   # STS-B slice: Pearson and Spearman
    python scripts/check/pairs_reference.py parity nli|sts INIT_DIR TRAIN_CSV STEPS LR

`parity` is the first-steps loss check (scripts/check/first_steps.sh runs it): INIT_DIR is the
BertForSequenceClassification folder graft exported from a run that did not move its weights
(graft's initial head on MiniLM's encoder, dropout off in its config.json), TRAIN_CSV the pairs
taken as ONE batch (so the data order cannot differ); STEPS AdamW steps at the constant rate LR,
no warmup, no clipping, printing the loss of each step before its update.

The recipe: all-MiniLM-L6-v2 with its family's classifier (BERT's pooler and a linear layer),
every weight trained, AdamW (weight decay 0.01, none on biases and LayerNorm weights) at 3e-5,
linear decay after 10% warmup, batches of 16, 3 epochs, pairs truncated longest first to 128
tokens; STS scores standardized with the training scores' mean and standard deviation, as graft's
regression does by default; the epoch with the lowest loss on the test file is the one scored, as graft's
`monitor = "valid_loss"` picks it with `valid` = the test file. Prints one JSON line. Needs torch,
transformers and scipy; not a test dependency.
"""

import csv
import json
import math
import random
import sys
import time

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from transformers import AutoModelForSequenceClassification, AutoTokenizer

TASKS = {
    "nli": ("datasets/snli-mini", "premise", "hypothesis", "label", False),
    "sts": ("datasets/stsb-mini", "sentence1", "sentence2", "score", True),
}


def read(path, a, b, y):
    with open(path, newline="", encoding="utf-8") as f:
        return [(r[a], r[b], r[y]) for r in csv.DictReader(f)]


def parity(task, init_dir, train_csv, steps, lr):
    _, a, b, y, regression = TASKS[task]
    torch.manual_seed(0)
    torch.set_num_threads(2)
    rows = read(train_csv, a, b, y)
    tokenizer = AutoTokenizer.from_pretrained(init_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        init_dir, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0
    )
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    enc = tokenizer(
        [r[0] for r in rows],
        [r[1] for r in rows],
        truncation=True,
        max_length=128,
        padding=True,
        return_tensors="pt",
        return_token_type_ids=True,
    )
    if regression:
        target = torch.tensor([float(r[2]) for r in rows])
    else:
        target = torch.tensor([labels.index(r[2]) for r in rows])
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        eps=1e-8,
    )
    model.train()
    losses = []
    for _ in range(steps):
        logits = model(**enc).logits
        if regression:
            loss = torch.nn.functional.mse_loss(logits.squeeze(-1), target)
        else:
            loss = torch.nn.functional.cross_entropy(logits, target)
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    print(json.dumps({"mode": "parity", "task": task, "losses": losses, "labels": labels}))


def main():
    if sys.argv[1] == "parity":
        task, init_dir, train_csv, steps, lr = sys.argv[2:7]
        return parity(task, init_dir, train_csv, int(steps), float(lr))
    task = sys.argv[1]
    folder, a, b, y, regression = TASKS[task]
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 42
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    train, test = read(f"{folder}/train.csv", a, b, y), read(f"{folder}/test.csv", a, b, y)
    labels = sorted({r[2] for r in train}) if not regression else [y]
    # graft's default for regression: targets standardized with the training scores' mean and
    # population standard deviation (Pearson and Spearman do not depend on that scaling).
    train_scores = [float(r[2]) for r in train] if regression else [0.0]
    mean = sum(train_scores) / len(train_scores)
    std = math.sqrt(sum((v - mean) ** 2 for v in train_scores) / len(train_scores)) or 1.0
    tokenizer = AutoTokenizer.from_pretrained("models/all-MiniLM-L6-v2")
    model = AutoModelForSequenceClassification.from_pretrained(
        "models/all-MiniLM-L6-v2",
        num_labels=len(labels),
        problem_type="regression" if regression else "single_label_classification",
    )

    def batch(rows):
        enc = tokenizer(
            [r[0] for r in rows],
            [r[1] for r in rows],
            truncation=True,
            max_length=128,
            padding=True,
            return_tensors="pt",
            return_token_type_ids=True,
        )
        if regression:
            target = torch.tensor([(float(r[2]) - mean) / std for r in rows])
        else:
            target = torch.tensor([labels.index(r[2]) for r in rows])
        return enc, target

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=3e-5,
    )
    epochs, size = 3, 16
    steps = epochs * math.ceil(len(train) / size)
    warmup = int(0.1 * steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: s / max(1, warmup) if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup)),
    )
    started = time.time()
    best = None
    for epoch in range(1, epochs + 1):
        model.train()
        order = list(range(len(train)))
        random.shuffle(order)
        for start in range(0, len(order), size):
            enc, target = batch([train[i] for i in order[start : start + size]])
            out = model(**enc, labels=target)
            out.loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
        model.eval()
        losses, predicted = [], []
        with torch.no_grad():
            for start in range(0, len(test), 64):
                rows = test[start : start + 64]
                enc, target = batch(rows)
                out = model(**enc, labels=target)
                losses.append(out.loss.item() * len(rows))
                predicted.extend(out.logits.squeeze(-1).tolist() if regression else out.logits.argmax(-1).tolist())
        loss = sum(losses) / len(test)
        if regression:
            gold = [float(r[2]) for r in test]
            scores = {"pearson": pearsonr(predicted, gold)[0], "spearman": spearmanr(predicted, gold)[0]}
        else:
            gold = [labels.index(r[2]) for r in test]
            scores = {"accuracy": float(np.mean([p == g for p, g in zip(predicted, gold)]))}
        if best is None or loss < best["test_loss"]:
            best = {"epoch": epoch, "test_loss": loss, **scores}
    best["seconds"] = round(time.time() - started, 1)
    best["task"] = task
    best["seed"] = seed
    print(json.dumps(best))


if __name__ == "__main__":
    main()
