#!/usr/bin/env python3
"""Make a PEFT LoRA adapter for the small RoBERTa golden folder, as a Python user would.

Usage (from the repository root):
    python scripts/golden/make_peft_roberta_adapter.py crates/graft/tests/golden/lora/roberta-adapter

`get_peft_model(RobertaForSequenceClassification(BASE, num_labels=2), LoraConfig(SEQ_CLS, r=2,
lora_alpha=4, lora_dropout=0.1, target_modules=["query", "value"], init_lora_weights=False))`
and `save_pretrained`, so the factors are random (B is not zero) and every key carries PEFT's
`base_model.model.roberta.` prefix. graft must continue training from it, and predict from it
through RoBERTa's own head (`classifier.dense` + tanh + `classifier.out_proj`, saved by
`modules_to_save`): `probabilities.json` holds PEFT's softmax probabilities for the text-family
golden texts.
"""
import json
import os
import sys

import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForSequenceClassification

BASE = "crates/graft-model/tests/golden/text_families/roberta"


def main():
    out = sys.argv[1]
    torch.manual_seed(11)
    model = AutoModelForSequenceClassification.from_pretrained(BASE, num_labels=2)
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=2,
        lora_alpha=4,
        lora_dropout=0.1,
        target_modules=["query", "value"],
        init_lora_weights=False,
    )
    get_peft_model(model, config).save_pretrained(out)
    path = os.path.join(out, "adapter_config.json")
    adapter_config = json.load(open(path))
    adapter_config["base_model_name_or_path"] = BASE
    with open(path, "w") as f:
        json.dump(adapter_config, f, indent=2, sort_keys=True)
        f.write("\n")

    write_probabilities(out)


def write_probabilities(out):
    from peft import PeftModel
    from tokenizers import Tokenizer

    base = AutoModelForSequenceClassification.from_pretrained(BASE, num_labels=2)
    model = PeftModel.from_pretrained(base, out).eval()
    tok = Tokenizer.from_file(os.path.join(BASE, "tokenizer.json"))
    tok.enable_truncation(64)
    golden = json.load(open("crates/graft-model/tests/golden/text_families/roberta.json"))
    rows = []
    with torch.no_grad():
        for case in golden["cases"]:
            ids = torch.tensor([tok.encode(case["text"]).ids])
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            rows.append({"text": case["text"], "probabilities": logits.softmax(-1)[0].tolist()})
    with open(os.path.join(out, "probabilities.json"), "w") as f:
        json.dump(rows, f)
        f.write("\n")


if __name__ == "__main__":
    main()
