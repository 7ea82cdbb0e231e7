#!/usr/bin/env python3
"""Make small text-encoder folders whose configs differ from the shipped text families, and their
golden outputs from transformers.

Usage:
    python scripts/golden/make_text_variant_goldens.py OUT_DIR

`make_text_family_goldens.py` covers each family on one config close to its released checkpoints.
This script makes one folder per *variant*: the same family on a config whose fields (pad ids,
activations, epsilons, bucket counts, attention layouts, head sizes) take values the shipped folders
do not, so that a field graft reads wrongly, or ignores, shows as a mismatch:

  - mpnet-pad0:         MPNet with pad_token_id 0 and a WordPiece tokenizer whose [UNK] is id 1,
                        max_position_embeddings 130 (128 tokens). transformers numbers MPNet's
                        positions from `input_ids != 1` (padding_idx is hard-coded 1), so an [UNK]
                        inside a text takes position 1 and the tokens after it shift by one; one
                        text has [UNK]s mid-sequence. Hidden 40, 4 heads, 3 layers, 32 buckets.
  - mpnet-buckets48:    MPNet with relative_attention_num_buckets 48 (a 48-row bias table, of which
                        transformers still uses the 32 buckets it computes), layer_norm_eps 1e-7,
                        hidden_act relu, head size 8.
  - bert-variant:       BERT with pad_token_id 3, type_vocab_size 3, layer_norm_eps 1e-7,
                        hidden_act gelu_new, hidden 36 with 4 heads (head size 9), 3 layers, pooler.
  - roberta-variant:    RoBERTa with pad_token_id 3 (positions from 4, max_position_embeddings 68),
                        layer_norm_eps 1e-6, hidden_act relu, type_vocab_size 2, pooler.
  - electra-variant:    ELECTRA with embedding_size == hidden_size (no embeddings_project),
                        hidden_act gelu_new, pad_token_id 2, 3 layers, head size 16.
  - distilbert-variant: DistilBERT with activation relu, sinusoidal_pos_embds (the sinusoidal table
                        is kept, not redrawn), pad_token_id 1, dim 36 with 3 heads.
  - modernbert-variant: ModernBERT with 3 layers, global attention every 2 (full, sliding, full),
                        local_attention 8 (|query - key| <= 4), norm_eps 1e-6, hidden_activation
                        gelu_new, attention/MLP/norm biases, rotary thetas 80000 and 5000.
  - deberta-variant:    DeBERTa-v2 with pos_att_type ["c2p"] only, share_att_key, 16 log position
                        buckets over max_relative_positions -1 (so max_position_embeddings 64),
                        LayerNorm on the relative embeddings, absolute positions, no token types,
                        layer_norm_eps 1e-6, hidden 48 with 6 heads.
  - deberta-p2c:        DeBERTa-v2 with pos_att_type ["p2c"] only and separate projections (so only
                        `pos_query_proj` exists), no buckets, distances clipped at
                        max_relative_positions 8, no absolute positions, token types, hidden_act
                        gelu_new.

Tokenizers are trained on the bundled fine-food reviews with the builders of
`make_text_family_goldens.py` (WordPiece, byte-level BPE), with the special tokens reordered where a
variant needs its pad id elsewhere. Weights are drawn from N(0, 0.3^2) as there, except the
embedding tables of the variants with a non-default LayerNorm epsilon (mpnet-buckets48,
bert-variant, roberta-variant, modernbert-variant, deberta-variant): N(0, 0.003^2), so that the
epsilon changes the features by more than 1e-5 (at N(0, 0.3^2) a LayerNorm's input variance is near
1 and an epsilon of 1e-7 moves nothing).

The folders and JSONs have the layout and keys of `make_text_family_goldens.py`:
OUT_DIR/<variant>/{config.json, model.safetensors, tokenizer.json, tokenizer_config.json} and
OUT_DIR/<variant>.json with `cases` (text, input_ids, token_type_ids, mean, cls, pooler), one padded
`batch` (padded with the tokenizer's own pad id, as transformers users do) and `made_with`; besides
`family`, `architecture` (the name graft detects), `variant` (what the folder exercises), `fields`
(the config values that differ from the shipped folders), `max_tokens`, `pad_token_id` (the pad
id of the batch) and `embedding_std`. The texts are the shipped ones and one more with CJK
characters and an emoji inside it. The goldens come from the model reloaded from the folder, which
must give what the model in memory gave.

WordPiece training does not order tokens of equal count the same way from run to run, so running
the script again gives other vocabularies (and ids), with goldens that match them.
"""
import argparse
import json
import math
import os
import sys

import torch
import transformers
import tokenizers
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    DebertaV2Config,
    DebertaV2Model,
    DistilBertConfig,
    DistilBertModel,
    ElectraConfig,
    ElectraModel,
    ModernBertConfig,
    ModernBertModel,
    MPNetConfig,
    MPNetModel,
    RobertaConfig,
    RobertaModel,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_text_family_goldens as base  # noqa: E402

# The shipped texts, and one whose CJK characters and emoji are unknown to the WordPiece vocabulary
# inside the text (not only before the final special token).
TEXTS = base.TEXTS + ["green tea 東京 with honey 🍵 and lemon, great"]

# The standard deviation of the embedding tables (word, position, token type, relative) of the
# variants whose LayerNorm epsilon differs from the family's default: their sum reaches the
# embeddings' LayerNorm with a variance near 1e-5, where epsilons of 1e-7 to 1e-5 change the
# features by more than the tests' 1e-5; with N(0, 0.3^2) tables they would not show.
SMALL = 0.003

WORDPIECE_NAMES = {"[PAD]": "pad_token", "[UNK]": "unk_token", "[CLS]": "cls_token",
                   "[SEP]": "sep_token", "[MASK]": "mask_token"}


def wordpiece(order):
    """`base.wordpiece_tokenizer` (`[CLS] ... [SEP]`) with the special tokens at ids 0-4 in `order`."""
    def build():
        saved = base.WORDPIECE_SPECIAL
        base.WORDPIECE_SPECIAL = order
        try:
            tok = base.wordpiece_tokenizer()
        finally:
            base.WORDPIECE_SPECIAL = saved
        assert [tok.token_to_id(t) for t in order] == [0, 1, 2, 3, 4]
        return tok
    special = {WORDPIECE_NAMES[t]: t for t in order}
    return build, special, "[PAD]"


def bpe(order):
    """`base.bpe_tokenizer` (byte-level BPE, `<s> ... </s>`) with the special tokens in `order`."""
    def build():
        saved = base.SPECIAL
        base.SPECIAL = order
        try:
            tok = base.bpe_tokenizer()
        finally:
            base.SPECIAL = saved
        assert [tok.token_to_id(t) for t in order] == [0, 1, 2, 3, 4]
        return tok
    special = {"bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>", "sep_token": "</s>",
               "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>"}
    return build, special, "<pad>"


def mpnet_style():
    """`base.mpnet_tokenizer`: WordPiece with `<s> ... </s>` and the pad at id 1."""
    special = {"bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>", "sep_token": "</s>",
               "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>"}
    return base.mpnet_tokenizer, special, "<pad>"


# Each variant: family, graft's architecture name, seed, tokenizer, model class, config arguments
# (besides vocab_size), the fields that differ from the shipped folders, whether it has a pooler,
# whether the model takes token types, the longest tokenized text, parameters not to redraw, the
# embedding tables' standard deviation where it is not 0.3, and a note of what it exercises.
VARIANTS = {
    "mpnet-pad0": dict(
        family="mpnet", architecture="mpnet", seed=21,
        tokenizer=wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
        model=(MPNetConfig, MPNetModel),
        config=dict(hidden_size=40, num_hidden_layers=3, num_attention_heads=4,
                    intermediate_size=72, max_position_embeddings=130,
                    relative_attention_num_buckets=32, pad_token_id=0, bos_token_id=2,
                    eos_token_id=3),
        fields=["pad_token_id", "max_position_embeddings", "hidden_size", "num_attention_heads",
                "num_hidden_layers", "intermediate_size"],
        pooler=True, token_types=False, max_tokens=128, keep=(),
        note="MPNet with pad_token_id 0 and a WordPiece tokenizer ([PAD]=0, [UNK]=1, [CLS] ... "
             "[SEP]); transformers numbers positions from input_ids != 1 (MPNetEmbeddings' "
             "padding_idx is hard-coded 1), not from the attention mask, so an [UNK] (id 1) "
             "inside a text gets position 1 and every later token's position is one less than "
             "the mask would give; the last case has [UNK]s mid-sequence; "
             "max_position_embeddings 130 (128 tokens); the batch is padded with id 0."),
    "mpnet-buckets48": dict(
        family="mpnet", architecture="mpnet", seed=22, tokenizer=mpnet_style(),
        model=(MPNetConfig, MPNetModel),
        config=dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
                    intermediate_size=80, max_position_embeddings=66,
                    relative_attention_num_buckets=48, layer_norm_eps=1e-7, hidden_act="relu",
                    pad_token_id=1, bos_token_id=0, eos_token_id=2),
        fields=["relative_attention_num_buckets", "layer_norm_eps", "hidden_act",
                "num_attention_heads"],
        pooler=True, token_types=False, max_tokens=64, keep=(), embedding_std=SMALL,
        note="MPNet with relative_attention_num_buckets 48 (the bias table has 48 rows, but "
             "transformers computes buckets for 32, so rows 32-47 are never used), "
             "layer_norm_eps 1e-7, hidden_act relu, 6 heads of 8."),
    "bert-variant": dict(
        family="bert", architecture="bert", seed=23,
        tokenizer=wordpiece(["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]),
        model=(BertConfig, BertModel),
        config=dict(hidden_size=36, num_hidden_layers=3, num_attention_heads=4,
                    intermediate_size=60, max_position_embeddings=64, type_vocab_size=3,
                    layer_norm_eps=1e-7, hidden_act="gelu_new", pad_token_id=3),
        fields=["pad_token_id", "type_vocab_size", "layer_norm_eps", "hidden_act",
                "num_attention_heads"],
        pooler=True, token_types=True, max_tokens=64, keep=(), embedding_std=SMALL,
        note="BERT with pad_token_id 3 ([PAD]=3, the batch padded with 3), type_vocab_size 3 "
             "(token types all 0), layer_norm_eps 1e-7, hidden_act gelu_new (tanh GELU), hidden "
             "36 with 4 heads (head size 9), 3 layers, the pooler."),
    "roberta-variant": dict(
        family="roberta", architecture="roberta", seed=24,
        tokenizer=bpe(["<s>", "<unk>", "</s>", "<pad>", "<mask>"]),
        model=(RobertaConfig, RobertaModel),
        config=dict(hidden_size=40, num_hidden_layers=2, num_attention_heads=5,
                    intermediate_size=56, max_position_embeddings=64 + 3 + 1, type_vocab_size=2,
                    layer_norm_eps=1e-6, hidden_act="relu", pad_token_id=3, bos_token_id=0,
                    eos_token_id=2),
        fields=["pad_token_id", "max_position_embeddings", "layer_norm_eps", "hidden_act",
                "type_vocab_size", "num_attention_heads"],
        pooler=True, token_types=True, max_tokens=64, keep=(), embedding_std=SMALL,
        note="RoBERTa with pad_token_id 3 (<pad>=3, the batch padded with 3), so position ids "
             "start at 4 and max_position_embeddings is 68 (64 tokens); layer_norm_eps 1e-6, "
             "hidden_act relu, type_vocab_size 2, 5 heads of 8, the pooler."),
    "electra-variant": dict(
        family="electra", architecture="electra", seed=25,
        tokenizer=wordpiece(["[UNK]", "[CLS]", "[PAD]", "[SEP]", "[MASK]"]),
        model=(ElectraConfig, ElectraModel),
        config=dict(embedding_size=32, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                    intermediate_size=48, max_position_embeddings=64, hidden_act="gelu_new",
                    pad_token_id=2),
        fields=["embedding_size", "hidden_act", "pad_token_id", "num_attention_heads",
                "num_hidden_layers"],
        pooler=False, token_types=True, max_tokens=64, keep=(),
        note="ELECTRA with embedding_size == hidden_size 32 (no embeddings_project), hidden_act "
             "gelu_new, pad_token_id 2 ([PAD]=2, the batch padded with 2), 3 layers, 2 heads "
             "of 16."),
    "distilbert-variant": dict(
        family="distilbert", architecture="distilbert", seed=26,
        tokenizer=wordpiece(["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]"]),
        model=(DistilBertConfig, DistilBertModel),
        config=dict(dim=36, n_layers=2, n_heads=3, hidden_dim=60, max_position_embeddings=64,
                    activation="relu", sinusoidal_pos_embds=True, pad_token_id=1),
        fields=["activation", "sinusoidal_pos_embds", "pad_token_id", "dim", "n_heads"],
        pooler=False, token_types=False, max_tokens=64,
        keep=("embeddings.position_embeddings.weight",),
        note="DistilBERT with activation relu, sinusoidal_pos_embds true (the checkpoint holds "
             "the sinusoidal table transformers builds, not random positions), pad_token_id 1 "
             "([PAD]=1, the batch padded with 1), dim 36 with 3 heads of 12."),
    "modernbert-variant": dict(
        family="modernbert", architecture="modernbert", seed=27,
        tokenizer=wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
        model=(ModernBertConfig, ModernBertModel),
        config=dict(hidden_size=40, intermediate_size=56, num_hidden_layers=3,
                    num_attention_heads=4, max_position_embeddings=64, local_attention=8,
                    global_attn_every_n_layers=2, norm_eps=1e-6, hidden_activation="gelu_new",
                    norm_bias=True, attention_bias=True, mlp_bias=True,
                    rope_parameters={
                        "full_attention": {"rope_type": "default", "rope_theta": 80000.0},
                        "sliding_attention": {"rope_type": "default", "rope_theta": 5000.0},
                    },
                    pad_token_id=0, cls_token_id=2, sep_token_id=3, bos_token_id=2,
                    eos_token_id=3),
        fields=["layer_types", "global_attn_every_n_layers", "local_attention", "norm_eps",
                "hidden_activation", "norm_bias", "attention_bias", "mlp_bias",
                "rope_parameters", "num_hidden_layers"],
        pooler=False, token_types=False, max_tokens=64, keep=(), embedding_std=SMALL,
        note="ModernBERT with 3 layers, global attention every 2 (layer_types full, sliding, "
             "full), local_attention 8 (a local layer sees |query - key| <= 4), norm_eps 1e-6, "
             "hidden_activation gelu_new (GeGLU with tanh GELU), biases in Wqkv, Wo, Wi, the "
             "MLP's Wo and every LayerNorm, rotary thetas 80000 (global) and 5000 (local), head "
             "size 10."),
    "deberta-variant": dict(
        family="deberta-v2", architecture="deberta-v2", seed=28,
        tokenizer=wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
        model=(DebertaV2Config, DebertaV2Model),
        config=dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
                    intermediate_size=64, max_position_embeddings=64, type_vocab_size=0,
                    layer_norm_eps=1e-6, relative_attention=True, max_relative_positions=-1,
                    position_buckets=16, position_biased_input=True, pos_att_type=["c2p"],
                    share_att_key=True, norm_rel_ebd="layer_norm", pad_token_id=0),
        fields=["pos_att_type", "position_buckets", "max_relative_positions",
                "position_biased_input", "layer_norm_eps", "num_attention_heads"],
        pooler=False, token_types=True, max_tokens=64, keep=(), embedding_std=SMALL,
        note="DeBERTa-v2 with pos_att_type [c2p] only (scale sqrt(2 * head size)), "
             "share_att_key (key_proj for the relative keys), 16 log position buckets over "
             "max_relative_positions -1 (so max_position_embeddings 64; the long text reaches "
             "the logarithmic range), LayerNorm on the relative embeddings, absolute positions "
             "with buckets, no token types, layer_norm_eps 1e-6, hidden 48 with 6 heads of 8."),
    "deberta-p2c": dict(
        family="deberta-v2", architecture="deberta-v2", seed=29,
        tokenizer=wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
        model=(DebertaV2Config, DebertaV2Model),
        config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, max_position_embeddings=64, type_vocab_size=2,
                    layer_norm_eps=1e-7, hidden_act="gelu_new", relative_attention=True,
                    max_relative_positions=8, position_buckets=-1, position_biased_input=False,
                    pos_att_type=["p2c"], share_att_key=False, norm_rel_ebd="none",
                    pad_token_id=0),
        fields=["pos_att_type", "share_att_key", "max_relative_positions",
                "position_biased_input", "hidden_act"],
        pooler=False, token_types=True, max_tokens=64, keep=(),
        note="DeBERTa-v2 with pos_att_type [p2c] only and share_att_key false (so the layers "
             "have pos_query_proj and no pos_key_proj), no position buckets, relative distances "
             "clipped at max_relative_positions 8, no absolute positions, token types, no "
             "LayerNorm on the relative embeddings, hidden_act gelu_new."),
}


def outputs(model, ids, mask, types, has_pooler):
    """Mean-pooled last hidden state, first-token state and pooler output (or None)."""
    kwargs = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        kwargs["token_type_ids"] = types
    with torch.no_grad():
        out = model(**kwargs)
    hidden = out.last_hidden_state
    m = mask.unsqueeze(-1).float()
    mean = (hidden * m).sum(1) / m.sum(1)
    pooler = out.pooler_output if has_pooler else None
    return mean, hidden[:, 0], pooler


def make(name, out_dir):
    spec = VARIANTS[name]
    torch.manual_seed(spec["seed"])
    build, special, pad_token = spec["tokenizer"]
    tok = build()
    max_tokens = spec["max_tokens"]
    tok.enable_truncation(max_tokens)
    config_class, model_class = spec["model"]
    config = config_class(vocab_size=tok.get_vocab_size(), **spec["config"])
    model = model_class(config).eval()
    if model_class is DistilBertModel:
        # The table transformers builds for sinusoidal_pos_embds, which the checkpoint must hold.
        table = model.embeddings.position_embeddings.weight
        assert abs(table[1, 0].item() - math.sin(1.0)) < 1e-6, "not the sinusoidal table"
        assert abs(table[1, 1].item() - math.cos(1.0)) < 1e-6, "not the sinusoidal table"
    # Random but not tiny weights, so every path matters at 1e-5.
    # The embedding tables of variants with a LayerNorm epsilon to check are drawn small, so that
    # the epsilon shows in the embeddings' LayerNorm (it normalises their sum whatever its scale).
    embedding_std = spec.get("embedding_std", 0.3)
    with torch.no_grad():
        for param_name, p in model.named_parameters():
            if param_name not in spec["keep"]:
                std = embedding_std if param_name.endswith("_embeddings.weight") else 0.3
                p.normal_(0.0, std)
    folder = os.path.join(out_dir, name)
    model.save_pretrained(folder, safe_serialization=True)
    tok.no_truncation()
    tok.save(os.path.join(folder, "tokenizer.json"))
    tok.enable_truncation(max_tokens)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", **special,
                   "model_max_length": max_tokens}, f, indent=1)
    auto = AutoTokenizer.from_pretrained(folder)
    for text in TEXTS:
        assert auto(text, truncation=True)["input_ids"] == tok.encode(text).ids, text

    # The goldens come from the folder as saved.
    reloaded = model_class.from_pretrained(folder).eval()
    has_pooler = spec["pooler"]
    types_of = (lambda t: t) if spec["token_types"] else (lambda t: None)
    cases = []
    for text in TEXTS:
        enc = tok.encode(text)
        ids = torch.tensor([enc.ids])
        types = types_of(torch.tensor([enc.type_ids]))
        mask = torch.ones_like(ids)
        mean, cls, pooler = outputs(reloaded, ids, mask, types, has_pooler)
        before = outputs(model, ids, mask, types, has_pooler)
        assert torch.equal(mean, before[0]) and torch.equal(cls, before[1]), f"{name}: reload"
        cases.append({
            "text": text,
            "input_ids": enc.ids,
            "token_type_ids": enc.type_ids,
            "mean": mean[0].tolist(),
            "cls": cls[0].tolist(),
            "pooler": pooler[0].tolist() if has_pooler else None,
        })
    pad_id = tok.token_to_id(pad_token)
    assert pad_id == config.pad_token_id, f"{name}: the tokenizer pads with {pad_id}"
    tok.enable_padding(pad_id=pad_id, pad_token=pad_token)
    encs = tok.encode_batch(TEXTS)
    ids = torch.tensor([e.ids for e in encs])
    mask = torch.tensor([e.attention_mask for e in encs])
    types = types_of(torch.tensor([e.type_ids for e in encs]))
    assert (mask == 0).any()
    mean, cls, pooler = outputs(reloaded, ids, mask, types, has_pooler)
    batch = {"mean": mean.tolist(), "cls": cls.tolist(),
             "pooler": pooler.tolist() if has_pooler else None}

    saved = json.load(open(os.path.join(folder, "config.json")))
    fields = {key: saved[key] for key in spec["fields"]}
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump({
            "family": spec["family"],
            "architecture": spec["architecture"],
            "variant": spec["note"],
            "fields": fields,
            "max_tokens": max_tokens,
            "pad_token_id": pad_id,
            "embedding_std": embedding_std,
            "cases": cases,
            "batch": batch,
            "made_with": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "tokenizers": tokenizers.__version__,
            },
        }, f)
        f.write("\n")
    if name == "mpnet-pad0":
        check_mpnet_positions(reloaded, tok, cases)
    print(f"{name}: {len(cases)} cases, longest {max(len(c['input_ids']) for c in cases)} tokens")


def check_mpnet_positions(model, tok, cases):
    """The case this variant is for: an [UNK] (id 1) inside a text, whose features differ from
    those of positions numbered by the attention mask."""
    unk = tok.token_to_id("[UNK]")
    assert unk == 1
    inside = [c for c in cases if unk in c["input_ids"][1:-2]]
    assert inside, "no text has [UNK] inside it"
    for case in inside:
        ids = torch.tensor([case["input_ids"]])
        n = ids.shape[1]
        by_mask = torch.arange(2, n + 2).unsqueeze(0)  # what cumsum(mask) + 1 gives
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                           position_ids=by_mask).last_hidden_state
        diff = (hidden.mean(1)[0] - torch.tensor(case["mean"])).abs().max().item()
        ones = [i for i, t in enumerate(case["input_ids"]) if t == unk]
        print(f"mpnet-pad0: {case['text']!r}: [UNK] at {ones} of {n}; mean features with "
              f"positions from the mask differ from transformers' by {diff:.3g}")
        assert diff > 1e-3


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--only", nargs="*", help="variant names (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    for name in args.only or VARIANTS:
        make(name, args.out)


if __name__ == "__main__":
    main()
