#!/usr/bin/env python3
"""The reference side of `graft bench forward`: the same batch of real texts, tokenized the same
way, through sentence-transformers' model on PyTorch or through ONNX Runtime, timed the same way
(median of the timed passes after one warm-up, mean pooling and L2 normalization included).

  reference_forward.py torch       --model DIR --data CSV --column C --batch 32 --seq-len 128
  reference_forward.py onnxruntime ...   (exports DIR with torch.onnx.export once, cached next to
                                          --onnx-cache, then runs it with every graph
                                          optimization on)
  reference_forward.py random-bert OUT [--size base|minilm] [--tokenizer DIR]
                                          writes a BERT with random weights (base: 768 wide, 12
                                          layers; minilm: all-MiniLM-L6-v2's shape) and MiniLM's
                                          tokenizer: speed does not depend on the weights

Prints one JSON object. Needs torch, transformers, sentence-transformers and onnxruntime; graft's
tests never do.
"""
import argparse
import csv
import json
import os
import resource
import shutil
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def texts(path, column):
    if path.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            return [row[column] for row in csv.DictReader(f)]
    if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
            return [json.loads(line)[column] for line in f if line.strip()]
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def full_batch(tokenizer, args):
    """The first `batch` texts that fill `seq_len` tokens, as graft's bench picks them."""
    chosen = []
    for text in texts(args.data, args.column):
        ids = tokenizer(text, truncation=True, max_length=args.seq_len)["input_ids"]
        if len(ids) == args.seq_len:
            chosen.append(text)
            if len(chosen) == args.batch:
                break
    if len(chosen) < args.batch:
        raise SystemExit(f"only {len(chosen)} texts fill {args.seq_len} tokens")
    return tokenizer(chosen, truncation=True, max_length=args.seq_len, padding=True,
                     return_tensors="np")


def pooled(hidden, mask):
    mask = mask[..., None].astype(hidden.dtype)
    mean = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
    return mean / np.clip(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12, None)


def timed(run, repeats):
    run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds


def torch_forward(args, batch):
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(args.model, device=args.device)[0].auto_model.eval()
    inputs = {k: torch.from_numpy(v).to(args.device) for k, v in batch.items()}

    amp = {"f16": torch.float16, "bf16": torch.bfloat16}.get(args.precision)

    def run():
        # f16/bf16: PyTorch's automatic mixed precision (autocast), the peer of graft's --precision.
        with torch.inference_mode(), torch.autocast(
                device_type=torch.device(args.device).type, dtype=amp, enabled=amp is not None):
            out = model(**inputs).last_hidden_state.float()
            mask = inputs["attention_mask"].unsqueeze(-1).to(out.dtype)
            mean = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            torch.nn.functional.normalize(mean, dim=1).cpu()
    return run, {"runtime": "pytorch", "version": torch.__version__, "device": args.device,
                 "precision": args.precision}


def onnx_forward(args, batch):
    import onnxruntime as ort
    from transformers import AutoModel
    path = os.path.join(args.onnx_cache, os.path.basename(os.path.normpath(args.model)) + ".onnx")
    if not os.path.exists(path):
        os.makedirs(args.onnx_cache, exist_ok=True)
        model = AutoModel.from_pretrained(args.model).eval()
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in batch]

        class Hidden(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *inputs):
                return self.model(**dict(zip(names, inputs))).last_hidden_state

        model = Hidden().eval()
        sample = tuple(torch.from_numpy(batch[n][:2, :16]) for n in names)
        axes = {n: {0: "batch", 1: "seq"} for n in names}
        axes["last_hidden_state"] = {0: "batch", 1: "seq"}
        tmp = path + ".tmp"
        torch.onnx.export(model, sample, tmp, input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
        shutil.move(tmp, path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    feed = {k: v.astype(np.int64) for k, v in batch.items() if k in wanted}

    def run():
        hidden = session.run(None, feed)[0]
        pooled(hidden, batch["attention_mask"])
    return run, {"runtime": "onnxruntime", "version": ort.__version__}


def random_bert(out, size, tokenizer):
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    shapes = {"base": (768, 12, 12, 3072), "minilm": (384, 6, 12, 1536)}
    hidden, layers, heads, inner = shapes[size]
    config = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=inner, vocab_size=30522)
    BertModel(config).eval().save_pretrained(out)
    for name in ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]:
        shutil.copy(os.path.join(tokenizer, name), out)
    print(json.dumps({"wrote": out}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runtime", choices=["torch", "onnxruntime", "random-bert"])
    ap.add_argument("out", nargs="?")
    ap.add_argument("--model", default="models/all-MiniLM-L6-v2")
    ap.add_argument("--data", default="datasets/fine-foods/training_data.csv")
    ap.add_argument("--column", default="review")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="torch only: cpu or cuda")
    ap.add_argument("--precision", default="f32", choices=["f32", "f16", "bf16"],
                    help="torch only: f16/bf16 run under autocast")
    ap.add_argument("--onnx-cache", default="bench-results/onnx")
    ap.add_argument("--size", default="base", choices=["base", "minilm"])
    ap.add_argument("--tokenizer", default="models/all-MiniLM-L6-v2")
    args = ap.parse_args()
    if args.runtime == "random-bert":
        return random_bert(args.out, args.size, args.tokenizer)
    torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer
    batch = dict(full_batch(AutoTokenizer.from_pretrained(args.model), args))
    run, result = (torch_forward if args.runtime == "torch" else onnx_forward)(args, batch)
    seconds = timed(run, args.repeats)
    median = statistics.median(seconds)
    result.update({"model": args.model, "batch": args.batch, "seq_len": args.seq_len,
                   "threads": args.threads, "seconds": seconds, "median_seconds": median,
                   "sequences_per_second": args.batch / median,
                   "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
