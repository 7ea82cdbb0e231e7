#!/usr/bin/env python3
"""Make small RoBERTa-family model folders and their golden outputs with transformers.

Usage:
    python scripts/golden/make_roberta_goldens.py OUT_DIR

No RoBERTa, XLM-R or CamemBERT weights can be fetched here, so each folder is a random-weight model
of the family's real config shape (scaled down: hidden 32, 2 layers), with a tokenizer trained
with the `tokenizers` library on the bundled fine-food reviews:
  - roberta:      byte-level BPE, `<s> ... </s>`, RobertaProcessing (as roberta-base);
  - xlm-roberta:  Unigram (SentencePiece-style Metaspace), `<s> ... </s>` (as xlm-roberta-base).
Both have pad_token_id 1 and max_position_embeddings 66 (64 tokens + padding_idx + 1), so texts
longer than 64 tokens are truncated, and RoBERTa's position ids (from padding_idx + 1, skipping
padding) are exercised with real padding in the batch.

For every text: the token ids, and from `RobertaModel`/`XLMRobertaModel` (CPU, float32, eval,
no_grad) the mean-pooled last hidden state, the raw first-token state and the pooler output. The
same texts run once more as one padded batch (the tokenizer's padding, pad id 1). Writes
OUT_DIR/<family>/{config.json, model.safetensors, tokenizer.json, tokenizer_config.json} and
OUT_DIR/<family>.json; `AutoTokenizer` on the folder must give the same ids as `tokenizers`.
"""
import argparse
import csv
import json
import os

import torch
import transformers
import tokenizers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoTokenizer,
    RobertaConfig,
    RobertaModel,
    XLMRobertaConfig,
    XLMRobertaModel,
)

MAX_TOKENS = 64
TEXTS = [
    "This coffee is absolutely wonderful, rich and smooth.",
    "ok",
    "Café naïve 東京 déjà vu — pretty good tea! 🍵",
    "I bought this for my dog and he loves it.<br /><br />Will buy again.",
    "The cookies arrived crushed but tasted fine. " * 12,
    "   leading and trailing spaces   ",
]
SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def reviews():
    root = os.path.join(os.path.dirname(__file__), "../../datasets/fine-foods-mini")
    for name in ["train.csv", "test.csv"]:
        with open(os.path.join(root, name), newline="") as f:
            for row in csv.DictReader(f):
                yield row["review"]


def bpe_tokenizer():
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(reviews(), trainer)
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")), add_prefix_space=False
    )
    return tok


def unigram_tokenizer():
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=SPECIAL, unk_token="<unk>")
    tok.train_from_iterator(reviews(), trainer)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    return tok


def make(family, out_dir):
    torch.manual_seed({"roberta": 1, "xlm-roberta": 2}[family])
    tok = bpe_tokenizer() if family == "roberta" else unigram_tokenizer()
    assert [tok.token_to_id(t) for t in SPECIAL] == [0, 1, 2, 3, 4]
    tok.enable_truncation(MAX_TOKENS)
    config_class, model_class = {
        "roberta": (RobertaConfig, RobertaModel),
        "xlm-roberta": (XLMRobertaConfig, XLMRobertaModel),
    }[family]
    config = config_class(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=MAX_TOKENS + 2,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    model = model_class(config).eval()
    # Random but not tiny weights, so every path matters at 1e-5.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    folder = os.path.join(out_dir, family)
    model.save_pretrained(folder, safe_serialization=True)
    tok.no_truncation()
    tok.save(os.path.join(folder, "tokenizer.json"))
    tok.enable_truncation(MAX_TOKENS)
    # transformers and sentence-transformers read tokenizer.json as it is through the generic
    # fast tokenizer (the family classes would rebuild the pipeline around the vocabulary).
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>", "sep_token": "</s>",
            "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>",
            "model_max_length": MAX_TOKENS,
        }, f, indent=1)
    auto = AutoTokenizer.from_pretrained(folder)
    for text in TEXTS:
        assert auto(text, truncation=True)["input_ids"] == tok.encode(text).ids, text

    def outputs(ids, mask):
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask)
        hidden = out.last_hidden_state
        m = mask.unsqueeze(-1).float()
        mean = (hidden * m).sum(1) / m.sum(1)
        return mean, hidden[:, 0], out.pooler_output

    cases = []
    for text in TEXTS:
        enc = tok.encode(text)
        ids = torch.tensor([enc.ids])
        mean, cls, pooler = outputs(ids, torch.ones_like(ids))
        cases.append({
            "text": text,
            "input_ids": enc.ids,
            "token_type_ids": enc.type_ids,
            "mean": mean[0].tolist(),
            "cls": cls[0].tolist(),
            "pooler": pooler[0].tolist(),
        })
    tok.enable_padding(pad_id=1, pad_token="<pad>")
    encs = tok.encode_batch(TEXTS)
    ids = torch.tensor([e.ids for e in encs])
    mask = torch.tensor([e.attention_mask for e in encs])
    mean, cls, pooler = outputs(ids, mask)
    batch = {"mean": mean.tolist(), "cls": cls.tolist(), "pooler": pooler.tolist()}
    with open(os.path.join(out_dir, f"{family}.json"), "w") as f:
        json.dump({
            "family": family,
            "max_tokens": MAX_TOKENS,
            "cases": cases,
            "batch": batch,
            "made_with": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "tokenizers": tokenizers.__version__,
            },
        }, f)
        f.write("\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for family in ["roberta", "xlm-roberta"]:
        make(family, args.out)


if __name__ == "__main__":
    main()
