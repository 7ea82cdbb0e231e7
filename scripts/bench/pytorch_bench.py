#!/usr/bin/env python3
"""The PyTorch side of BENCHMARKS.md: the same work as `graft bench` / `graft train`, with torch,
transformers and sentence-transformers (install them in a venv; the tests never need them).

Modes (run each in its own process so peak RSS is its own; forward throughput is
reference_forward.py's):
  cached    frozen-backbone fine-tune: embed train/valid/test once (SentenceTransformer.encode,
            which sorts by length), then 20 epochs of a linear head, then test accuracy
  uncached  the same fine-tune the way a default HF Trainer run does it: the frozen backbone runs
            on every batch of every epoch (shuffled, padded to the batch's longest). --epochs
            epochs are timed; the 20-epoch time is extrapolated from them and printed as such.
  finetune  every backbone weight trains with the head (AdamW, 5e-5 backbone / 1e-3 head, batch
            32, at most 128 tokens) for --epochs epochs, timed per epoch, then test accuracy

--device cuda runs any mode on the GPU (scripts/bench/gpu.sh).

Prints one JSON object per run.
"""
import argparse
import csv
import json
import os
import resource
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402


def read(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["review"] for r in rows], [r["score"] for r in rows]


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mean_pool(hidden, mask):
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def split(n, fraction, seed):
    order = np.random.default_rng(seed).permutation(n)
    n_valid = round(n * fraction)
    return np.sort(order[n_valid:]), np.sort(order[:n_valid])


def train_head(train_x, train_y, valid_x, valid_y, epochs, seed):
    torch.manual_seed(seed)
    head = torch.nn.Linear(train_x.shape[1], 2)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.01)
    best = (float("inf"), None)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(train_y), generator=g).split(32):
            loss = F.cross_entropy(head(train_x[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            valid_loss = F.cross_entropy(head(valid_x), valid_y).item()
        if valid_loss < best[0]:
            best = (valid_loss, {k: v.clone() for k, v in head.state_dict().items()})
    head.load_state_dict(best[1])
    return head


def data(args):
    texts, labels = read(args.train)
    test_texts, test_labels = read(args.test)
    names = sorted(set(labels))
    y = torch.tensor([names.index(l) for l in labels])
    test_y = torch.tensor([names.index(l) for l in test_labels])
    tr, va = split(len(texts), 0.1, 42)
    return texts, y, tr, va, test_texts, test_y


def cached(args):
    from sentence_transformers import SentenceTransformer
    start = time.perf_counter()
    st = SentenceTransformer(args.model, device=args.device)
    st.max_seq_length = 256
    texts, y, tr, va, test_texts, test_y = data(args)
    t0 = time.perf_counter()
    emb = lambda ts: st.encode(ts, batch_size=32, convert_to_tensor=True, normalize_embeddings=True)
    x = emb(texts)
    test_x = emb(test_texts)
    embed_seconds = time.perf_counter() - t0
    x, test_x = x.cpu(), test_x.cpu()
    head = train_head(x[tr], y[tr], x[va], y[va], args.epochs, 42)
    with torch.no_grad():
        acc = (head(test_x).argmax(1) == test_y).float().mean().item()
    return {"mode": "cached", "epochs": args.epochs, "seconds": time.perf_counter() - start,
            "embed_seconds": embed_seconds, "test_accuracy": acc}


def uncached(args):
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    texts, y, tr, va, test_texts, test_y = data(args)
    enc = tok(texts, truncation=True, max_length=256)
    torch.manual_seed(42)
    head = torch.nn.Linear(384, 2)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(42)

    def features(indices):
        batch = tok.pad({"input_ids": [enc["input_ids"][i] for i in indices],
                         "attention_mask": [enc["attention_mask"][i] for i in indices]},
                        return_tensors="pt")
        with torch.no_grad():
            out = model(**batch).last_hidden_state
        return F.normalize(mean_pool(out, batch["attention_mask"]), dim=1)

    epoch_times = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        order = torch.tensor(tr)[torch.randperm(len(tr), generator=g)]
        for idx in order.split(32):
            loss = F.cross_entropy(head(features(idx.tolist())), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            for idx in torch.tensor(va).split(32):
                F.cross_entropy(head(features(idx.tolist())), y[idx])
        epoch_times.append(time.perf_counter() - t0)
    setup = time.perf_counter() - start - sum(epoch_times)
    t0 = time.perf_counter()
    test_enc = tok(test_texts, truncation=True, max_length=256)
    with torch.no_grad():
        preds = []
        for s in range(0, len(test_texts), 32):
            batch = tok.pad({"input_ids": test_enc["input_ids"][s:s + 32],
                             "attention_mask": test_enc["attention_mask"][s:s + 32]}, return_tensors="pt")
            out = model(**batch).last_hidden_state
            preds.append(head(F.normalize(mean_pool(out, batch["attention_mask"]), dim=1)).argmax(1))
    test_seconds = time.perf_counter() - t0
    per_epoch = statistics.median(epoch_times)
    return {"mode": "uncached", "epochs_timed": args.epochs, "epoch_seconds": epoch_times,
            "test_seconds": test_seconds, "setup_seconds": setup,
            "extrapolated_20_epoch_seconds": setup + 20 * per_epoch + test_seconds}


def finetune(args):
    start = time.perf_counter()
    device = torch.device(args.device)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model).to(device).train()
    texts, y, tr, va, test_texts, test_y = data(args)
    enc = tok(texts, truncation=True, max_length=128)
    torch.manual_seed(42)
    head = torch.nn.Linear(model.config.hidden_size, 2).to(device)
    opt = torch.optim.AdamW([{"params": model.parameters(), "lr": 5e-5},
                             {"params": head.parameters(), "lr": 1e-3}], weight_decay=0.01)
    g = torch.Generator().manual_seed(42)

    def logits(ids, texts_enc):
        batch = tok.pad({"input_ids": [texts_enc["input_ids"][i] for i in ids],
                         "attention_mask": [texts_enc["attention_mask"][i] for i in ids]},
                        return_tensors="pt").to(device)
        out = model(**batch).last_hidden_state
        return head(F.normalize(mean_pool(out, batch["attention_mask"]), dim=1))

    # f16/bf16: autocast with f32 weights, and GradScaler for f16 (PyTorch's AMP recipe).
    amp = {"f16": torch.float16, "bf16": torch.bfloat16}.get(args.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    epoch_times = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        order = torch.tensor(tr)[torch.randperm(len(tr), generator=g)]
        for idx in order.split(32):
            with torch.autocast(device_type=device.type, dtype=amp, enabled=amp is not None):
                out = logits(idx.tolist(), enc)
            loss = F.cross_entropy(out.float(), y[idx].to(device))
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        epoch_times.append(time.perf_counter() - t0)
    model.eval()
    test_enc = tok(test_texts, truncation=True, max_length=128)
    with torch.no_grad():
        preds = torch.cat([logits(list(range(s, min(s + 32, len(test_texts)))), test_enc).argmax(1).cpu()
                           for s in range(0, len(test_texts), 32)])
    acc = (preds == test_y).float().mean().item()
    return {"mode": "finetune", "epochs": args.epochs, "epoch_seconds": epoch_times,
            "seconds": time.perf_counter() - start, "test_accuracy": acc}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["cached", "uncached", "finetune"])
    ap.add_argument("--model", default="models/all-MiniLM-L6-v2")
    ap.add_argument("--train", default="datasets/fine-foods/training_data.csv")
    ap.add_argument("--test", default="datasets/fine-foods/testing_data.csv")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="f32", choices=["f32", "f16", "bf16"],
                    help="finetune: autocast (and GradScaler for f16)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.epochs is None:
        args.epochs = 20 if args.mode == "cached" else 1
    result = {"cached": cached, "uncached": uncached, "finetune": finetune}[args.mode](args)
    result.update({"torch": torch.__version__, "threads": args.threads, "device": args.device,
                   "peak_rss_mib": peak_rss_mib()})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
