"""Runs graft ONNX exports in onnxruntime and compares them with graft's own outputs.

    python scripts/check/onnx_runtime.py ONNX_DIR...
    python scripts/check/onnx_runtime.py ONNX_DIR TEXTS GRAFT_OUTPUT

The first form feeds each folder's check.safetensors inputs (written by graft export) to
onnxruntime and compares every output with graft's (`expected.<output>`). The second tokenizes
TEXTS (one per line) with the folder's tokenizer.json, as exported, and compares with
GRAFT_OUTPUT: `graft predict` JSON lines (softmax or sigmoid of the logits, or the regression
values) or a `graft embed` safetensors file. Needs onnxruntime, numpy and safetensors (and
tokenizers for texts); not a test dependency.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import onnxruntime as ort


def text_inputs(folder, path, session):
    from tokenizers import Tokenizer

    # The exported tokenizer truncates and pads as graft does.
    tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    if tokenizer.padding is None:
        tokenizer.enable_padding()
    texts = [line.rstrip("\n") for line in open(path, encoding="utf-8")]
    encodings = tokenizer.encode_batch(texts)
    feeds = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }
    names = {i.name for i in session.get_inputs()}
    if "token_type_ids" in names:
        feeds["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
    return feeds


def check_file(folder, tolerance):
    from safetensors.numpy import load_file

    session = ort.InferenceSession(os.path.join(folder, "model.onnx"))
    check = load_file(os.path.join(folder, "check.safetensors"))
    feeds = {i.name: check[i.name] for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    worst = 0.0
    for name, got in zip(names, session.run(None, feeds)):
        expected = check[f"expected.{name}"]
        scale = max(1.0, float(np.abs(expected).max()))
        worst = max(worst, float(np.abs(got - expected).max()) / scale)
    shape = list(next(iter(feeds.values())).shape)
    ok = math.isfinite(worst) and worst <= tolerance
    print(f"{'ok  ' if ok else 'FAIL'} {folder}: inputs {shape}, outputs {names}, max diff {worst:.2g} (relative)")
    return ok


def main():
    if all(os.path.isdir(a) for a in sys.argv[1:] if not a.startswith("-")):
        tolerance = 1e-4
        folders = [a for a in sys.argv[1:] if not a.startswith("-")]
        results = [check_file(f, tolerance) for f in folders]
        sys.exit(0 if all(results) else 1)
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("inputs", help="texts, one per line")
    parser.add_argument("graft_output")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()

    session = ort.InferenceSession(os.path.join(args.folder, "model.onnx"))
    config = json.load(open(os.path.join(args.folder, "config.json")))
    feeds = text_inputs(args.folder, args.inputs, session)
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, feeds)))

    if args.graft_output.endswith(".safetensors"):
        from safetensors.numpy import load_file

        expected = load_file(args.graft_output)["embeddings"]
        got = outputs["features"]
        what = "features"
    else:
        rows = [json.loads(line) for line in open(args.graft_output)]
        logits = outputs["logits"]
        problem = config.get("problem_type", "single_label_classification")
        labels = json.load(open(os.path.join(args.folder, "labels.json")))
        if problem == "regression":
            got = logits
            expected = np.array([[r["value"]] if "value" in r else r["values"] for r in rows])
        else:
            if problem == "multi_label_classification":
                got = 1 / (1 + np.exp(-logits))
            else:
                shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
                got = shifted / shifted.sum(axis=1, keepdims=True)
            expected = np.array([[r["probabilities"][l] for l in labels] for r in rows])
        what = "probabilities"
    diff = float(np.abs(got - expected).max())
    print(f"{what}: {got.shape[0]} rows, max abs diff {diff:.3g} (tolerance {args.tolerance})")
    if not math.isfinite(diff) or diff > args.tolerance:
        sys.exit(1)


if __name__ == "__main__":
    main()
