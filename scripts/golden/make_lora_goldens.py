#!/usr/bin/env python3
"""Check graft's two LoRA exports with PEFT and transformers, and write the golden logits.

Usage (from the repository root, where the adapter's base_model_name_or_path resolves):
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    python scripts/golden/make_lora_goldens.py ADAPTER_DIR MERGED_DIR OUT_DIR

ADAPTER_DIR is `graft export --model RUN`: a PEFT adapter folder, loaded as a user would:
    PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(BASE, num_labels=N), ADAPTER_DIR)
MERGED_DIR is `graft export --merge --model RUN`: a plain transformers folder, loaded with
    AutoModelForSequenceClassification.from_pretrained(MERGED_DIR)

Both run on CPU, float32, eval mode, no_grad, on the same tokenization (the base model's
tokenizer, padding, truncation at MAX_LENGTH). The script fails unless the PEFT load is clean
(every adapter tensor used, no missing LoRA key) and the two agree to 1e-5. It also merges the
adapter in Python (`merge_and_unload`) and reports the largest difference between those weights
and graft's merged weights. Writes OUT_DIR/logits.json.
"""
import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import peft  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from peft import PeftModel  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

# graft's default for the base folder: sentence-transformers' max_seq_length of all-MiniLM-L6-v2.
MAX_LENGTH = 256

TEXTS = [
    "This coffee is absolutely wonderful, rich and smooth.",
    "Stale, broken and tasteless. I want my money back.",
    "ok",
    "Café naïve 東京 déjà vu — pretty good tea!",
    "I bought this for my dog and he loves it.<br /><br />Will buy again.",
    "The cookies arrived crushed but tasted fine. " * 40,
]


def logits_of(model, tokenizer):
    batch = tokenizer(
        TEXTS, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
    )
    with torch.no_grad():
        return model(**batch).logits


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("adapter")
    parser.add_argument("merged")
    parser.add_argument("out")
    args = parser.parse_args()
    torch.set_num_threads(1)

    config = json.load(open(os.path.join(args.adapter, "adapter_config.json")))
    labels = json.load(open(os.path.join(args.adapter, "labels.json")))
    base_dir = config["base_model_name_or_path"]
    tokenizer = AutoTokenizer.from_pretrained(base_dir)

    base = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, args.adapter).eval()
    saved = load_file(os.path.join(args.adapter, "adapter_model.safetensors"))
    state = model.state_dict()
    # Every saved tensor must have landed in the model (PEFT inserts the adapter name).
    for key, value in saved.items():
        inner = key.replace("base_model.model.", "")
        candidates = [
            k for k, v in state.items()
            if k.endswith(inner.replace(".weight", ".default.weight").replace(".bias", ".default.bias"))
            or k.endswith(inner.replace("classifier.", "classifier.modules_to_save.default."))
        ]
        if not candidates or not any(torch.equal(state[k], value) for k in candidates):
            sys.exit(f"{key}: not loaded by PEFT")
    peft_logits = logits_of(model, tokenizer)

    merged = AutoModelForSequenceClassification.from_pretrained(args.merged).eval()
    merged_logits = logits_of(merged, tokenizer)
    diff = (peft_logits - merged_logits).abs().max().item()
    print(f"PEFT adapter vs graft's merged folder: max abs diff {diff:.3g}")
    if diff > 1e-5:
        sys.exit("the merged folder does not compute what the adapter does")

    python_merged = model.merge_and_unload().state_dict()
    graft_merged = load_file(os.path.join(args.merged, "model.safetensors"))
    weight_diff = max(
        (python_merged[k] - v).abs().max().item()
        for k, v in graft_merged.items()
        if k in python_merged
    )
    print(f"merge_and_unload weights vs graft's merged weights: max abs diff {weight_diff:.3g}")

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "logits.json"), "w") as f:
        json.dump(
            {
                "texts": TEXTS,
                "max_length": MAX_LENGTH,
                "labels": labels,
                "peft_logits": peft_logits.tolist(),
                "merged_logits": merged_logits.tolist(),
                "peft_vs_merged_max_abs_diff": diff,
                "merge_and_unload_weight_max_abs_diff": weight_diff,
                "made_with": {
                    "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "peft": peft.__version__,
                },
            },
            f,
            indent=1,
        )
        f.write("\n")


if __name__ == "__main__":
    main()
