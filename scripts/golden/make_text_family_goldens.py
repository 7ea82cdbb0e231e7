#!/usr/bin/env python3
"""Make small text-encoder folders of the families graft reads, and their golden outputs.

Usage:
    python scripts/golden/make_text_family_goldens.py OUT_DIR

No weights of these families can be fetched here, so each folder is a random-weight model of the
family's real config shape (scaled down: hidden 32, 2 layers), with a tokenizer trained with the
`tokenizers` library on the bundled fine-food reviews:
  - roberta:      byte-level BPE, `<s> ... </s>`, RobertaProcessing (as roberta-base);
  - xlm-roberta:  Unigram (SentencePiece-style Metaspace), `<s> ... </s>` (as xlm-roberta-base);
  - electra:      WordPiece, `[CLS] ... [SEP]`, embedding_size 16 < hidden 32, so the
                  `embeddings_project` layer is used (as the ELECTRA small discriminator);
  - distilbert:   WordPiece, DistilBERT's own layer names, no token types;
  - mpnet:        WordPiece with `<s> ... </s>` (as all-mpnet-base-v2), the relative attention
                  bias shared by all layers (buckets beyond the exact range are used by the long
                  text), position ids after padding_idx 1;
  - modernbert:   WordPiece, 4 layers: global attention in layers 0 and 3, sliding-window local
                  attention (local_attention 16, so |query - key| <= 8) in layers 1 and 2, rotary
                  thetas 160000 (global) and 10000 (local), GeGLU, no biases;
  - deberta-v3:   Unigram with `[CLS] ... [SEP]`, DeBERTa-v3's settings: relative attention with
                  c2p and p2c, shared attention keys, log position buckets (8, so the long text
                  reaches the logarithmic range), LayerNorm on the relative embeddings, no
                  absolute positions, no token types;
  - deberta-v2:   WordPiece, DeBERTa-v2's older settings: separate `pos_key_proj` and
                  `pos_query_proj`, `pos_att_type` as the string "p2c|c2p", absolute positions
                  added to the input, token types, embedding_size 16 < hidden 32 (`embed_proj`),
                  no position buckets (relative distances clipped at max_relative_positions 16).
The RoBERTa family and MPNet have pad_token_id 1 and max_position_embeddings 66 (64 tokens + padding_idx +
1); the others 64 positions. Texts longer than 64 tokens are truncated, and one padded batch
exercises the masks (and RoBERTa's position ids, which skip padding).

For every text: the token ids, and from the family's `...Model` (CPU, float32, eval, no_grad) the
mean-pooled last hidden state, the raw first-token state and (RoBERTa family) the pooler output. The
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
    DebertaV2Config,
    DebertaV2Model,
    DistilBertConfig,
    DistilBertModel,
    ElectraConfig,
    ModernBertConfig,
    ModernBertModel,
    MPNetConfig,
    MPNetModel,
    ElectraModel,
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
WORDPIECE_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


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


def wordpiece_tokenizer():
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=400, special_tokens=WORDPIECE_SPECIAL)
    tok.train_from_iterator(reviews(), trainer)
    tok.post_processor = processors.BertProcessing(
        ("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]"))
    )
    return tok


def mpnet_tokenizer():
    tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=400, special_tokens=SPECIAL)
    tok.train_from_iterator(reviews(), trainer)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    return tok


def unigram_cls_tokenizer():
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=400, special_tokens=WORDPIECE_SPECIAL, unk_token="[UNK]"
    )
    tok.train_from_iterator(reviews(), trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return tok


def family_model(family, vocab_size):
    """The family's config (scaled down) and base model, randomly initialised."""
    if family in ("roberta", "xlm-roberta"):
        config_class, model_class = {
            "roberta": (RobertaConfig, RobertaModel),
            "xlm-roberta": (XLMRobertaConfig, XLMRobertaModel),
        }[family]
        config = config_class(
            vocab_size=vocab_size,
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
    elif family == "mpnet":
        config_class, model_class = MPNetConfig, MPNetModel
        config = MPNetConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=MAX_TOKENS + 2,
            relative_attention_num_buckets=32,
            pad_token_id=1,
        )
    elif family == "modernbert":
        config_class, model_class = ModernBertConfig, ModernBertModel
        config = ModernBertConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=4,
            num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS,
            local_attention=16,
            global_attn_every_n_layers=3,
            global_rope_theta=160000.0,
            local_rope_theta=10000.0,
            pad_token_id=0,
            cls_token_id=2,
            sep_token_id=3,
            bos_token_id=2,
            eos_token_id=3,
        )
    elif family == "deberta-v3":
        config_class, model_class = DebertaV2Config, DebertaV2Model
        config = DebertaV2Config(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=MAX_TOKENS,
            type_vocab_size=0,
            layer_norm_eps=1e-7,
            relative_attention=True,
            max_relative_positions=-1,
            position_buckets=8,
            position_biased_input=False,
            pos_att_type=["p2c", "c2p"],
            share_att_key=True,
            norm_rel_ebd="layer_norm",
            pad_token_id=0,
        )
    elif family == "deberta-v2":
        config_class, model_class = DebertaV2Config, DebertaV2Model
        config = DebertaV2Config(
            vocab_size=vocab_size,
            embedding_size=16,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=MAX_TOKENS,
            type_vocab_size=2,
            layer_norm_eps=1e-7,
            relative_attention=True,
            max_relative_positions=16,
            position_buckets=-1,
            position_biased_input=True,
            pos_att_type="p2c|c2p",
            share_att_key=False,
            norm_rel_ebd="none",
            pad_token_id=0,
        )
    elif family == "electra":
        config_class, model_class = ElectraConfig, ElectraModel
        config = ElectraConfig(
            vocab_size=vocab_size,
            embedding_size=16,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=MAX_TOKENS,
            pad_token_id=0,
        )
    else:
        config_class, model_class = DistilBertConfig, DistilBertModel
        config = DistilBertConfig(
            vocab_size=vocab_size,
            dim=32,
            n_layers=2,
            n_heads=4,
            hidden_dim=64,
            max_position_embeddings=MAX_TOKENS,
            pad_token_id=0,
        )
    return model_class(config).eval()


def make(family, out_dir):
    seeds = {"roberta": 1, "xlm-roberta": 2, "electra": 3, "distilbert": 4, "mpnet": 5,
             "modernbert": 6, "deberta-v3": 7, "deberta-v2": 8}
    torch.manual_seed(seeds[family])
    tok = {
        "roberta": bpe_tokenizer,
        "xlm-roberta": unigram_tokenizer,
        "electra": wordpiece_tokenizer,
        "distilbert": wordpiece_tokenizer,
        "mpnet": mpnet_tokenizer,
        "modernbert": wordpiece_tokenizer,
        "deberta-v3": unigram_cls_tokenizer,
        "deberta-v2": wordpiece_tokenizer,
    }[family]()
    wordpiece = family in ("electra", "distilbert", "modernbert", "deberta-v3", "deberta-v2")
    specials = WORDPIECE_SPECIAL if wordpiece else SPECIAL
    assert [tok.token_to_id(t) for t in specials] == [0, 1, 2, 3, 4]
    tok.enable_truncation(MAX_TOKENS)
    model = family_model(family, tok.get_vocab_size())
    # Random but not tiny weights, so every path matters at 1e-5.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    folder = os.path.join(out_dir, family)
    model.save_pretrained(folder, safe_serialization=True)
    if family == "roberta":
        # The same weights as a PyTorch checkpoint, for the test that reads pytorch_model.bin.
        from safetensors.torch import load_file
        torch.save(load_file(os.path.join(folder, "model.safetensors")),
                   os.path.join(folder, "pytorch_model.bin"))
    tok.no_truncation()
    tok.save(os.path.join(folder, "tokenizer.json"))
    tok.enable_truncation(MAX_TOKENS)
    # transformers and sentence-transformers read tokenizer.json as it is through the generic
    # fast tokenizer (the family classes would rebuild the pipeline around the vocabulary).
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        if wordpiece:
            special = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                       "unk_token": "[UNK]", "mask_token": "[MASK]"}
        else:
            special = {"bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>",
                       "sep_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
                       "mask_token": "<mask>"}
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", **special,
                   "model_max_length": MAX_TOKENS}, f, indent=1)
    auto = AutoTokenizer.from_pretrained(folder)
    for text in TEXTS:
        assert auto(text, truncation=True)["input_ids"] == tok.encode(text).ids, text

    def outputs(ids, mask):
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask)
        hidden = out.last_hidden_state
        m = mask.unsqueeze(-1).float()
        mean = (hidden * m).sum(1) / m.sum(1)
        pooler = getattr(out, "pooler_output", None)
        return mean, hidden[:, 0], pooler if pooler is not None else hidden[:, 0]

    has_pooler = family in ("roberta", "xlm-roberta", "mpnet")
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
            "pooler": pooler[0].tolist() if has_pooler else None,
        })
    if wordpiece:
        tok.enable_padding(pad_id=0, pad_token="[PAD]")
    else:
        tok.enable_padding(pad_id=1, pad_token="<pad>")
    encs = tok.encode_batch(TEXTS)
    ids = torch.tensor([e.ids for e in encs])
    mask = torch.tensor([e.attention_mask for e in encs])
    mean, cls, pooler = outputs(ids, mask)
    batch = {"mean": mean.tolist(), "cls": cls.tolist(),
             "pooler": pooler.tolist() if has_pooler else None}
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
    families = ["roberta", "xlm-roberta", "electra", "distilbert", "mpnet", "modernbert",
                "deberta-v3", "deberta-v2"]
    for family in families:
        make(family, args.out)


if __name__ == "__main__":
    main()
