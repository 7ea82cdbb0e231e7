"""The Python reference for graft's embedding (bi-encoder) runs: a sentence-transformers model
fine-tuned with sentence-transformers' own contrastive losses, as graft trains one.

    python scripts/check/embedding_reference.py parity MODEL_DIR DATA_CSV LOSS STEPS LR
    python scripts/check/embedding_reference.py train MODEL_DIR TRAIN_CSV TEST_CSV LOSS SEED EPOCHS BATCH LR

LOSS is one of
  multiple_negatives_ranking  MultipleNegativesRankingLoss (scale 20, cosine; in-batch negatives,
                              plus the `negative` column as hard negatives when there is one),
  cosine_similarity           CosineSimilarityLoss (MSE between cos(u, v) and the score),
  triplet                     TripletLoss (euclidean distance, margin 5),
each with sentence-transformers' defaults. The CSV has columns `anchor,positive[,negative]` for
multiple_negatives_ranking and triplet (which needs `negative`), and `sentence1,sentence2,score`
for cosine_similarity, whose score is divided by 5 (0-5 STS scores to 0-1, as sentence-transformers'
STS example normalises them; a note says so on stderr).

MODEL_DIR is a sentence-transformers folder (modules.json: Transformer, Pooling, maybe Normalize),
such as models/all-MiniLM-L6-v2 or one graft exports. Each text column is tokenized on its own
(padded to its longest text) and embedded as the loss's forward does it, exactly as
SentenceTransformerTrainer's collator and compute_loss do.

`parity` is the first-steps loss check: the WHOLE of DATA_CSV is ONE batch (so the data order
cannot differ), STEPS AdamW steps (torch.optim.AdamW, eps 1e-8, weight decay 0.01 except on the
1-D weights, that is biases and LayerNorm weights) at the constant rate LR, no warmup, no
clipping, in train mode with the dropout that MODEL_DIR's config.json sets (give it a folder with
dropout 0, as scripts/check/first_steps.sh does, or the losses are random); it prints one JSON line
with the loss of each step before its update, to 7 significant digits.

`train` is the recipe of scripts/check/pairs_reference.py with a contrastive loss: every weight
trained, AdamW (weight decay 0.01, none on biases and LayerNorm weights) at LR, linear decay after
10% warmup (warmup = int(0.1 * steps)), batches of BATCH drawn from a reshuffle of the training
file each epoch (the last batch may be short), no clipping, texts truncated to 128 tokens, EPOCHS
epochs. Then the model is scored on TEST_CSV:
  - sentence1,sentence2,score data: Pearson and Spearman of cos(u, v) against the gold score
    (sentence-transformers' EmbeddingSimilarityEvaluator);
  - anchor,positive[,negative] data: each anchor ranked against the corpus of all distinct
    positives and negatives of the test file (in order of first appearance, positive before
    negative within a row) by cosine similarity, ties broken by corpus order; its own positive is
    the one relevant text: recall@1, recall@5, recall@10 and MRR@10; with negatives also the
    TripletEvaluator-style accuracy, the share of rows with cos(a, p) > cos(a, n).
Prints one JSON line of the metrics.

Runs on the CPU with 2 threads (THREADS in the environment changes that). Needs torch,
sentence-transformers (made with 6.3.0) and scipy; not a test dependency.
"""

import csv
import json
import math
import os
import random
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator  # noqa: E402
from sentence_transformers.sentence_transformer.losses import (  # noqa: E402
    CosineSimilarityLoss,
    MultipleNegativesRankingLoss,
    TripletLoss,
)

LOSSES = {
    "multiple_negatives_ranking": MultipleNegativesRankingLoss,
    "cosine_similarity": CosineSimilarityLoss,
    "triplet": TripletLoss,
}


def read(path, loss):
    """(text columns, scores or None): columns is a list of lists of texts, one per column."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames
        rows = list(reader)
    if loss == "cosine_similarity":
        if header[:3] != ["sentence1", "sentence2", "score"]:
            sys.exit(f"{path}: cosine_similarity needs columns sentence1,sentence2,score, not {header}")
        print("note: scores divided by 5 (0-5 to 0-1), as sentence-transformers' STS example does",
              file=sys.stderr)
        columns = [[r["sentence1"] for r in rows], [r["sentence2"] for r in rows]]
        return columns, [float(r["score"]) / 5.0 for r in rows]
    names = ["anchor", "positive", "negative"] if "negative" in header else ["anchor", "positive"]
    if header[: len(names)] != names:
        sys.exit(f"{path}: {loss} needs columns anchor,positive[,negative], not {header}")
    if loss == "triplet" and "negative" not in names:
        sys.exit(f"{path}: triplet needs a negative column")
    return [[r[n] for r in rows] for n in names], None


def features(model, columns, scores, index=None):
    """The loss inputs for the rows `index` (all rows if None), as the collator makes them."""
    if index is None:
        index = range(len(columns[0]))
    feats = [model.preprocess([col[i] for i in index]) for col in columns]
    labels = torch.tensor([scores[i] for i in index]) if scores is not None else None
    return feats, labels


def optimizer_for(model, lr):
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        eps=1e-8,
    )


def dropout_note(model):
    config = model[0].auto_model.config
    rates = {k: getattr(config, k) for k in ("hidden_dropout_prob", "attention_probs_dropout_prob")
             if getattr(config, k, 0.0)}
    if rates:
        print(f"note: dropout is on ({rates}), so the losses are random", file=sys.stderr)


def parity(model_dir, data_csv, loss_name, steps, lr):
    torch.manual_seed(0)
    model = SentenceTransformer(model_dir, device="cpu")
    dropout_note(model)
    columns, scores = read(data_csv, loss_name)
    loss_fn = LOSSES[loss_name](model)
    feats, labels = features(model, columns, scores)
    optimizer = optimizer_for(model, lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = loss_fn(feats, labels)
        losses.append(float(f"{loss.item():.7g}"))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    print(json.dumps({"mode": "parity", "loss": loss_name, "examples": len(columns[0]), "losses": losses}))


def retrieval(model, columns):
    anchors, positives = columns[0], columns[1]
    negatives = columns[2] if len(columns) > 2 else None
    corpus, where = [], {}
    for i in range(len(anchors)):
        for text in [positives[i]] + ([negatives[i]] if negatives else []):
            if text not in where:
                where[text] = len(corpus)
                corpus.append(text)

    def encode(texts):
        return model.encode(texts, batch_size=64, convert_to_tensor=True, normalize_embeddings=True).double()

    a, c = encode(anchors), encode(corpus)
    sims = (a @ c.T).numpy()
    ranks = []
    for i, row in enumerate(sims):
        order = np.argsort(-row, kind="stable")  # ties: the earlier corpus text first
        ranks.append(int(np.nonzero(order == where[positives[i]])[0][0]))
    ranks = np.array(ranks)
    metrics = {
        "recall@1": float(np.mean(ranks < 1)),
        "recall@5": float(np.mean(ranks < 5)),
        "recall@10": float(np.mean(ranks < 10)),
        "mrr@10": float(np.mean(np.where(ranks < 10, 1.0 / (ranks + 1), 0.0))),
        "corpus": len(corpus),
    }
    if negatives:
        p, n = encode(positives), encode(negatives)
        metrics["triplet_accuracy"] = float(((a * p).sum(-1) > (a * n).sum(-1)).double().mean())
    return metrics


def train(model_dir, train_csv, test_csv, loss_name, seed, epochs, size, lr):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    model = SentenceTransformer(model_dir, device="cpu")
    model.max_seq_length = 128
    columns, scores = read(train_csv, loss_name)
    test_columns, test_scores = read(test_csv, loss_name)
    loss_fn = LOSSES[loss_name](model)
    optimizer = optimizer_for(model, lr)
    n = len(columns[0])
    steps = epochs * math.ceil(n / size)
    warmup = int(0.1 * steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: s / max(1, warmup) if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup)),
    )
    started = time.time()
    epoch_losses = []
    for _ in range(epochs):
        model.train()
        order = list(range(n))
        random.shuffle(order)
        total = 0.0
        for start in range(0, n, size):
            index = order[start : start + size]
            feats, labels = features(model, columns, scores, index)
            loss = loss_fn(feats, labels)
            total += loss.item() * len(index)
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
        epoch_losses.append(total / n)
    model.eval()
    if test_scores is not None:
        evaluator = EmbeddingSimilarityEvaluator(
            test_columns[0], test_columns[1], test_scores, main_similarity="cosine", name="test", write_csv=False
        )
        result = evaluator(model)
        metrics = {"pearson": float(result["test_pearson_cosine"]), "spearman": float(result["test_spearman_cosine"])}
    else:
        with torch.no_grad():
            metrics = retrieval(model, test_columns)
    metrics.update({
        "loss": loss_name,
        "train_loss": [round(x, 6) for x in epoch_losses],
        "epochs": epochs,
        "steps": steps,
        "seed": seed,
        "seconds": round(time.time() - started, 1),
    })
    print(json.dumps(metrics))


def main():
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "parity" and len(sys.argv) == 7:
        model_dir, data_csv, loss, steps, lr = sys.argv[2:7]
        if loss not in LOSSES:
            sys.exit(f"unknown loss {loss}: {', '.join(LOSSES)}")
        return parity(model_dir, data_csv, loss, int(steps), float(lr))
    if mode == "train" and len(sys.argv) == 10:
        model_dir, train_csv, test_csv, loss, seed, epochs, size, lr = sys.argv[2:10]
        if loss not in LOSSES:
            sys.exit(f"unknown loss {loss}: {', '.join(LOSSES)}")
        return train(model_dir, train_csv, test_csv, loss, int(seed), int(epochs), int(size), float(lr))
    sys.exit(__doc__.split("\n\n")[1])


if __name__ == "__main__":
    main()
