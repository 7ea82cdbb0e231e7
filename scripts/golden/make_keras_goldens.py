#!/usr/bin/env python3
"""Make Keras weight files (Keras 3 `.keras` and `.weights.h5`, Keras 2 `.h5`) with goldens.

Purpose: graft reads Keras Applications' image models from their HDF5 weight files in Rust, and
maps Keras' layer names into its families with Keras' numerics. This script writes such files,
saved by real Keras, on random weights, and the outputs a reader must reproduce.

The model is Keras' own ResNet v1 builder (`keras.src.applications.resnet.ResNet` with
`stack_residual_blocks_v1`, the code behind `keras.applications.ResNet50`) with narrow stages
(bottleneck widths 4, 8, 8, 16; blocks 2, 1, 1, 1) so the files stay small: the layer names,
the stride on the first 1x1 convolution, the convolution biases, BatchNorm's epsilon of
1.001e-5 and the asymmetric padding layers are ResNet50's. The full ResNet50/101/152 layer
lists (names and shapes, no values) are written too, so tests check the map on them.

From the repo root (TF_PY is a Python with tensorflow-cpu 2.21.0, whose `tf.keras` is Keras 3,
and tf-keras 2.21.0, the legacy Keras 2, importable as `tf_keras`):

    TF_PY scripts/golden/make_keras_goldens.py --golden crates/graft-model/tests/golden/keras
    # The same check on a full random-weight ResNet50 and MobileNetV3Large (files too large to
    # commit): write them to DIR (ResNet50 in the three formats, MobileNetV3Large as .keras and
    # Keras 2 .h5) with Keras' features of golden/vision/chelsea_224.png, embed the
    # photo with graft from each file, and print the largest differences:
    TF_PY scripts/golden/make_keras_goldens.py --full DIR
    mkdir DIR/img && cp crates/graft-model/tests/golden/vision/chelsea_224.png DIR/img/
    for f in resnet50.keras resnet50.weights.h5 resnet50.h5 mobilenet_v3_large.keras \
        mobilenet_v3_large.h5; do
        graft embed --model DIR/$f --input DIR/img --output DIR/$f.emb.safetensors; done
    TF_PY scripts/golden/make_keras_goldens.py --compare DIR

Versions used for the committed files: TensorFlow 2.21.0 (tensorflow-cpu), Keras 3.15.1,
tf-keras 2.21.0, h5py 3.14.0, numpy 2.4.6, Python 3.11, CPU, float32.

Files written under GOLDEN:
    resnet_tiny.keras          model.save() by Keras 3 (a zip of config.json, metadata.json,
                               model.weights.h5).
    resnet_tiny.weights.h5     model.save_weights() by Keras 3.
    resnet_tiny_keras35.keras  resnet_tiny.keras without the layer names Keras 3.0 to 3.5 did
                               not write (the `name` attributes of `model.weights.h5` removed
                               with h5py, `metadata.json` saying 3.5.0).
    resnet_tiny.h5             model.save() by tf-keras (Keras 2's HDF5 format, the one of
                               Keras Applications' published `..._tf_kernels.h5` files), the
                               same weights set layer by layer by name.
    resnet_tiny_weights_tf_dim_ordering_tf_kernels.h5
                               model.save_weights() by tf-keras: Keras 2's weights-only HDF5,
                               the layout of Keras Applications' published weight files
                               (`resnet50_weights_tf_dim_ordering_tf_kernels.h5`).
    resnet_tiny.json           the input image (`golden/vision/chelsea_32.png` as Keras reads it,
                               RGB 0-255, NHWC), the preprocessed input (`preprocess_input`,
                               caffe mode: BGR, ImageNet means subtracted), the pooled features
                               and the logits (classifier without softmax) of Keras 3 and of
                               tf-keras, and their largest difference.
    mobilenet_v3_small.keras   Keras 3's MobileNetV3Small (alpha 0.35, 32x32 input, 5 classes,
                               random weights, its top's hidden layer 64 wide instead of 1024)
                               with its top.
    mobilenet_v3_small_notop.h5
                               the same weights without the top (`include_top=False`,
                               `pooling="avg"`), saved by tf-keras.
    mobilenet_v3_small.json    on the same photo (RGB 0-255; the model rescales it itself): the
                               hidden layer's output after hard-swish (the features a head
                               reads), the logits, and the pooled features of the model without
                               its top.
    resnet_layers.json         for MobileNetV3Small and Large (with top; Large also without),
                               ResNet50, ResNet101 and ResNet152 (weights=None, with top): each
                               layer holding weights, its name and weight shapes, in order.
"""
import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE = os.path.join(ROOT, "crates/graft-model/tests/golden/vision/chelsea_32.png")


def randomize(model, seed, residual_gamma=(0.5, 1.5)):
    """Random values for every weight, BatchNorm statistics included (Keras starts them at
    gamma 1, beta 0, mean 0, variance 1, which would hide a swapped pair). The stem's kernel is
    scaled by 1/128, as caffe-mode inputs span about +-128, so that features stay near 1 and an
    absolute tolerance of 1e-5 means what it says; for the same reason the full ResNet50's
    residual branches and shortcuts end in BatchNorms of small gamma (`residual_gamma`), else
    16 random blocks grow its features to about 1e4."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for w in layer.weights:
            shape = tuple(w.shape)
            name = w.path if hasattr(w, "path") else w.name
            if "gamma" in name and layer.name.endswith(("_3_bn", "_0_bn")):
                v = rng.uniform(*residual_gamma, shape)
            elif "gamma" in name or "moving_variance" in name:
                v = rng.uniform(0.5, 1.5, shape)
            elif len(shape) == 1:
                v = rng.normal(0.0, 0.1, shape)
            else:
                fan_in = int(np.prod(shape[:-1]))
                v = rng.normal(0.0, (2.0 / fan_in) ** 0.5, shape)
                if layer.name == "conv1_conv":
                    v /= 128.0
            values.append(v.astype(np.float32))
        if values:
            layer.set_weights(values)


def tiny_resnet(resnet_module, builder_names, name_arg):
    stack = getattr(resnet_module, builder_names[1])
    def stack_fn(x):
        x = stack(x, 4, 2, stride1=1, name="conv2")
        x = stack(x, 8, 1, name="conv3")
        x = stack(x, 8, 1, name="conv4")
        return stack(x, 16, 1, name="conv5")
    builder = getattr(resnet_module, builder_names[0])
    return builder(stack_fn, False, True, weights=None, input_shape=(32, 32, 3), classes=5,
                   classifier_activation=None, **{name_arg: "resnet_tiny"})


def features_model(keras, model):
    pooled = keras.layers.GlobalAveragePooling2D()(model.get_layer("conv5_block1_out").output)
    return keras.Model(model.inputs, pooled)


def load_image(keras):
    return keras.utils.img_to_array(keras.utils.load_img(IMAGE))[None]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--golden")
    ap.add_argument("--full")
    ap.add_argument("--compare")
    args = ap.parse_args()
    if args.compare:
        return compare(args.compare)
    import keras
    from keras.src.applications import resnet as resnet3

    if args.full:
        return full(keras, args.full)
    out = args.golden
    os.makedirs(out, exist_ok=True)

    model = tiny_resnet(resnet3, ("ResNet", "stack_residual_blocks_v1"), "name")
    randomize(model, 0)
    image = load_image(keras)
    x = keras.applications.resnet.preprocess_input(image.copy())
    logits = np.asarray(model(x))
    feats = np.asarray(features_model(keras, model)(x))
    model.save(os.path.join(out, "resnet_tiny.keras"))
    model.save_weights(os.path.join(out, "resnet_tiny.weights.h5"))
    without_names(os.path.join(out, "resnet_tiny.keras"),
                  os.path.join(out, "resnet_tiny_keras35.keras"))

    import tf_keras
    from tf_keras.src.applications import resnet as resnet2
    legacy = tiny_resnet(resnet2, ("ResNet", "stack1"), "model_name")
    for layer in legacy.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    legacy.save(os.path.join(out, "resnet_tiny.h5"), save_format="h5")
    legacy.save_weights(os.path.join(out, "resnet_tiny_weights_tf_dim_ordering_tf_kernels.h5"))
    legacy_logits = legacy.predict(x, verbose=0)
    legacy_feats = features_model(tf_keras, legacy).predict(x, verbose=0)
    diff = float(max(np.abs(legacy_logits - logits).max(), np.abs(legacy_feats - feats).max()))
    print("keras 3 against tf-keras:", diff)
    golden = {
        "image": "vision/chelsea_32.png",
        "input_rgb_255_nhwc": image.reshape(-1).tolist(),
        "preprocessed_bgr_nhwc": x.reshape(-1).tolist(),
        "shape_nhwc": list(x.shape),
        "features": feats.reshape(-1).tolist(),
        "logits": logits.reshape(-1).tolist(),
        "tf_keras_features": legacy_feats.reshape(-1).tolist(),
        "tf_keras_logits": legacy_logits.reshape(-1).tolist(),
        "keras3_vs_tf_keras_max_abs_diff": diff,
    }
    with open(os.path.join(out, "resnet_tiny.json"), "w") as f:
        json.dump(golden, f)

    mobilenet_goldens(keras, out, image)

    layers = {}
    for name, fn in [("mobilenet_v3_small", keras.applications.MobileNetV3Small),
                     ("mobilenet_v3_large", keras.applications.MobileNetV3Large),
                     ("mobilenet_v3_large_notop",
                      lambda weights: keras.applications.MobileNetV3Large(
                          weights=weights, include_top=False)),
                     ("resnet50", keras.applications.ResNet50),
                     ("resnet101", keras.applications.ResNet101),
                     ("resnet152", keras.applications.ResNet152)]:
        m = fn(weights=None)
        layers[name] = [
            {"name": l.name, "shapes": [list(w.shape) for w in l.weights]}
            for l in m.layers if l.weights
        ]
    with open(os.path.join(out, "resnet_layers.json"), "w") as f:
        json.dump(layers, f)


def without_names(src, dst):
    """The archive as Keras 3.0 to 3.5 wrote it: their `saving_lib` recorded no `name`
    attribute on a layer's `vars` group (checked in the 3.0.5, 3.3.3 and 3.5.0 wheels; 3.6.0
    added it), so a layer is known by its automatic key (`conv2d_3`) and the config's order."""
    import h5py
    import zipfile
    with zipfile.ZipFile(src) as z:
        files = {name: z.read(name) for name in z.namelist()}
    scratch = tempfile.mkdtemp()
    weights = os.path.join(scratch, "model.weights.h5")
    with open(weights, "wb") as f:
        f.write(files["model.weights.h5"])
    with h5py.File(weights, "r+") as f:
        def strip(_, obj):
            if "name" in obj.attrs:
                del obj.attrs["name"]
        f.visititems(strip)
    with open(weights, "rb") as f:
        files["model.weights.h5"] = f.read()
    meta = json.loads(files["metadata.json"])
    meta["keras_version"] = "3.5.0"
    files["metadata.json"] = json.dumps(meta).encode()
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)


def keras3_name(name):
    """Keras 3's name of a Keras 2 MobileNetV3 layer (Keras 2: `Conv/BatchNorm`,
    `expanded_conv_1/expand`, ...; other models' names are the same in both)."""
    return (name.replace("/BatchNorm", "_bn").replace("Conv", "conv")
            .replace("Logits", "logits").replace("/", "_"))


def narrow_top(module, width):
    """Has `module.MobileNetV3Small` build its top's hidden layer `width` wide (Keras: 1024),
    the one change to Keras' own model, so the golden files stay small."""
    build = module.MobileNetV3

    def narrow(stack_fn, last_point_ch, *args, **kwargs):
        return build(stack_fn, width, *args, **kwargs)
    module.MobileNetV3 = narrow


def mobilenet_goldens(keras, out, image):
    """Keras 3's MobileNetV3Small (alpha 0.35 and a 64-wide hidden layer in its top, so the
    files stay small) with its top as `.keras`, and the same weights without the top saved by
    tf-keras as `.h5`."""
    from keras.src.applications import mobilenet_v3
    narrow_top(mobilenet_v3, 64)
    model = mobilenet_v3.MobileNetV3Small(
        alpha=0.35, weights=None, input_shape=(32, 32, 3), classes=5,
        classifier_activation=None)
    randomize(model, 2)
    logits = np.asarray(model(image))
    after_hidden = model.layers[[l.name for l in model.layers].index("conv_2") + 1]
    hidden = np.asarray(keras.Model(model.inputs, after_hidden.output)(image)).reshape(1, -1)
    model.save(os.path.join(out, "mobilenet_v3_small.keras"))

    import tf_keras
    legacy = tf_keras.applications.MobileNetV3Small(
        alpha=0.35, weights=None, input_shape=(32, 32, 3), include_top=False, pooling="avg")
    for layer in legacy.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(keras3_name(layer.name)).get_weights())
    legacy.save(os.path.join(out, "mobilenet_v3_small_notop.h5"), save_format="h5")
    pooled = legacy.predict(image, verbose=0)
    pooled3 = np.asarray(keras.Model(
        model.inputs,
        keras.layers.GlobalAveragePooling2D()(model.get_layer("conv_1_bn").output))(image))
    print("mobilenet features", float(np.abs(hidden).max()), "pooled", float(np.abs(pooled).max()))
    with open(os.path.join(out, "mobilenet_v3_small.json"), "w") as f:
        json.dump({
            "image": "vision/chelsea_32.png",
            "features": hidden.reshape(-1).tolist(),
            "logits": logits.reshape(-1).tolist(),
            "notop_features": pooled.reshape(-1).tolist(),
        }, f)
    del pooled3


def full(keras, out):
    """A random-weight ResNet50 in the three formats, a MobileNetV3Large in two, and their
    features of a 224 photo."""
    os.makedirs(out, exist_ok=True)
    model = keras.applications.ResNet50(weights=None, classifier_activation=None)
    randomize(model, 1, residual_gamma=(0.1, 0.3))
    from PIL import Image
    img = Image.open(os.path.join(ROOT, "crates/graft-model/tests/golden/vision/chelsea_224.png"))
    image = np.asarray(img.convert("RGB"), dtype=np.float32)[None]
    x = keras.applications.resnet.preprocess_input(image.copy())
    logits = np.asarray(model(x))
    pooled = keras.Model(model.inputs, model.get_layer("avg_pool").output)
    feats = np.asarray(pooled(x))
    model.save(os.path.join(out, "resnet50.keras"))
    model.save_weights(os.path.join(out, "resnet50.weights.h5"))
    import tf_keras
    legacy = tf_keras.applications.ResNet50(weights=None, classifier_activation=None)
    for layer in legacy.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    legacy.save(os.path.join(out, "resnet50.h5"), save_format="h5")
    print("largest feature:", float(np.abs(feats).max()))
    with open(os.path.join(out, "resnet50.json"), "w") as f:
        json.dump({"features": feats.reshape(-1).tolist(), "logits": logits.reshape(-1).tolist()}, f)

    # MobileNetV3Large as Keras builds it, with its top; the features a head reads are the
    # hidden layer's after hard-swish. The model rescales its 0-255 input itself.
    model = keras.applications.MobileNetV3Large(weights=None, classifier_activation=None)
    randomize(model, 3)
    after_hidden = model.layers[[l.name for l in model.layers].index("conv_2") + 1]
    feats = np.asarray(keras.Model(model.inputs, after_hidden.output)(image)).reshape(1, -1)
    print("largest MobileNetV3 feature:", float(np.abs(feats).max()))
    model.save(os.path.join(out, "mobilenet_v3_large.keras"))
    legacy = tf_keras.applications.MobileNetV3Large(weights=None, classifier_activation=None)
    for layer in legacy.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(keras3_name(layer.name)).get_weights())
    legacy.save(os.path.join(out, "mobilenet_v3_large.h5"), save_format="h5")
    with open(os.path.join(out, "mobilenet_v3_large.json"), "w") as f:
        json.dump({"features": feats.reshape(-1).tolist()}, f)
    print("wrote", out)


def compare(out):
    """Keras' features against graft's embeddings of the same photo, from each file."""
    for name in ["resnet50.keras", "resnet50.weights.h5", "resnet50.h5",
                 "mobilenet_v3_large.keras", "mobilenet_v3_large.h5"]:
        with open(os.path.join(out, name.split(".")[0] + ".json")) as f:
            want = np.array(json.load(f)["features"], dtype=np.float32)
        with open(os.path.join(out, name + ".emb.safetensors"), "rb") as f:
            raw = f.read()
        size = int.from_bytes(raw[:8], "little")
        entry = json.loads(raw[8:8 + size])["embeddings"]
        start, end = entry["data_offsets"]
        got = np.frombuffer(raw[8 + size + start:8 + size + end], dtype="<f4")
        print(f"{name}: max abs diff {np.abs(got - want).max():.3g} "
              f"(largest feature {np.abs(want).max():.3g})")


if __name__ == "__main__":
    sys.exit(main())
