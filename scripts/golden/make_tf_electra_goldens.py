#!/usr/bin/env python3
"""Make a tiny Google-format ELECTRA TensorFlow checkpoint and its transformers goldens.

Purpose: graft reads Google's original ELECTRA releases (google-research/electra: a folder such
as `electra_small/` holding `checkpoint`, a TF1 tensor bundle whose prefix is named after the
model, `electra_small.index` + `electra_small.data-00000-of-00001`, and a WordPiece
`vocab.txt`) directly, in Rust. Unlike BERT's releases there is no config json: the sizes come
from the pre-training code's hparams, so a reader infers them from the tensor shapes. This
script writes such a release, with random weights, saved by real TensorFlow, and the outputs
that transformers' `ElectraModel` (the discriminator body, no head) gives for the same weights,
so that graft's reader can be checked against both.

The work runs in four stages, each in its own Python environment (TensorFlow and PyTorch are
not installed together). Stages pass data through a scratch folder WORK (any empty folder
outside the repository). From the repo root:

    WORK=$(mktemp -d)
    GOLDEN=crates/graft-model/tests/golden/tf_electra
    # 1. TensorFlow: write vocab.txt and the checkpoint (tf.compat.v1 graph mode, variables
    #    named as ELECTRA's model/modeling.py and run_pretraining.py name a discriminator +
    #    generator pre-training checkpoint, saved by tf.compat.v1.train.Saver).
    TF_PY scripts/golden/make_tf_electra_goldens.py tf-checkpoint --golden "$GOLDEN" --work "$WORK"
    # 2. PyTorch: load the discriminator body into transformers' ElectraModel through an
    #    explicit name map, tokenize with BertTokenizerFast(vocab=vocab.txt), write
    #    $GOLDEN/goldens.json.
    TORCH_PY scripts/golden/make_tf_electra_goldens.py torch-goldens --golden "$GOLDEN" --work "$WORK"
    # 3. TensorFlow: rerun ELECTRA's forward pass in TF from the checkpoint
    #    (tf.train.load_checkpoint), compare with transformers, record the difference.
    TF_PY scripts/golden/make_tf_electra_goldens.py tf-verify --golden "$GOLDEN" --work "$WORK"
    # 4. (optional, writes nothing) list the variables, which a reader reads and which it skips,
    #    and check the .index file's block checksums by hand.
    TF_PY scripts/golden/make_tf_electra_goldens.py inspect --golden "$GOLDEN"

TF_PY is a Python with `tensorflow-cpu` and `numpy`; TORCH_PY one with `torch`, `transformers`
and `numpy`. Versions used for the committed files: TensorFlow 2.21.0 (tensorflow-cpu),
numpy 2.4.6, torch 2.15.0, transformers 5.24.0, Python 3.11. Everything runs on CPU in float32.
The vocabulary, sentences and .index decoding helpers are those of make_tf_bert_goldens.py
(imported from this folder), so vocab.txt is the BERT golden's, byte for byte.

Files written:
    GOLDEN/electra_tiny/{vocab.txt, checkpoint,
        electra_tiny.index, electra_tiny.data-00000-of-00001}
    GOLDEN/goldens.json

Sizes: vocab 115 (from vocab.txt), embedding size E=64, hidden H=128, 2 layers, 2 heads
(ELECTRA's rule: heads = max(1, H // 64), head size 64), intermediate 4H=512, 64 positions,
2 token types, hidden_act "gelu" (ELECTRA's modeling.py computes gelu with erf, as transformers
does). LayerNorm epsilon 1e-12 (tf.contrib layer_norm), attention mask adder -10000.

The checkpoint holds, as ELECTRA's pre-training checkpoints do:
  * the discriminator, which is the model a reader wants: `electra/embeddings/...`
    (word_embeddings [vocab, E], position_embeddings [64, E], token_type_embeddings [2, E],
    LayerNorm [E]), `electra/embeddings_project/{kernel [E, H], bias [H]}` (present only when
    E != H) and `electra/encoder/layer_{i}/...` named as in BERT; there is no pooler: ELECTRA's
    `pooled_output` is the first token's final hidden state;
  * the generator, sharing `electra/embeddings` (untied_generator_embeddings=False) with its own
    `generator/embeddings_project` [E, G] and `generator/encoder/layer_{i}/...` at hidden size
    G = H/4 = 32 (1 head, intermediate 4G);
  * the heads: `discriminator_predictions/dense` [H, H], `discriminator_predictions/dense_1`
    [H, 1], `generator_predictions/dense` [G, E], `generator_predictions/LayerNorm` [E],
    `generator_predictions/output_bias` [vocab];
  * an int64 `global_step`.
Everything outside `electra/` must be skipped by a reader of the discriminator. Dense kernels
are [in, out], as tf.layers.dense stores them.

Forward order (modeling.py BertModel): x = word[ids] + token_type[tt] + position[:S]; LayerNorm
(`electra/embeddings/LayerNorm`); dropout; then, when E != H, the `embeddings_project` dense
(no activation); then the BERT encoder layers. transformers' ElectraEmbeddings + ElectraModel
follow the same order.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_tf_bert_goldens as bert  # noqa: E402  (vocabulary, sentences, .index helpers)

MODEL_DIR = "electra_tiny"
CKPT = "electra_tiny"  # ELECTRA names the bundle prefix after the model
SEED = 20240612
MAX_LENGTH = bert.MAX_LENGTH
LN_EPS = 1e-12
GLOBAL_STEP = 1000

EMBEDDING_SIZE = 64
HIDDEN_SIZE = 128
NUM_LAYERS = 2
NUM_HEADS = max(1, HIDDEN_SIZE // 64)
INTERMEDIATE = 4 * HIDDEN_SIZE
MAX_POSITIONS = 64
TYPE_VOCAB = 2
# Generator (skipped by a reader): hidden = generator_hidden_size (0.25) * H, same depth.
GEN_HIDDEN = HIDDEN_SIZE // 4
GEN_LAYERS = NUM_LAYERS
GEN_INTERMEDIATE = 4 * GEN_HIDDEN

SINGLE = bert.SINGLE
PAIR = bert.PAIR


def model_dir(args):
    return os.path.join(args.golden, MODEL_DIR)


def config(vocab_size):
    """The discriminator's sizes, as transformers' ElectraConfig takes them."""
    return {
        "vocab_size": vocab_size,
        "embedding_size": EMBEDDING_SIZE,
        "hidden_size": HIDDEN_SIZE,
        "num_hidden_layers": NUM_LAYERS,
        "num_attention_heads": NUM_HEADS,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": MAX_POSITIONS,
        "type_vocab_size": TYPE_VOCAB,
        "hidden_act": "gelu",
        "layer_norm_eps": LN_EPS,
    }


def make_values(vocab_size):
    """ELECTRA-named float32 arrays, seeded (global_step is added by the Saver graph)."""
    rng = np.random.default_rng(SEED)
    E, H = EMBEDDING_SIZE, HIDDEN_SIZE

    def w(*shape):
        return rng.normal(0.0, 0.02, size=shape).astype(np.float32)

    def b(n):
        return rng.normal(0.0, 0.01, size=(n,)).astype(np.float32)

    def ln(prefix, n, out):
        out[prefix + "/gamma"] = (1.0 + rng.normal(0.0, 0.05, size=(n,))).astype(np.float32)
        out[prefix + "/beta"] = rng.normal(0.0, 0.02, size=(n,)).astype(np.float32)

    def dense(prefix, n_in, n_out, out):
        out[prefix + "/kernel"] = w(n_in, n_out)  # [in, out], as tf.layers.dense stores it
        out[prefix + "/bias"] = b(n_out)

    def encoder(scope, hidden, inter, layers, out):
        for i in range(layers):
            p = f"{scope}/encoder/layer_{i}"
            for name in ("query", "key", "value"):
                dense(f"{p}/attention/self/{name}", hidden, hidden, out)
            dense(f"{p}/attention/output/dense", hidden, hidden, out)
            ln(f"{p}/attention/output/LayerNorm", hidden, out)
            dense(f"{p}/intermediate/dense", hidden, inter, out)
            dense(f"{p}/output/dense", inter, hidden, out)
            ln(f"{p}/output/LayerNorm", hidden, out)

    v = {}
    # Discriminator (shared embeddings live under electra/embeddings).
    v["electra/embeddings/word_embeddings"] = w(vocab_size, E)
    v["electra/embeddings/token_type_embeddings"] = w(TYPE_VOCAB, E)
    v["electra/embeddings/position_embeddings"] = w(MAX_POSITIONS, E)
    ln("electra/embeddings/LayerNorm", E, v)
    dense("electra/embeddings_project", E, H, v)
    encoder("electra", H, INTERMEDIATE, NUM_LAYERS, v)
    # Generator body (scope "generator"; embeddings shared with electra/embeddings).
    dense("generator/embeddings_project", E, GEN_HIDDEN, v)
    encoder("generator", GEN_HIDDEN, GEN_INTERMEDIATE, GEN_LAYERS, v)
    # Pre-training heads (run_pretraining.py).
    dense("discriminator_predictions/dense", H, H, v)
    dense("discriminator_predictions/dense_1", H, 1, v)
    dense("generator_predictions/dense", GEN_HIDDEN, E, v)
    ln("generator_predictions/LayerNorm", E, v)
    v["generator_predictions/output_bias"] = b(vocab_size)
    return v


# --------------------------------------------------------------------------------------------
# Stage 1: TensorFlow writes the release folder.
# --------------------------------------------------------------------------------------------
def stage_tf_checkpoint(args):
    import tensorflow as tf

    out = model_dir(args)
    os.makedirs(out, exist_ok=True)
    vocab = bert.vocab_list()
    text = "".join(t + "\n" for t in vocab)
    bert_vocab = os.path.join(os.path.dirname(os.path.abspath(args.golden)), "tf_bert",
                              bert.MODEL_DIR, "vocab.txt")
    if os.path.exists(bert_vocab):
        with open(bert_vocab, encoding="utf-8", newline="") as f:
            assert f.read() == text, "vocab differs from the BERT golden's"
    with open(os.path.join(out, "vocab.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write(text)

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

    np.savez(os.path.join(args.work, "weights.npz"),
             **{k.replace("/", "|"): a for k, a in values.items()})
    with open(os.path.join(args.work, "tf_versions.json"), "w") as f:
        json.dump({"tensorflow": tf.__version__, "numpy_tf": np.__version__}, f)
    for name in sorted(os.listdir(out)):
        print(f"{os.path.getsize(os.path.join(out, name)):8d}  {name}")


# --------------------------------------------------------------------------------------------
# Stage 2: transformers (PyTorch) goldens from the same values.
# --------------------------------------------------------------------------------------------
def hf_state_dict(values, num_layers):
    """ELECTRA name -> transformers ElectraModel name; kernels [in, out] become [out, in]."""
    import torch

    m = {
        "embeddings.word_embeddings.weight": ("electra/embeddings/word_embeddings", False),
        "embeddings.token_type_embeddings.weight":
            ("electra/embeddings/token_type_embeddings", False),
        "embeddings.position_embeddings.weight": ("electra/embeddings/position_embeddings", False),
        "embeddings.LayerNorm.weight": ("electra/embeddings/LayerNorm/gamma", False),
        "embeddings.LayerNorm.bias": ("electra/embeddings/LayerNorm/beta", False),
        "embeddings_project.weight": ("electra/embeddings_project/kernel", True),
        "embeddings_project.bias": ("electra/embeddings_project/bias", False),
    }
    for i in range(num_layers):
        g, h = f"electra/encoder/layer_{i}", f"encoder.layer.{i}"
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
    from transformers import BertTokenizerFast, ElectraConfig, ElectraModel

    torch.manual_seed(0)
    out = model_dir(args)
    npz = np.load(os.path.join(args.work, "weights.npz"))
    values = {k.replace("|", "/"): npz[k] for k in npz.files}
    with open(os.path.join(args.work, "tf_versions.json")) as f:
        tfv = json.load(f)
    with open(os.path.join(out, "vocab.txt"), encoding="utf-8") as f:
        vocab_size = sum(1 for _ in f)
    conf = config(vocab_size)
    assert values["electra/embeddings/word_embeddings"].shape == (vocab_size, EMBEDDING_SIZE)

    hf_config = ElectraConfig(
        vocab_size=conf["vocab_size"], embedding_size=conf["embedding_size"],
        hidden_size=conf["hidden_size"], num_hidden_layers=conf["num_hidden_layers"],
        num_attention_heads=conf["num_attention_heads"],
        intermediate_size=conf["intermediate_size"], hidden_act=conf["hidden_act"],
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        max_position_embeddings=conf["max_position_embeddings"],
        type_vocab_size=conf["type_vocab_size"], initializer_range=0.02,
        layer_norm_eps=LN_EPS, pad_token_id=0,
    )
    hf_config._attn_implementation = "eager"
    model = ElectraModel(hf_config).eval()
    sd, used = hf_state_dict(values, conf["num_hidden_layers"])
    want = {k for k in model.state_dict() if not k.endswith("position_ids")
            and not k.endswith("token_type_ids")}
    assert set(sd) == want, (sorted(set(sd) ^ want))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith(("position_ids", "token_type_ids")) for k in missing), \
        (missing, unexpected)
    skipped = sorted(set(values) - used)
    assert all(not k.startswith("electra/") for k in skipped), skipped
    assert all(k.startswith("electra/") for k in used)
    print(f"skipped ({len(skipped)} generator / head tensors):", skipped)

    # transformers 5.x: the keyword is `vocab` (a path or a dict); a `vocab_file=` keyword is
    # silently ignored there and leaves a 5-token vocabulary, so check the size.
    tok = BertTokenizerFast(vocab=os.path.join(out, "vocab.txt"), do_lower_case=True)
    assert len(tok) == vocab_size, (len(tok), vocab_size)

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
            "first_token": h[:, 0].tolist(),
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
    flat = [t for r in single["tokens"] for t in r]
    assert "[UNK]" in flat and any(t.startswith("##") for t in flat)
    assert sum(single["attention_mask"][3]) == MAX_LENGTH and single["tokens"][3][-1] == "[SEP]"
    assert any(0 in r for r in single["attention_mask"])
    assert 1 in pair["token_type_ids"][0]

    goldens = {
        "description": "transformers ElectraModel (discriminator body, no head; eager attention, "
                       "CPU, float32, eval) outputs for the Google-format ELECTRA TF checkpoint "
                       f"in {MODEL_DIR}/ (variables under electra/; generator/, "
                       "discriminator_predictions/, generator_predictions/ and global_step are "
                       "not part of the model); tokenizer BertTokenizerFast(vocab=vocab.txt, "
                       f"do_lower_case=True), truncation at {MAX_LENGTH}, padded to the batch's "
                       "longest. first_token is last_hidden_state[:, 0] (ELECTRA's "
                       "pooled_output; there is no pooler). mean_pooled is the "
                       "attention-mask-weighted mean of last_hidden_state.",
        "model_dir": MODEL_DIR,
        "checkpoint_prefix": CKPT,
        "max_length": MAX_LENGTH,
        "layer_norm_eps": LN_EPS,
        "global_step": GLOBAL_STEP,
        "config": conf,
        "config_notes": {
            "release_has_config_json": False,
            "from_shapes": "vocab_size, embedding_size = electra/embeddings/word_embeddings; "
                           "hidden_size = electra/embeddings_project/kernel[1] (or "
                           "electra/encoder/layer_0/attention/self/query/kernel); "
                           "intermediate_size = .../intermediate/dense/kernel[1]; "
                           "num_hidden_layers = count of electra/encoder/layer_N; "
                           "max_position_embeddings, type_vocab_size = rows of the position "
                           "and token type tables",
            "num_attention_heads_rule": "max(1, hidden_size // 64)",
            "generator": {"hidden_size": GEN_HIDDEN, "num_hidden_layers": GEN_LAYERS,
                          "num_attention_heads": max(1, GEN_HIDDEN // 64),
                          "intermediate_size": GEN_INTERMEDIATE,
                          "shares": "electra/embeddings"},
        },
        "skipped_variables": skipped + ["global_step"],
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
def tf_electra_forward(reader, conf, input_ids, token_type_ids, attention_mask, scope="electra"):
    """ELECTRA modeling.py's BertModel forward in TF ops (eager), weights from the checkpoint."""
    import tensorflow as tf

    def g(name):
        return tf.constant(reader.get_tensor(name))

    def layer_norm(x, prefix):
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + LN_EPS) * g(prefix + "/gamma") + g(prefix + "/beta")

    def dense(x, prefix):
        return tf.tensordot(x, g(prefix + "/kernel"), axes=1) + g(prefix + "/bias")

    def gelu(x):  # modeling.py: x * 0.5 * (1 + erf(x / sqrt(2)))
        return x * (0.5 * (1.0 + tf.math.erf(x / np.sqrt(2.0).astype(np.float32))))

    ids = tf.constant(input_ids, tf.int32)
    tt = tf.constant(token_type_ids, tf.int32)
    mask = tf.constant(attention_mask, tf.float32)
    B, S = ids.shape
    H, N = conf["hidden_size"], conf["num_attention_heads"]
    D = H // N
    # embedding_lookup + embedding_postprocessor: word + token type + position, LayerNorm.
    x = (tf.gather(g("electra/embeddings/word_embeddings"), ids)
         + tf.gather(g("electra/embeddings/token_type_embeddings"), tt)
         + g("electra/embeddings/position_embeddings")[:S][None])
    x = layer_norm(x, "electra/embeddings/LayerNorm")
    # then, in scope "electra", embeddings_project when the width differs from hidden_size.
    if x.shape[-1] != H:
        x = dense(x, f"{scope}/embeddings_project")
    adder = (1.0 - mask[:, None, None, :]) * -10000.0

    def heads(t):
        return tf.transpose(tf.reshape(t, [B, S, N, D]), [0, 2, 1, 3])

    for i in range(conf["num_hidden_layers"]):
        p = f"{scope}/encoder/layer_{i}"
        q = heads(dense(x, p + "/attention/self/query"))
        k = heads(dense(x, p + "/attention/self/key"))
        v = heads(dense(x, p + "/attention/self/value"))
        scores = tf.matmul(q, k, transpose_b=True) / np.sqrt(D).astype(np.float32) + adder
        ctx = tf.matmul(tf.nn.softmax(scores, axis=-1), v)
        ctx = tf.reshape(tf.transpose(ctx, [0, 2, 1, 3]), [B, S, H])
        x = layer_norm(dense(ctx, p + "/attention/output/dense") + x, p + "/attention/output/LayerNorm")
        inter = gelu(dense(x, p + "/intermediate/dense"))
        x = layer_norm(dense(inter, p + "/output/dense") + x, p + "/output/LayerNorm")
    return x.numpy()


def stage_tf_verify(args):
    import tensorflow as tf

    out = model_dir(args)
    path = os.path.join(args.golden, "goldens.json")
    with open(path) as f:
        goldens = json.load(f)
    conf = goldens["config"]
    reader = tf.train.load_checkpoint(os.path.join(out, CKPT))
    assert int(reader.get_tensor("global_step")) == GLOBAL_STEP
    shapes = reader.get_variable_to_shape_map()
    # The sizes follow from the shapes alone (no config json in an ELECTRA release).
    layers = {int(k.split("/")[2][len("layer_"):]) for k in shapes
              if k.startswith("electra/encoder/layer_")}
    inferred = {
        "vocab_size": shapes["electra/embeddings/word_embeddings"][0],
        "embedding_size": shapes["electra/embeddings/word_embeddings"][1],
        "hidden_size": shapes["electra/encoder/layer_0/attention/self/query/kernel"][1],
        "num_hidden_layers": max(layers) + 1,
        "intermediate_size": shapes["electra/encoder/layer_0/intermediate/dense/kernel"][1],
        "max_position_embeddings": shapes["electra/embeddings/position_embeddings"][0],
        "type_vocab_size": shapes["electra/embeddings/token_type_embeddings"][0],
    }
    inferred["num_attention_heads"] = max(1, inferred["hidden_size"] // 64)
    assert all(conf[k] == v for k, v in inferred.items()), (inferred, conf)
    assert shapes["electra/embeddings_project/kernel"] == [conf["embedding_size"], conf["hidden_size"]]
    report = {}
    worst = 0.0
    for name in ("single", "pair"):
        b = goldens[name]
        h = tf_electra_forward(reader, conf, b["input_ids"], b["token_type_ids"], b["attention_mask"])
        m = np.array(b["attention_mask"], np.float32)[..., None]
        mean = (h * m).sum(1) / m.sum(1)
        dh = float(np.abs(h - np.array(b["last_hidden_state"])).max())
        df = float(np.abs(h[:, 0] - np.array(b["first_token"])).max())
        dm = float(np.abs(mean - np.array(b["mean_pooled"])).max())
        print(f"{name}: TF vs transformers max|diff| last_hidden_state={dh:.3g} "
              f"first_token={df:.3g} mean_pooled={dm:.3g}")
        report[name] = {"last_hidden_state": dh, "first_token": df, "mean_pooled": dm}
        worst = max(worst, dh, df, dm)
    assert worst < 1e-5, worst
    goldens["tf_check"] = {
        "description": "max |TF - transformers| where TF reruns ELECTRA modeling.py's forward "
                       "(embeddings sum, LayerNorm, embeddings_project, BERT encoder; erf gelu, "
                       "LayerNorm eps 1e-12, -10000 attention mask) on the checkpoint read with "
                       "tf.train.load_checkpoint; the config was re-inferred from the shapes",
        "tensorflow": tf.__version__,
        **report,
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(goldens, f)
        f.write("\n")
    print(f"updated {path} ({os.path.getsize(path)} bytes)")


# --------------------------------------------------------------------------------------------
# Stage 4: list the variables and check the tensor bundle's .index by hand.
# --------------------------------------------------------------------------------------------
def stage_inspect(args):
    import tensorflow as tf
    from tensorflow.core.protobuf import tensor_bundle_pb2

    prefix = os.path.join(model_dir(args), CKPT)
    dtypes = tf.compat.v1.train.NewCheckpointReader(prefix).get_variable_to_dtype_map()
    print("tf.train.list_variables (R = read for the discriminator, - = skipped):")
    for name, shape in tf.train.list_variables(prefix):
        mark = "R" if name.startswith("electra/") else "-"
        print(f"  {mark} {name:62s} {str(shape):11s} {dtypes[name].name}")

    idx = open(prefix + ".index", "rb").read()
    data = open(prefix + ".data-00000-of-00001", "rb").read()
    print(f"\n.index {len(idx)} bytes, .data {len(data)} bytes")
    footer = idx[-48:]
    mo, p = bert.varint(footer, 0)
    ms, p = bert.varint(footer, p)
    io_, p = bert.varint(footer, p)
    is_, p = bert.varint(footer, p)
    index_entries, ctype, ok, _ = bert.read_block(idx, io_, is_)
    print(f"index block: compression byte {ctype}, crc ok {ok}")
    all_entries = []
    for sep, handle in index_entries:
        off, q = bert.varint(handle, 0)
        size, q = bert.varint(handle, q)
        entries, ctype, ok, nr = bert.read_block(idx, off, size)
        print(f"  data block key<= {sep!r}: offset={off} size={size} entries={len(entries)} "
              f"compression byte={ctype} trailer crc ok={ok}")
        all_entries += entries
    assert all_entries[0][0] == b""
    for key, val in all_entries[1:]:
        e = tensor_bundle_pb2.BundleEntryProto.FromString(val)
        assert e.crc32c == bert.crc_mask(bert.crc32c(data[e.offset:e.offset + e.size])), key
    print(f"all {len(all_entries) - 1} entries: stored crc32c == Mask(crc32c(data bytes))")
    keys = [k for k, _ in all_entries]
    print("keys sorted bytewise:", keys == sorted(keys))
    print("entry offsets contiguous in key order:",
          bert._contiguous(all_entries[1:], tensor_bundle_pb2))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stage", choices=["tf-checkpoint", "torch-goldens", "tf-verify", "inspect"])
    ap.add_argument("--golden", required=True, help="crates/graft-model/tests/golden/tf_electra")
    ap.add_argument("--work", help="scratch folder shared by the stages")
    args = ap.parse_args()
    if args.stage != "inspect" and not args.work:
        sys.exit("--work is required")
    {"tf-checkpoint": stage_tf_checkpoint, "torch-goldens": stage_torch_goldens,
     "tf-verify": stage_tf_verify, "inspect": stage_inspect}[args.stage](args)


if __name__ == "__main__":
    main()
