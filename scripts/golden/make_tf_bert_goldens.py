#!/usr/bin/env python3
"""Make a tiny Google-format BERT TensorFlow checkpoint and its transformers goldens.

Purpose: graft reads Google's original BERT releases (a TF1 tensor bundle
`bert_model.ckpt.index` + `bert_model.ckpt.data-00000-of-00001`, `bert_config.json` and a
WordPiece `vocab.txt`) directly, in Rust. This script writes such a release, with random
weights, saved by real TensorFlow, and the outputs that transformers' `BertModel` gives for the
same weights, so that graft's reader can be checked against both.

The work runs in four stages, each in its own Python environment (TensorFlow and PyTorch are
not installed together). Stages pass data through a scratch folder WORK (any empty folder
outside the repository). From the repo root:

    WORK=$(mktemp -d)
    GOLDEN=crates/graft-model/tests/golden/tf_bert
    # 1. TensorFlow: write vocab.txt, bert_config.json and the checkpoint (tf.compat.v1 graph
    #    mode, variables named as in Google's modeling.py, saved by tf.compat.v1.train.Saver).
    TF_PY scripts/golden/make_tf_bert_goldens.py tf-checkpoint --golden "$GOLDEN" --work "$WORK"
    # 2. PyTorch: load the same values into transformers' BertModel through an explicit name
    #    map, tokenize with BertTokenizerFast(vocab=vocab.txt), write $GOLDEN/goldens.json.
    TORCH_PY scripts/golden/make_tf_bert_goldens.py torch-goldens --golden "$GOLDEN" --work "$WORK"
    # 3. TensorFlow: rerun the forward pass in TF from the checkpoint (tf.train.load_checkpoint),
    #    compare with transformers and record the difference in goldens.json.
    TF_PY scripts/golden/make_tf_bert_goldens.py tf-verify --golden "$GOLDEN" --work "$WORK"
    # 4. (optional, writes nothing) list the variables and decode the .index file by hand.
    TF_PY scripts/golden/make_tf_bert_goldens.py inspect --golden "$GOLDEN"

TF_PY is a Python with `tensorflow-cpu` and `numpy`; TORCH_PY one with `torch`, `transformers`
and `numpy`. Versions used for the committed files: TensorFlow 2.21.0 (tensorflow-cpu),
numpy 2.4.6, torch 2.15.0, transformers 5.24.0, Python 3.11. Everything runs on CPU in float32.

Files written:
    GOLDEN/uncased_L-2_H-32_A-4/{bert_config.json, vocab.txt, checkpoint,
        bert_model.ckpt.index, bert_model.ckpt.data-00000-of-00001}
    GOLDEN/goldens.json

The checkpoint holds, as Google's releases do, the encoder (`bert/...`), the pre-training heads
a reader must skip (`cls/predictions/...`, `cls/seq_relationship/...`) and an int64
`global_step`. Dense kernels are [in, out]; `cls/seq_relationship/output_weights` is [2, hidden].
The model uses hidden_act "gelu", which transformers computes with erf (exact GELU); note that
the newest Google `modeling.py` computes its `gelu` with the tanh approximation instead.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

MODEL_DIR = "uncased_L-2_H-32_A-4"
CKPT = "bert_model.ckpt"
SEED = 20240611
MAX_LENGTH = 16
LN_EPS = 1e-12

CONFIG = {
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 37,
    "max_position_embeddings": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "type_vocab_size": 2,
    "vocab_size": None,  # set from the vocabulary
}

# Uncased WordPiece vocabulary: specials first ([PAD] = 0), punctuation, whole words, then
# continuation pieces. No capital letters and no accents (Google's uncased tokenizer lowercases
# and strips accents first). No single letters, so a word made of unknown pieces maps to [UNK].
VOCAB = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + list("!\"'(),-.:;?")
    + [
        "the", "a", "an", "of", "and", "to", "in", "is", "it", "was", "for", "on", "with",
        "this", "that", "my", "i", "you", "he", "she", "we", "they", "are", "be", "not", "but",
        "at", "so", "very", "good", "bad", "great", "food", "dog", "cat", "cafe", "coffee",
        "tea", "cookie", "cookies", "hello", "world", "quick", "brown", "fox", "jumps", "over",
        "lazy", "sat", "mat", "day", "today", "weather", "nice", "love", "loves", "like",
        "bought", "buy", "again", "taste", "play", "read", "walk", "run", "happy", "un",
        "believ", "new", "york", "city", "paris", "morning", "night", "long", "sentence",
        "will", "be", "cut", "here", "after", "sixteen", "tokens", "what", "where", "how",
    ]
    + [
        "##ing", "##ed", "##s", "##er", "##ly", "##able", "##ness", "##happi", "##ful",
        "##est", "##y", "##ish", "##less", "##ment",
    ]
)

SINGLE = [
    "Hello, World! The Café was VERY nice today.",
    "I like playing and walking; unbelievable unhappiness.",
    "My dog loves the zyzzyva at night?",
    "This is a very long sentence that will be cut here after sixteen tokens, "
    "so the rest is not read at all.",
]
PAIR = [("What a nice morning!", "The coffee was good.")]


def vocab_list():
    seen, out = set(), []
    for tok in VOCAB:
        if tok not in seen:
            seen.add(tok)
            out.append(tok)
    assert all(t == t.lower() or t.startswith("[") for t in out)
    return out


def model_dir(args):
    return os.path.join(args.golden, MODEL_DIR)


def make_values(vocab_size):
    """Google-named float32 (and one int64) arrays, seeded."""
    rng = np.random.default_rng(SEED)
    H, I, L = CONFIG["hidden_size"], CONFIG["intermediate_size"], CONFIG["num_hidden_layers"]

    def w(*shape):
        return rng.normal(0.0, 0.02, size=shape).astype(np.float32)

    def b(n):
        return rng.normal(0.0, 0.01, size=(n,)).astype(np.float32)

    def ln(prefix, out):
        out[prefix + "/gamma"] = (1.0 + rng.normal(0.0, 0.05, size=(H,))).astype(np.float32)
        out[prefix + "/beta"] = rng.normal(0.0, 0.02, size=(H,)).astype(np.float32)

    def dense(prefix, n_in, n_out, out):
        out[prefix + "/kernel"] = w(n_in, n_out)  # [in, out], as tf.layers.dense stores it
        out[prefix + "/bias"] = b(n_out)

    v = {}
    v["bert/embeddings/word_embeddings"] = w(vocab_size, H)
    v["bert/embeddings/token_type_embeddings"] = w(CONFIG["type_vocab_size"], H)
    v["bert/embeddings/position_embeddings"] = w(CONFIG["max_position_embeddings"], H)
    ln("bert/embeddings/LayerNorm", v)
    for i in range(L):
        p = f"bert/encoder/layer_{i}"
        for name in ("query", "key", "value"):
            dense(f"{p}/attention/self/{name}", H, H, v)
        dense(f"{p}/attention/output/dense", H, H, v)
        ln(f"{p}/attention/output/LayerNorm", v)
        dense(f"{p}/intermediate/dense", H, I, v)
        dense(f"{p}/output/dense", I, H, v)
        ln(f"{p}/output/LayerNorm", v)
    dense("bert/pooler/dense", H, H, v)
    # Pre-training heads, present in Google's checkpoints; a base-model reader skips them.
    dense("cls/predictions/transform/dense", H, H, v)
    ln("cls/predictions/transform/LayerNorm", v)
    v["cls/predictions/output_bias"] = b(vocab_size)
    v["cls/seq_relationship/output_weights"] = w(2, H)
    v["cls/seq_relationship/output_bias"] = b(2)
    return v


GLOBAL_STEP = 1000


# --------------------------------------------------------------------------------------------
# Stage 1: TensorFlow writes the release folder.
# --------------------------------------------------------------------------------------------
def stage_tf_checkpoint(args):
    import tensorflow as tf

    out = model_dir(args)
    os.makedirs(out, exist_ok=True)
    vocab = vocab_list()
    with open(os.path.join(out, "vocab.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(t + "\n" for t in vocab))
    config = dict(CONFIG, vocab_size=len(vocab))
    with open(os.path.join(out, "bert_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")

    values = make_values(len(vocab))
    tf.compat.v1.disable_eager_execution()
    graph = tf.Graph()
    with graph.as_default():
        for name, arr in values.items():
            tf.compat.v1.get_variable(
                name, shape=arr.shape, dtype=tf.float32,
                initializer=tf.compat.v1.constant_initializer(arr))
        step = tf.compat.v1.train.get_or_create_global_step()  # int64 "global_step"
        assign_step = step.assign(GLOBAL_STEP)
        saver = tf.compat.v1.train.Saver(save_relative_paths=True)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            sess.run(assign_step)
            cwd = os.getcwd()
            os.chdir(out)  # relative save path: no machine path in the `checkpoint` file
            try:
                saver.save(sess, CKPT, write_meta_graph=False)
            finally:
                os.chdir(cwd)

    np.savez(os.path.join(args.work, "weights.npz"), **{k.replace("/", "|"): a for k, a in values.items()})
    with open(os.path.join(args.work, "tf_versions.json"), "w") as f:
        json.dump({"tensorflow": tf.__version__, "numpy_tf": np.__version__}, f)
    for name in sorted(os.listdir(out)):
        print(f"{os.path.getsize(os.path.join(out, name)):8d}  {name}")


# --------------------------------------------------------------------------------------------
# Stage 2: transformers (PyTorch) goldens from the same values.
# --------------------------------------------------------------------------------------------
def hf_state_dict(values, num_layers):
    """Google name -> transformers BertModel name; kernels [in, out] become weights [out, in]."""
    import torch

    m = {
        "embeddings.word_embeddings.weight": ("bert/embeddings/word_embeddings", False),
        "embeddings.token_type_embeddings.weight": ("bert/embeddings/token_type_embeddings", False),
        "embeddings.position_embeddings.weight": ("bert/embeddings/position_embeddings", False),
        "embeddings.LayerNorm.weight": ("bert/embeddings/LayerNorm/gamma", False),
        "embeddings.LayerNorm.bias": ("bert/embeddings/LayerNorm/beta", False),
        "pooler.dense.weight": ("bert/pooler/dense/kernel", True),
        "pooler.dense.bias": ("bert/pooler/dense/bias", False),
    }
    for i in range(num_layers):
        g, h = f"bert/encoder/layer_{i}", f"encoder.layer.{i}"
        pairs = [
            ("attention.self.query", "attention/self/query"),
            ("attention.self.key", "attention/self/key"),
            ("attention.self.value", "attention/self/value"),
            ("attention.output.dense", "attention/output/dense"),
            ("intermediate.dense", "intermediate/dense"),
            ("output.dense", "output/dense"),
        ]
        for hn, gn in pairs:
            m[f"{h}.{hn}.weight"] = (f"{g}/{gn}/kernel", True)
            m[f"{h}.{hn}.bias"] = (f"{g}/{gn}/bias", False)
        for hn, gn in [("attention.output.LayerNorm", "attention/output/LayerNorm"),
                       ("output.LayerNorm", "output/LayerNorm")]:
            m[f"{h}.{hn}.weight"] = (f"{g}/{gn}/gamma", False)
            m[f"{h}.{hn}.bias"] = (f"{g}/{gn}/beta", False)
    sd = {}
    for hname, (gname, transpose) in m.items():
        a = values[gname]
        sd[hname] = torch.from_numpy(np.ascontiguousarray(a.T if transpose else a))
    return sd, {g for g, _ in m.values()}


def stage_torch_goldens(args):
    import torch
    import transformers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    out = model_dir(args)
    with open(os.path.join(out, "bert_config.json")) as f:
        gconf = json.load(f)
    npz = np.load(os.path.join(args.work, "weights.npz"))
    values = {k.replace("|", "/"): npz[k] for k in npz.files}
    with open(os.path.join(args.work, "tf_versions.json")) as f:
        tfv = json.load(f)

    config = BertConfig(
        vocab_size=gconf["vocab_size"], hidden_size=gconf["hidden_size"],
        num_hidden_layers=gconf["num_hidden_layers"],
        num_attention_heads=gconf["num_attention_heads"],
        intermediate_size=gconf["intermediate_size"], hidden_act=gconf["hidden_act"],
        hidden_dropout_prob=gconf["hidden_dropout_prob"],
        attention_probs_dropout_prob=gconf["attention_probs_dropout_prob"],
        max_position_embeddings=gconf["max_position_embeddings"],
        type_vocab_size=gconf["type_vocab_size"], initializer_range=gconf["initializer_range"],
        layer_norm_eps=LN_EPS, pad_token_id=0,
    )
    config._attn_implementation = "eager"
    model = BertModel(config, add_pooling_layer=True).eval()
    sd, used = hf_state_dict(values, gconf["num_hidden_layers"])
    want = {k for k in model.state_dict() if not k.endswith("position_ids")
            and not k.endswith("token_type_ids")}
    assert set(sd) == want, (sorted(set(sd) ^ want))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith(("position_ids", "token_type_ids")) for k in missing), \
        (missing, unexpected)
    skipped = sorted(set(values) - used)
    assert all(k.startswith("cls/") for k in skipped), skipped
    print("skipped (pre-training heads):", skipped)

    # transformers 5.x: the keyword is `vocab` (a path or a dict); a `vocab_file=` keyword is
    # silently ignored there and leaves a 5-token vocabulary, so check the size.
    tok = BertTokenizerFast(vocab=os.path.join(out, "vocab.txt"), do_lower_case=True)
    assert len(tok) == gconf["vocab_size"], (len(tok), gconf["vocab_size"])

    def run(batch_inputs):
        with torch.no_grad():
            o = model(input_ids=batch_inputs["input_ids"],
                      token_type_ids=batch_inputs["token_type_ids"],
                      attention_mask=batch_inputs["attention_mask"])
        h = o.last_hidden_state
        m = batch_inputs["attention_mask"].unsqueeze(-1).to(h.dtype)
        mean = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return {
            "tokens": [tok.convert_ids_to_tokens(r) for r in batch_inputs["input_ids"].tolist()],
            "input_ids": batch_inputs["input_ids"].tolist(),
            "token_type_ids": batch_inputs["token_type_ids"].tolist(),
            "attention_mask": batch_inputs["attention_mask"].tolist(),
            "last_hidden_state": h.tolist(),
            "pooler_output": o.pooler_output.tolist(),
            "mean_pooled": mean.tolist(),
        }

    single_in = tok(SINGLE, truncation=True, max_length=MAX_LENGTH, padding="longest",
                    return_tensors="pt", return_token_type_ids=True)
    pair_in = tok([a for a, _ in PAIR], [b for _, b in PAIR], truncation=True,
                  max_length=MAX_LENGTH, padding="longest", return_tensors="pt",
                  return_token_type_ids=True)
    single = dict({"sentences": SINGLE}, **run(single_in))
    pair = dict({"sentences": [list(p) for p in PAIR]}, **run(pair_in))
    for name, b in (("single", single), ("pair", pair)):
        for t in b["tokens"]:
            print(name, t)
    # The batch must exercise what it is meant to.
    flat = [t for r in single["tokens"] for t in r]
    assert "[UNK]" in flat and any(t.startswith("##") for t in flat)
    assert sum(single["attention_mask"][3]) == MAX_LENGTH and single["tokens"][3][-1] == "[SEP]"
    assert any(0 in r for r in single["attention_mask"])
    assert 1 in pair["token_type_ids"][0]

    goldens = {
        "description": "transformers BertModel (eager attention, CPU, float32, eval) outputs for "
                       f"the Google-format TF checkpoint in {MODEL_DIR}/; tokenizer "
                       "BertTokenizerFast(vocab=vocab.txt, do_lower_case=True), truncation at "
                       f"{MAX_LENGTH}, padded to the batch's longest. mean_pooled is the "
                       "attention-mask-weighted mean of last_hidden_state.",
        "model_dir": MODEL_DIR,
        "max_length": MAX_LENGTH,
        "layer_norm_eps": LN_EPS,
        "global_step": GLOBAL_STEP,
        "versions": {
            "tensorflow": tfv["tensorflow"],
            "transformers": transformers.__version__,
            "torch": torch.__version__.split("+")[0],
            "numpy": np.__version__,
        },
        "single": single,
        "pair": pair,
    }
    path = os.path.join(args.golden, "goldens.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(goldens, f)
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


# --------------------------------------------------------------------------------------------
# Stage 3: TensorFlow forward from the checkpoint, compared with transformers.
# --------------------------------------------------------------------------------------------
def tf_bert_forward(reader, conf, input_ids, token_type_ids, attention_mask, gelu="erf"):
    """Google modeling.py's BertModel forward in TF ops (eager), weights from the checkpoint."""
    import tensorflow as tf

    def g(name):
        return tf.constant(reader.get_tensor(name))

    def layer_norm(x, prefix):
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + LN_EPS) * g(prefix + "/gamma") + g(prefix + "/beta")

    def dense(x, prefix):
        return tf.tensordot(x, g(prefix + "/kernel"), axes=1) + g(prefix + "/bias")

    def act(x):
        if gelu == "erf":
            return 0.5 * x * (1.0 + tf.math.erf(x / np.sqrt(2.0).astype(np.float32)))
        cdf = 0.5 * (1.0 + tf.tanh(np.sqrt(2 / np.pi).astype(np.float32) * (x + 0.044715 * x ** 3)))
        return x * cdf

    ids = tf.constant(input_ids, tf.int32)
    tt = tf.constant(token_type_ids, tf.int32)
    mask = tf.constant(attention_mask, tf.float32)
    B, S = ids.shape
    H, N = conf["hidden_size"], conf["num_attention_heads"]
    D = H // N
    x = (tf.gather(g("bert/embeddings/word_embeddings"), ids)
         + tf.gather(g("bert/embeddings/token_type_embeddings"), tt)
         + g("bert/embeddings/position_embeddings")[:S][None])
    x = layer_norm(x, "bert/embeddings/LayerNorm")
    adder = (1.0 - mask[:, None, None, :]) * -10000.0

    def heads(t):
        return tf.transpose(tf.reshape(t, [B, S, N, D]), [0, 2, 1, 3])

    for i in range(conf["num_hidden_layers"]):
        p = f"bert/encoder/layer_{i}"
        q = heads(dense(x, p + "/attention/self/query"))
        k = heads(dense(x, p + "/attention/self/key"))
        v = heads(dense(x, p + "/attention/self/value"))
        scores = tf.matmul(q, k, transpose_b=True) / np.sqrt(D).astype(np.float32) + adder
        ctx = tf.matmul(tf.nn.softmax(scores, axis=-1), v)
        ctx = tf.reshape(tf.transpose(ctx, [0, 2, 1, 3]), [B, S, H])
        x = layer_norm(dense(ctx, p + "/attention/output/dense") + x, p + "/attention/output/LayerNorm")
        inter = act(dense(x, p + "/intermediate/dense"))
        x = layer_norm(dense(inter, p + "/output/dense") + x, p + "/output/LayerNorm")
    pooled = tf.tanh(dense(x[:, 0], "bert/pooler/dense"))
    return x.numpy(), pooled.numpy()


def stage_tf_verify(args):
    import tensorflow as tf

    out = model_dir(args)
    with open(os.path.join(out, "bert_config.json")) as f:
        conf = json.load(f)
    path = os.path.join(args.golden, "goldens.json")
    with open(path) as f:
        goldens = json.load(f)
    reader = tf.train.load_checkpoint(os.path.join(out, CKPT))
    assert int(reader.get_tensor("global_step")) == GLOBAL_STEP
    report = {}
    worst = 0.0
    for name in ("single", "pair"):
        b = goldens[name]
        h, p = tf_bert_forward(reader, conf, b["input_ids"], b["token_type_ids"], b["attention_mask"])
        m = np.array(b["attention_mask"], np.float32)[..., None]
        mean = (h * m).sum(1) / m.sum(1)
        dh = float(np.abs(h - np.array(b["last_hidden_state"])).max())
        dp = float(np.abs(p - np.array(b["pooler_output"])).max())
        dm = float(np.abs(mean - np.array(b["mean_pooled"])).max())
        h_t, _ = tf_bert_forward(reader, conf, b["input_ids"], b["token_type_ids"],
                                 b["attention_mask"], gelu="tanh")
        dt = float(np.abs(h_t - np.array(b["last_hidden_state"])).max())
        print(f"{name}: TF(erf gelu) vs transformers max|diff| last_hidden_state={dh:.3g} "
              f"pooler_output={dp:.3g} mean_pooled={dm:.3g}; TF with tanh-approx gelu: {dt:.3g}")
        report[name] = {"last_hidden_state": dh, "pooler_output": dp, "mean_pooled": dm,
                        "last_hidden_state_tanh_gelu": dt}
        worst = max(worst, dh, dp, dm)
    assert worst < 1e-5, worst
    goldens["tf_check"] = {
        "description": "max |TF - transformers| where TF reruns Google's BERT forward (erf gelu, "
                       "LayerNorm eps 1e-12, -10000 attention mask) on the checkpoint read with "
                       "tf.train.load_checkpoint; *_tanh_gelu uses the tanh-approximate gelu",
        "tensorflow": tf.__version__,
        **report,
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(goldens, f)
        f.write("\n")
    print(f"updated {path} ({os.path.getsize(path)} bytes)")


# --------------------------------------------------------------------------------------------
# Stage 4: list the variables and decode the tensor bundle's .index by hand.
# --------------------------------------------------------------------------------------------
def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_CRC = _crc32c_table()


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = _CRC[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc_mask(crc):
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def varint(buf, pos):
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def proto_fields(buf):
    """Raw protobuf wire fields: [(field_number, wire_type, value)]."""
    out, pos = [], 0
    while pos < len(buf):
        tag, pos = varint(buf, pos)
        fn, wt = tag >> 3, tag & 7
        if wt == 0:
            v, pos = varint(buf, pos)
        elif wt == 1:
            v = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wt == 5:
            v = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        elif wt == 2:
            n, pos = varint(buf, pos)
            v = bytes(buf[pos:pos + n])
            pos += n
        else:
            raise ValueError(f"wire type {wt}")
        out.append((fn, wt, v))
    return out


def read_block(buf, offset, size):
    """One table block: entries [(key, value)], compression byte, trailer crc check."""
    contents = buf[offset:offset + size]
    ctype = buf[offset + size]
    stored = struct.unpack_from("<I", buf, offset + size + 1)[0]
    ok = stored == crc_mask(crc32c(buf[offset:offset + size + 1]))
    assert ctype == 0, f"compressed block (type {ctype})"
    num_restarts = struct.unpack_from("<I", contents, len(contents) - 4)[0]
    limit = len(contents) - 4 - 4 * num_restarts
    entries, pos, key = [], 0, b""
    while pos < limit:
        shared, pos = varint(contents, pos)
        non_shared, pos = varint(contents, pos)
        vlen, pos = varint(contents, pos)
        key = key[:shared] + bytes(contents[pos:pos + non_shared])
        pos += non_shared
        entries.append((key, bytes(contents[pos:pos + vlen])))
        pos += vlen
    return entries, ctype, ok, num_restarts


def stage_inspect(args):
    import tensorflow as tf
    from tensorflow.core.protobuf import tensor_bundle_pb2

    out = model_dir(args)
    prefix = os.path.join(out, CKPT)
    dtypes = tf.compat.v1.train.NewCheckpointReader(prefix).get_variable_to_dtype_map()
    print("tf.train.list_variables:")
    for name, shape in tf.train.list_variables(prefix):
        print(f"  {name:55s} {str(shape):10s} {dtypes[name].name}")

    idx = open(prefix + ".index", "rb").read()
    data = open(prefix + ".data-00000-of-00001", "rb").read()
    print(f"\n.index {len(idx)} bytes, .data {len(data)} bytes")
    footer = idx[-48:]
    print("footer (last 48 bytes):", footer.hex(" "))
    magic = struct.unpack_from("<Q", footer, 40)[0]
    print(f"magic (last 8 bytes, little-endian u64): {magic:#018x}")
    mo, p = varint(footer, 0)
    ms, p = varint(footer, p)
    io_, p = varint(footer, p)
    is_, p = varint(footer, p)
    print(f"metaindex handle offset={mo} size={ms}; index handle offset={io_} size={is_}; "
          f"handles use {p} bytes, zero padding to byte 40")
    meta_entries, ctype, ok, nr = read_block(idx, mo, ms)
    print(f"metaindex block: {len(meta_entries)} entries, compression byte {ctype}, crc ok {ok}")
    index_entries, ctype, ok, nr = read_block(idx, io_, is_)
    print(f"index block: compression byte {ctype}, crc ok {ok}, restarts {nr}")
    all_entries = []
    for sep, handle in index_entries:
        off, q = varint(handle, 0)
        size, q = varint(handle, q)
        entries, ctype, ok, nr = read_block(idx, off, size)
        print(f"  data block key<= {sep!r}: offset={off} size={size} entries={len(entries)} "
              f"compression byte={ctype} trailer crc ok={ok} restarts={nr}")
        all_entries += entries

    header_key, header_val = all_entries[0]
    assert header_key == b""
    print("\nBundleHeaderProto (key ''):", header_val.hex(" "))
    print("  raw fields:", proto_fields(header_val))
    hdr = tensor_bundle_pb2.BundleHeaderProto.FromString(header_val)
    print("  parsed:", str(hdr).replace("\n", " | "))

    for key, val in all_entries[1:]:
        e = tensor_bundle_pb2.BundleEntryProto.FromString(val)
        raw = data[e.offset:e.offset + e.size]
        c = crc32c(raw)
        assert e.crc32c == crc_mask(c), key
    print(f"all {len(all_entries) - 1} entries: stored crc32c == Mask(crc32c(data[offset:offset+size]))")
    for want in (b"bert/encoder/layer_0/intermediate/dense/kernel", b"global_step"):
        val = dict(all_entries)[want]
        e = tensor_bundle_pb2.BundleEntryProto.FromString(val)
        raw = data[e.offset:e.offset + e.size]
        c = crc32c(raw)
        print(f"\nBundleEntryProto {want.decode()!r}: {val.hex(' ')}")
        print("  raw fields (number, wire type, value):", proto_fields(val))
        print("  parsed:", str(e).replace("\n", " | "))
        print(f"  crc32c(data bytes)={c:#010x} Mask()={crc_mask(c):#010x} stored={e.crc32c:#010x}")
        arr = tf.compat.v1.train.NewCheckpointReader(prefix).get_tensor(want.decode())
        print(f"  data bytes == little-endian tensor bytes: {raw == np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder('<')).tobytes()}")
    keys = [k for k, _ in all_entries]
    print("\nkeys sorted bytewise:", keys == sorted(keys))
    print("entry offsets contiguous in key order:", _contiguous(all_entries[1:], tensor_bundle_pb2))


def _contiguous(entries, pb2):
    pos = 0
    for _, val in entries:
        e = pb2.BundleEntryProto.FromString(val)
        if e.offset != pos:
            return f"no (gap at {pos} -> {e.offset})"
        pos = e.offset + e.size
    return f"yes, total {pos} bytes"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stage", choices=["tf-checkpoint", "torch-goldens", "tf-verify", "inspect"])
    ap.add_argument("--golden", required=True, help="crates/graft-model/tests/golden/tf_bert")
    ap.add_argument("--work", help="scratch folder shared by the stages")
    args = ap.parse_args()
    if args.stage != "inspect" and not args.work:
        sys.exit("--work is required")
    {"tf-checkpoint": stage_tf_checkpoint, "torch-goldens": stage_torch_goldens,
     "tf-verify": stage_tf_verify, "inspect": stage_inspect}[args.stage](args)


if __name__ == "__main__":
    main()
