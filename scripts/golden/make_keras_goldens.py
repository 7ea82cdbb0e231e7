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

EfficientNet: Keras' own builder (`keras.src.applications.efficientnet.EfficientNet`, the code
behind `keras.applications.EfficientNetB0` to B7) with B0's blocks (depth 1.0: 16 blocks in
stages of 1, 2, 2, 3, 3, 4, 1, squeeze-excitation, swish) at width 0.25 (channels 8 to 80,
320 at the top; about 340k weights), 32x32 input. The model preprocesses its 0-255 input
itself: Rescaling(1/255), Normalization (weights mean, variance, count), and, only when built
with `weights="imagenet"`, a third step x * 1/sqrt(stddev) per channel (Keras 3 a second
`Rescaling`, tf-keras a `tf.math.multiply` op layer; TF issue 49930), as Keras' ImageNet files
hold the Normalization variance [0.229, 0.224, 0.225], the standard deviations themselves.
Such models are built here with the download and the loading made no-ops (`imagenet_layout`),
then given random weights and the ImageNet mean and "variance". A weights-only file does not
record the padding of the `*_pad` layers, which Keras computes from the input size the model is
built for (`imagenet_utils.correct_pad`: (k//2 - 1, k//2) on an even or unknown size,
(k//2, k//2) on an odd one; here and at 224 all are the former).

From the repo root (TF_PY is a Python with tensorflow-cpu 2.21.0, whose `tf.keras` is Keras 3,
and tf-keras 2.21.0, the legacy Keras 2, importable as `tf_keras`):

    TF_PY scripts/golden/make_keras_goldens.py --golden crates/graft-model/tests/golden/keras
    # Only the EfficientNet files, the others left as they are (a `.keras` file is never
    # byte-identical from one run to the next: it holds the time it was saved):
    TF_PY scripts/golden/make_keras_goldens.py --golden crates/graft-model/tests/golden/keras \
        --only efficientnet    # or --only mobilenet
    # The same check on a full random-weight ResNet50, MobileNetV3Large and EfficientNetB0
    # (files too large to commit): write them to DIR (ResNet50 in the three formats,
    # MobileNetV3Large and EfficientNetB0 as .keras and Keras 2 .h5; EfficientNetB0 as built for
    # ImageNet weights, without top, average-pooled) with Keras' features of
    # golden/vision/chelsea_224.png, embed the photo with graft from each file, and print the
    # largest differences:
    TF_PY scripts/golden/make_keras_goldens.py --full DIR   # --only efficientnet: B0 only
    mkdir DIR/img && cp crates/graft-model/tests/golden/vision/chelsea_224.png DIR/img/
    for f in resnet50.keras resnet50.weights.h5 resnet50.h5 mobilenet_v3_large.keras \
        mobilenet_v3_large.h5 efficientnet_b0.keras efficientnet_b0.h5; do
        graft embed --model DIR/$f --input DIR/img --output DIR/$f.emb.safetensors; done
    TF_PY scripts/golden/make_keras_goldens.py --compare DIR

Versions used for the committed files (the EfficientNet ones included): TensorFlow 2.21.0
(tensorflow-cpu), Keras 3.15.1, tf-keras 2.21.0, h5py 3.14.0, numpy 2.4.6, Pillow 13.0.0,
Python 3.11, CPU, float32.

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
                               `pooling="avg"`, no input size, as Keras builds MobileNetV3 by
                               default), saved by tf-keras.
    mobilenet_v3_small.json    on the same photo (RGB 0-255; the model rescales it itself): the
                               hidden layer's output after hard-swish (the features a head
                               reads), the logits, and the pooled features of the model without
                               its top; and those of `odd_input_nhwc`, a random 40x40 image of
                               integers 0-255 (odd sizes inside), `odd_notop_features`.
    resnet_layers.json         for MobileNetV3Small and Large (with top; Large also without),
                               ResNet50, ResNet101 and ResNet152 (weights=None, with top): each
                               layer holding weights, its name and weight shapes, in order.
    efficientnet_b0_notop.keras
                               model.save() by Keras 3 of the narrow EfficientNet-B0 as built
                               for ImageNet weights (the second Rescaling, `rescaling_1`),
                               without top, `pooling="avg"`, for any input size (input_shape
                               None, so `correct_pad` pads stride-2 layers k//2 - 1 before and
                               k//2 after at every size), Normalization mean
                               [0.485, 0.456, 0.406] and variance [0.229, 0.224, 0.225].
    efficientnet_b0_notop_weights.h5
                               model.save_weights() by tf-keras of the same model and weights
                               (its third step the weightless `tf.math.multiply`): the layout of
                               Keras Applications' published `efficientnetb0_notop.h5`.
    efficientnet_b0.h5         model.save() by tf-keras of the narrow EfficientNet-B0 built with
                               weights=None (no third step), with a 5-class softmax top, other
                               random weights, Normalization mean in U(0.3, 0.6) and variance in
                               U(0.03, 0.09) per channel.
    efficientnet_b0.json       on the same photo (RGB 0-255, NHWC; the models preprocess it
                               themselves): `notop_features` (Keras 3, .keras), `features`
                               (tf-keras, efficientnet_b0.h5's `avg_pool` output), `logits`
                               (features @ `predictions` kernel + bias, before the softmax),
                               `weights_features` (tf-keras, the weights-only file),
                               `odd_notop_features` (Keras 3, .keras) of `odd_input_nhwc`, a
                               random 40x40 image of integers 0-255 (odd sizes inside), the
                               Normalization mean and variance of efficientnet_b0.h5, and the
                               largest difference of Keras 3 and tf-keras on the same weights.
                               Each file loaded back by Keras reproduces them to 1e-6.
    efficientnet_layers.json   for EfficientNetB0 (with top) and EfficientNetB3 (without),
                               weights=None, as resnet_layers.json.
"""
import argparse
import contextlib
import json
import os
import sys
import tempfile
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE = os.path.join(ROOT, "crates/graft-model/tests/golden/vision/chelsea_32.png")
FULL_IMAGE = os.path.join(ROOT, "crates/graft-model/tests/golden/vision/chelsea_224.png")


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


def load_image(keras, path=None):
    return keras.utils.img_to_array(keras.utils.load_img(path or IMAGE))[None]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--golden")
    ap.add_argument("--full")
    ap.add_argument("--compare")
    ap.add_argument("--only", choices=["efficientnet", "mobilenet"],
                    help="with --golden: write only these files, leave the others as they are")
    args = ap.parse_args()
    if args.compare:
        return compare(args.compare)
    import keras
    from keras.src.applications import resnet as resnet3

    if args.full and args.only == "efficientnet":
        os.makedirs(args.full, exist_ok=True)
        return full_efficientnet(keras, args.full, load_image(keras, FULL_IMAGE))
    if args.full:
        return full(keras, args.full)
    out = args.golden
    os.makedirs(out, exist_ok=True)
    if args.only == "efficientnet":
        efficientnet_goldens(keras, out, load_image(keras))
        return efficientnet_layers(keras, out)
    if args.only == "mobilenet":
        return mobilenet_goldens(keras, out, load_image(keras))

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

    # Last, as it starts Keras' sessions afresh (so its automatic layer names are a new
    # process's): the files above are as they were without it.
    efficientnet_goldens(keras, out, image)
    efficientnet_layers(keras, out)


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
    # Without an input size, as Keras builds MobileNetV3 by default: its stride-2 depthwise
    # convolutions then pad k//2 - 1 before and k//2 after at every size (`correct_pad`), which
    # differs from TensorFlow's "same" on odd sizes, as at 40x40 (block 3 sees 5x5).
    legacy = tf_keras.applications.MobileNetV3Small(
        alpha=0.35, weights=None, include_top=False, pooling="avg")
    for layer in legacy.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(keras3_name(layer.name)).get_weights())
    legacy.save(os.path.join(out, "mobilenet_v3_small_notop.h5"), save_format="h5")
    pooled = legacy.predict(image, verbose=0)
    odd_input = np.random.default_rng(8).integers(0, 256, (1, 40, 40, 3)).astype(np.float32)
    odd_pooled = legacy.predict(odd_input, verbose=0)
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
            "odd_input_nhwc": odd_input.astype(np.int64).reshape(-1).tolist(),
            "odd_shape_nhwc": list(odd_input.shape),
            "odd_notop_features": odd_pooled.reshape(-1).tolist(),
        }, f)
    del pooled3


# EfficientNet: Keras' own builder (`keras.src.applications.efficientnet.EfficientNet`, the code
# behind `keras.applications.EfficientNetB0`), B0's blocks narrowed by EFFNET_WIDTH.
EFFNET_WIDTH = 0.25
IMAGENET_MEAN_RGB = [0.485, 0.456, 0.406]
IMAGENET_STDDEV_RGB = [0.229, 0.224, 0.225]


def efficientnet(module, legacy, width=EFFNET_WIDTH, **kwargs):
    """B0's structure (depth 1.0) at `width`, from Keras 3's builder or (`legacy`) tf-keras'."""
    names = ({"model_name": "efficientnetb0"} if legacy
             else {"name": "efficientnetb0", "weights_name": "b0"})
    return module.EfficientNet(width, 1.0, 224, **names, **kwargs)


@contextlib.contextmanager
def imagenet_layout(module, legacy):
    """Lets Keras' builder take `weights="imagenet"` with no download and no weights loaded, for
    the layers it adds only then: a third preprocessing step after Rescaling(1/255) and
    Normalization, x * (1/sqrt(stddev)) per channel (TF issue 49930; Keras 3 a `Rescaling`
    layer, tf-keras a `tf.math.multiply` op layer). Keras' ImageNet weight files hold the
    Normalization mean IMAGENET_MEAN_RGB and variance IMAGENET_STDDEV_RGB (the standard
    deviations themselves, not squared): (x - mean) / sqrt(std) / sqrt(std) = (x - mean) / std."""
    utils_name = "data_utils" if legacy else "file_utils"
    utils = getattr(module, utils_name)
    model_class = module.training.Model if legacy else module.Functional
    before = model_class.__dict__.get("load_weights")
    setattr(module, utils_name, types.SimpleNamespace(get_file=lambda *a, **k: None))
    model_class.load_weights = lambda self, *a, **k: None
    try:
        yield
    finally:
        setattr(module, utils_name, utils)
        if before is None:
            del model_class.load_weights
        else:
            model_class.load_weights = before


def randomize_efficientnet(model, seed, gain=1.2):
    """Random values for every weight but the Normalization's (`set_normalization`): kernels
    normal with std gain/sqrt(fan_in) (a depthwise kernel's fan-in is k*k), biases N(0, 0.1^2),
    BatchNorm gamma and moving variance U(0.5, 1.5), beta and moving mean N(0, 0.1^2). With
    gain 1.2 the activations stay about 1 through B0's 16 blocks, narrow or full; with gain
    sqrt(2) the full B0's grow block by block (to 14 at the top), with 2 the narrow one's to
    2e5."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "Normalization" or not layer.weights:
            continue
        values = []
        for w in layer.weights:
            shape = tuple(w.shape)
            name = w.path if hasattr(w, "path") else w.name
            if "gamma" in name or "moving_variance" in name:
                v = rng.uniform(0.5, 1.5, shape)
            elif len(shape) == 1:
                v = rng.normal(0.0, 0.1, shape)
            else:
                depthwise = type(layer).__name__ == "DepthwiseConv2D"
                fan_in = shape[0] * shape[1] if depthwise else int(np.prod(shape[:-1]))
                v = rng.normal(0.0, gain / fan_in ** 0.5, shape)
            values.append(v.astype(np.float32))
        layer.set_weights(values)


def set_normalization(model, mean, variance):
    """The Normalization layer's mean and variance (its count stays 0). Keras 3 computes with
    copies made by `finalize_state`, which `set_weights` does not call (loading does)."""
    [layer] = [l for l in model.layers if type(l).__name__ == "Normalization"]
    count = layer.get_weights()[2]
    layer.set_weights([np.asarray(mean, np.float32), np.asarray(variance, np.float32), count])
    layer.finalize_state()


def copy_weights(model, legacy):
    """Keras 3's weights into the tf-keras model of the same layer names."""
    for layer in legacy.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())


def efficientnet_goldens(keras, out, image):
    """The narrow EfficientNet-B0 in Keras 3's `.keras` and Keras 2's two HDF5 layouts, and its
    outputs on the 32x32 photo (RGB 0-255; the model rescales and normalizes it itself)."""
    import tf_keras
    from keras.src.applications import efficientnet as module3
    from tf_keras.src.applications import efficientnet as module2
    shape = {"input_shape": tuple(image.shape[1:])}
    # Without its top Keras builds the model for any input size (input_shape None): its
    # stride-2 layers then pad k//2 - 1 before and k//2 after whatever the size (`correct_pad`),
    # which differs from TensorFlow's "same" on odd sizes, as at 40x40 (block4a sees 5x5).
    notop = {"include_top": False, "pooling": "avg"}

    # The layout of Keras' ImageNet models (what `EfficientNetB0(weights="imagenet",
    # include_top=False, pooling="avg")` builds), random weights, ImageNet normalization.
    keras.backend.clear_session()
    with imagenet_layout(module3, legacy=False):
        model = efficientnet(module3, False, weights="imagenet", **notop)
    randomize_efficientnet(model, 4)
    set_normalization(model, IMAGENET_MEAN_RGB, IMAGENET_STDDEV_RGB)
    notop_feats = np.asarray(model(image))
    odd_input = np.random.default_rng(7).integers(0, 256, (1, 40, 40, 3)).astype(np.float32)
    odd_feats = np.asarray(model(odd_input))
    model.save(os.path.join(out, "efficientnet_b0_notop.keras"))

    tf_keras.backend.clear_session()
    with imagenet_layout(module2, legacy=True):
        legacy = efficientnet(module2, True, weights="imagenet", **notop)
    copy_weights(model, legacy)
    weights_feats = legacy.predict(image, verbose=0)
    legacy.save_weights(os.path.join(out, "efficientnet_b0_notop_weights.h5"))
    diffs = [np.abs(weights_feats - notop_feats).max()]

    # Built with weights=None (no third preprocessing step), with a 5-class top, and a
    # Normalization of random statistics, so they are read from the file.
    keras.backend.clear_session()
    model = efficientnet(module3, False, weights=None, classes=5, **shape)
    randomize_efficientnet(model, 5)
    rng = np.random.default_rng(6)
    mean, variance = rng.uniform(0.3, 0.6, 3), rng.uniform(0.03, 0.09, 3)
    set_normalization(model, mean, variance)
    feats3 = np.asarray(keras.Model(model.inputs, model.get_layer("avg_pool").output)(image))

    tf_keras.backend.clear_session()
    legacy = efficientnet(module2, True, weights=None, classes=5, **shape)
    copy_weights(model, legacy)
    legacy.save(os.path.join(out, "efficientnet_b0.h5"), save_format="h5")
    feats = tf_keras.Model(legacy.inputs, legacy.get_layer("avg_pool").output).predict(
        image, verbose=0)
    kernel, bias = legacy.get_layer("predictions").get_weights()
    logits = feats @ kernel + bias
    probs = legacy.predict(image, verbose=0)
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert np.abs(probs - softmax).max() < 1e-6, "the top is not softmax(features @ W + b)"
    kernel3, bias3 = model.get_layer("predictions").get_weights()
    diffs += [np.abs(feats - feats3).max(), np.abs(logits - (feats3 @ kernel3 + bias3)).max()]
    diff = float(max(diffs))
    print("efficientnet: notop features", float(np.abs(notop_feats).max()), "features",
          float(np.abs(feats).max()), "logits", float(np.abs(logits).max()),
          "keras 3 against tf-keras", diff)
    golden = {
        "image": "vision/chelsea_32.png",
        "shape_nhwc": list(image.shape),
        "width_coefficient": EFFNET_WIDTH,
        "notop_features": notop_feats.reshape(-1).tolist(),
        "features": feats.reshape(-1).tolist(),
        "logits": logits.reshape(-1).tolist(),
        "weights_features": weights_feats.reshape(-1).tolist(),
        "odd_input_nhwc": odd_input.astype(np.int64).reshape(-1).tolist(),
        "odd_shape_nhwc": list(odd_input.shape),
        "odd_notop_features": odd_feats.reshape(-1).tolist(),
        "normalization_mean": np.float32(mean).tolist(),
        "normalization_variance": np.float32(variance).tolist(),
        "max_diff_keras3_vs_tf_keras": diff,
    }
    with open(os.path.join(out, "efficientnet_b0.json"), "w") as f:
        json.dump(golden, f)
    check_efficientnet(keras, out, image, golden)


def check_efficientnet(keras, out, image, golden, tol=1e-6):
    """Each file loaded back by Keras reproduces the goldens: the `.keras` by Keras 3, the
    whole-model `.h5` by tf-keras, the weights-only `.h5` by tf-keras and by Keras 3 (as
    `EfficientNetB0(weights="imagenet")` loads Keras' published files) into the model it came
    from."""
    import tf_keras
    from keras.src.applications import efficientnet as module3
    from tf_keras.src.applications import efficientnet as module2
    notop = {"include_top": False, "pooling": "avg"}
    weights = os.path.join(out, "efficientnet_b0_notop_weights.h5")
    got = {}
    keras.backend.clear_session()
    loaded = keras.saving.load_model(os.path.join(out, "efficientnet_b0_notop.keras"))
    got["notop_features"] = np.asarray(loaded(image))
    odd = np.asarray(golden["odd_input_nhwc"], np.float32).reshape(golden["odd_shape_nhwc"])
    got["odd_notop_features"] = np.asarray(loaded(odd))
    with imagenet_layout(module3, legacy=False):
        model = efficientnet(module3, False, weights="imagenet", **notop)
    model.load_weights(weights)
    got["weights_features (keras 3)"] = np.asarray(model(image))
    tf_keras.backend.clear_session()
    legacy = tf_keras.models.load_model(os.path.join(out, "efficientnet_b0.h5"))
    got["features"] = tf_keras.Model(
        legacy.inputs, legacy.get_layer("avg_pool").output).predict(image, verbose=0)
    kernel, bias = legacy.get_layer("predictions").get_weights()
    got["logits"] = got["features"] @ kernel + bias
    with imagenet_layout(module2, legacy=True):
        legacy = efficientnet(module2, True, weights="imagenet", **notop)
    legacy.load_weights(weights)
    got["weights_features"] = legacy.predict(image, verbose=0)
    for key, value in got.items():
        want = np.asarray(golden[key.split(" ")[0]], np.float32)
        diff = float(np.abs(value.reshape(-1) - want).max())
        print(f"  {key} loaded back: max abs diff {diff:.3g}")
        assert diff <= tol, key


def efficientnet_layers(keras, out):
    """Keras 3's full EfficientNetB0 (with its 1000-class top) and EfficientNetB3 without top:
    each layer holding weights, its name and weight shapes, in order."""
    layers = {}
    for name, fn in [("efficientnetb0", keras.applications.EfficientNetB0),
                     ("efficientnetb3_notop",
                      lambda weights: keras.applications.EfficientNetB3(
                          weights=weights, include_top=False))]:
        keras.backend.clear_session()
        m = fn(weights=None)
        layers[name] = [
            {"name": l.name, "shapes": [list(w.shape) for w in l.weights]}
            for l in m.layers if l.weights
        ]
    with open(os.path.join(out, "efficientnet_layers.json"), "w") as f:
        json.dump(layers, f)


def full(keras, out):
    """A random-weight ResNet50 in the three formats, a MobileNetV3Large and an
    EfficientNetB0 in two, and their features of a 224 photo."""
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
    full_efficientnet(keras, out, image)


def full_efficientnet(keras, out, image):
    """EfficientNetB0 as Keras builds it for its ImageNet weights (Keras has no ImageNet model
    with another top than 1000 classes): without top, average-pooled, the third preprocessing
    step, ImageNet normalization, built at 224x224. The model rescales its 0-255 input itself."""
    import tf_keras
    from keras.src.applications import efficientnet as module3
    from tf_keras.src.applications import efficientnet as module2
    notop = {"include_top": False, "pooling": "avg", "input_shape": (224, 224, 3)}
    keras.backend.clear_session()
    with imagenet_layout(module3, legacy=False):
        model = module3.EfficientNetB0(weights="imagenet", **notop)
    randomize_efficientnet(model, 7)
    set_normalization(model, IMAGENET_MEAN_RGB, IMAGENET_STDDEV_RGB)
    feats = np.asarray(model(image))
    model.save(os.path.join(out, "efficientnet_b0.keras"))
    tf_keras.backend.clear_session()
    with imagenet_layout(module2, legacy=True):
        legacy = module2.EfficientNetB0(weights="imagenet", **notop)
    copy_weights(model, legacy)
    legacy.save(os.path.join(out, "efficientnet_b0.h5"), save_format="h5")
    diff = float(np.abs(legacy.predict(image, verbose=0) - feats).max())
    print("largest EfficientNetB0 feature:", float(np.abs(feats).max()),
          "keras 3 against tf-keras:", diff)
    with open(os.path.join(out, "efficientnet_b0.json"), "w") as f:
        json.dump({"features": feats.reshape(-1).tolist()}, f)
    print("wrote", out)


def compare(out):
    """Keras' features against graft's embeddings of the same photo, from each file."""
    for name in ["resnet50.keras", "resnet50.weights.h5", "resnet50.h5",
                 "mobilenet_v3_large.keras", "mobilenet_v3_large.h5",
                 "efficientnet_b0.keras", "efficientnet_b0.h5"]:
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
