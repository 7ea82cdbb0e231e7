#!/usr/bin/env python3
"""Make small `<Family>ForSequenceClassification` folders and their golden logits.

Usage:
    python scripts/golden/make_native_head_goldens.py TEXT_FAMILIES_DIR OUT_DIR

For every family graft reads, a random-weight sequence classifier of the family's config (from
make_text_family_goldens.py, scaled down to one layer; ModernBERT keeps one global and one local
layer) with three labels, saved by `save_pretrained` so its tensors carry the family's own prefix
(`roberta.`, `deberta.`, `model.`, ...) and its head's upstream names:
  - bert:        pooler (dense + tanh) + classifier;
  - roberta, xlm-roberta, camembert, mpnet: classifier.dense + tanh + classifier.out_proj;
  - electra:     classifier.dense + GELU + classifier.out_proj;
  - distilbert:  pre_classifier + ReLU + classifier;
  - deberta-v3:  pooler.dense (ContextPooler, pooler_hidden_act gelu) + classifier;
  - deberta-v2:  the same with pooler_hidden_act tanh;
  - modernbert:  mean pooling (classifier_pooling "mean"), head.dense + GELU + head.norm + classifier.
The tokenizers are the ones TEXT_FAMILIES_DIR's folders were made with (bert takes DistilBERT's
WordPiece, camembert XLM-R's Unigram). For every text, and once more for all texts as one padded
batch, the logits of the model (CPU, float32, eval, no_grad) are written to OUT_DIR/<family>.json;
camembert, which has no folder of its own among the text families, also gets its mean-pooled last
hidden state.
"""
import argparse
import importlib.util
import json
import os
import shutil

import torch
import transformers
from tokenizers import Tokenizer
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    CamembertConfig,
)

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location(
    "families", os.path.join(HERE, "make_text_family_goldens.py"))
families = importlib.util.module_from_spec(spec)
spec.loader.exec_module(families)

LABELS = ["negative", "neutral", "positive"]
TOKENIZER_OF = {"bert": "distilbert", "camembert": "xlm-roberta"}
WORDPIECE = ("bert", "electra", "distilbert", "modernbert", "deberta-v3", "deberta-v2")


def config_of(family, vocab_size):
    if family == "bert":
        config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1,
                            num_attention_heads=4, intermediate_size=64,
                            max_position_embeddings=families.MAX_TOKENS, pad_token_id=0)
    elif family == "camembert":
        config = CamembertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=4, intermediate_size=64,
                                 max_position_embeddings=families.MAX_TOKENS + 2,
                                 type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1,
                                 bos_token_id=0, eos_token_id=2)
    else:
        config = families.family_model(family, vocab_size).config
        if family == "modernbert":
            # Layer 0 global, layer 1 local (layer_types follows the count).
            config = type(config)(**{**config.to_dict(), "num_hidden_layers": 2,
                                     "global_attn_every_n_layers": 2, "layer_types": None,
                                     "classifier_pooling": "mean",
                                     "classifier_activation": "gelu"})
        elif family == "distilbert":
            config.n_layers = 1
        else:
            config.num_hidden_layers = 1
        if family == "deberta-v2":
            config.pooler_hidden_act = "tanh"
    config.num_labels = len(LABELS)
    config.id2label = dict(enumerate(LABELS))
    config.label2id = {label: i for i, label in enumerate(LABELS)}
    return config


def make(family, families_dir, out_dir, seed):
    torch.manual_seed(seed)
    source = os.path.join(families_dir, TOKENIZER_OF.get(family, family))
    tok = Tokenizer.from_file(os.path.join(source, "tokenizer.json"))
    model = AutoModelForSequenceClassification.from_config(
        config_of(family, tok.get_vocab_size())).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    folder = os.path.join(out_dir, family)
    model.save_pretrained(folder, safe_serialization=True)
    for name in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(source, name), os.path.join(folder, name))

    def logits(ids, mask):
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask).logits

    tok.enable_truncation(families.MAX_TOKENS)
    cases = []
    for text in families.TEXTS:
        enc = tok.encode(text)
        ids = torch.tensor([enc.ids])
        case = {"text": text, "input_ids": enc.ids,
                "logits": logits(ids, torch.ones_like(ids))[0].tolist()}
        if family == "camembert":
            with torch.no_grad():
                hidden = model.roberta(input_ids=ids).last_hidden_state
            case["mean"] = hidden.mean(1)[0].tolist()
        cases.append(case)
    if family in WORDPIECE:
        tok.enable_padding(pad_id=0, pad_token="[PAD]")
    else:
        tok.enable_padding(pad_id=1, pad_token="<pad>")
    encs = tok.encode_batch(families.TEXTS)
    ids = torch.tensor([e.ids for e in encs])
    mask = torch.tensor([e.attention_mask for e in encs])
    with open(os.path.join(out_dir, f"{family}.json"), "w") as f:
        json.dump({
            "family": family,
            "model": model.__class__.__name__,
            "labels": LABELS,
            "cases": cases,
            "batch": logits(ids, mask).tolist(),
            "made_with": {"torch": torch.__version__,
                          "transformers": transformers.__version__},
        }, f)
        f.write("\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("families_dir")
    parser.add_argument("out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = ["bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert", "mpnet",
             "modernbert", "deberta-v3", "deberta-v2"]
    for seed, family in enumerate(names, start=21):
        make(family, args.families_dir, args.out, seed)


if __name__ == "__main__":
    main()
