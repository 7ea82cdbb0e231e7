#!/usr/bin/env python3
"""Check graft's native-head exports in transformers and PEFT (run by hand; needs torch,
transformers and peft).

Usage:
    python scripts/golden/check_native_exports.py DIR FAMILY...

For each FAMILY, DIR holds what graft made from a run with `[head] kind = "native"`:
  - FAMILY-export/       `graft export` of the full run,
  - FAMILY-run.jsonl     `graft predict` of that run on DIR/texts.csv (`review` column),
  - FAMILY-adapter/      `graft export` of a LoRA run with the same head,
  - FAMILY-lora-run.jsonl `graft predict` of the LoRA run.
The export is loaded with `AutoModelForSequenceClassification.from_pretrained` (strict: no
missing or unexpected keys), the adapter with `PeftModel.from_pretrained` on its base model, and
their softmax probabilities are compared with graft's; the largest difference is printed.
"""
import csv
import json
import os
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def graft_probabilities(path, labels):
    rows = [json.loads(line) for line in open(path)]
    return torch.tensor([[row["probabilities"][label] for label in labels] for row in rows])


def probabilities(model, tokenizer, texts):
    out = []
    with torch.no_grad():
        for text in texts:
            enc = tokenizer(text, truncation=True, return_tensors="pt",
                            return_token_type_ids=False)
            out.append(model(**enc).logits.softmax(-1)[0])
    return torch.stack(out)


def main():
    root, families = sys.argv[1], sys.argv[2:]
    with open(os.path.join(root, "texts.csv"), newline="") as f:
        texts = [row["review"] for row in csv.DictReader(f)]
    for family in families:
        export = os.path.join(root, f"{family}-export")
        model, info = AutoModelForSequenceClassification.from_pretrained(
            export, output_loading_info=True)
        model.eval()
        problems = {k: v for k, v in info.items() if v and k != "error_msgs"}
        assert not problems, (family, problems)
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        tokenizer = AutoTokenizer.from_pretrained(export)
        ours = graft_probabilities(os.path.join(root, f"{family}-run.jsonl"), labels)
        diff = (probabilities(model, tokenizer, texts) - ours).abs().max().item()

        adapter = os.path.join(root, f"{family}-adapter")
        config = json.load(open(os.path.join(adapter, "adapter_config.json")))
        base = AutoModelForSequenceClassification.from_pretrained(
            config["base_model_name_or_path"], num_labels=len(labels))
        peft = PeftModel.from_pretrained(base, adapter).eval()
        ours = graft_probabilities(os.path.join(root, f"{family}-lora-run.jsonl"), labels)
        adapter_diff = (probabilities(peft, tokenizer, texts) - ours).abs().max().item()
        print(f"{family}: {type(model).__name__} max abs diff {diff:.2e}; "
              f"PEFT adapter {adapter_diff:.2e}")


if __name__ == "__main__":
    main()
