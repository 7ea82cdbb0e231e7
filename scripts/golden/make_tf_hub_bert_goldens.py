#!/usr/bin/env python3
"""Make a TensorFlow Hub BERT SavedModel (random weights) with its outputs, for graft's tests.

Purpose: graft opens TF Hub's BERT encoders (`bert_en_uncased_L-12_H-768_A-12` and the Small
BERTs, `.../4` SavedModels) without TensorFlow, mapping their variables to transformers'
`BertModel`. Those SavedModels were written by TensorFlow Model Garden's
`official/nlp/tools/export_tfhub_lib.export_model`; this script runs that same function on a
`BertEncoder` of random weights and the tiny `uncased_L-2_H-32_A-4` config and vocabulary of
`golden/tf_bert/`, so the SavedModel has TF Hub's layout: a Keras 2 SavedModel whose variables
are the encoder's (`word_embeddings/embeddings`, `transformer/layer_0/self_attention/query/kernel`
of shape [hidden, heads, head_dim], ...), `assets/vocab.txt` and a `do_lower_case` variable.

From the repo root (TF_PY is a Python with tensorflow-cpu 2.21.0 and tf-keras 2.21.0; Model
Garden is not installed as a package: MODELS holds `official/` from the tf-models-official
2.20.0 wheel, installed with `pip install --no-deps --target MODELS tf-models-official
gin-config pyyaml scipy`):

    PYTHONPATH=MODELS TF_PY scripts/golden/make_tf_hub_bert_goldens.py \
        --golden crates/graft-model/tests/golden/tf_hub_bert

Versions used for the committed files: TensorFlow 2.21.0 (tensorflow-cpu), tf-keras 2.21.0,
tf-models-official 2.20.0, numpy 2.4.6, Python 3.11, CPU, float32.

Files written under GOLDEN:
    bert_en_uncased_L-2_H-32_A-4/   the SavedModel (saved_model.pb, variables/, assets/vocab.txt;
                                    fingerprint.pb and keras_metadata.pb removed: graft reads
                                    neither)
    outputs.json                    fixed token ids, mask and type ids (two sequences, one with
                                    padding), TF's own `sequence_output` and `pooled_output` of
                                    the SavedModel reloaded with tf.saved_model.load, and every
                                    variable's name and shape.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASE = os.path.join(ROOT, "crates/graft-model/tests/golden/tf_bert/uncased_L-2_H-32_A-4")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--golden", required=True)
    args = ap.parse_args()
    import tensorflow as tf
    from official.legacy.bert import configs
    from official.nlp.tools import export_tfhub_lib

    config = configs.BertConfig.from_json_file(os.path.join(RELEASE, "bert_config.json"))
    encoder = export_tfhub_lib.get_bert_encoder(config)
    rng = np.random.default_rng(0)
    for w in encoder.weights:
        shape = tuple(w.shape)
        if "gamma" in w.name:
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, 0.2 if len(shape) > 1 else 0.1, shape)
        w.assign(value.astype(np.float32))
    scratch = tempfile.mkdtemp()
    checkpoint = tf.train.Checkpoint(encoder=encoder).save(os.path.join(scratch, "ckpt"))

    out = os.path.join(args.golden, "bert_en_uncased_L-2_H-32_A-4")
    if os.path.exists(out):
        shutil.rmtree(out)
    export_tfhub_lib.export_model(
        out, bert_config=config, model_checkpoint_path=checkpoint, with_mlm=False,
        vocab_file=os.path.join(RELEASE, "vocab.txt"), do_lower_case=True)
    for name in ["fingerprint.pb", "keras_metadata.pb"]:
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))

    ids = np.array([[2, 45, 67, 89, 12, 3, 0, 0], [2, 14, 15, 3, 99, 100, 101, 3]], np.int32)
    mask = np.array([[1, 1, 1, 1, 1, 1, 0, 0], [1] * 8], np.int32)
    types = np.array([[0] * 8, [0, 0, 0, 0, 1, 1, 1, 1]], np.int32)
    loaded = tf.saved_model.load(out)
    outputs = loaded(dict(input_word_ids=ids, input_mask=mask, input_type_ids=types),
                     training=False)
    variables = [{"name": v.name, "shape": list(v.shape)} for v in loaded.variables]
    golden = {
        "input_word_ids": ids.tolist(),
        "input_mask": mask.tolist(),
        "input_type_ids": types.tolist(),
        "sequence_output": np.asarray(outputs["sequence_output"]).reshape(-1).tolist(),
        "pooled_output": np.asarray(outputs["pooled_output"]).reshape(-1).tolist(),
        "do_lower_case": bool(loaded.do_lower_case.numpy()),
        "variables": variables,
    }
    with open(os.path.join(args.golden, "outputs.json"), "w") as f:
        json.dump(golden, f)
    for v in variables:
        print(v["name"], v["shape"])


if __name__ == "__main__":
    sys.exit(main())
