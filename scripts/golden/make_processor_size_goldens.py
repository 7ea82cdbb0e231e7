#!/usr/bin/env python3
"""Golden inputs from transformers' image processors at input sizes other than the folder's.

Usage:
    python scripts/golden/make_processor_size_goldens.py OUT_JSON

Needs transformers (5.x: the PIL and the torchvision backends), torch, torchvision and Pillow.
The golden in the repository is `crates/graft-model/tests/golden/vision/processor_sizes.json`,
read by `crates/graft-model/tests/processor_sizes.rs`.

For each `preprocessor_config.json` layout that graft's vision families read (vit.rs: ViT, DeiT,
DINOv2, CLIP; convnext.rs: ConvNeXt), the default config of a representative Hub model, written
out below as the Hub has it (no network here):
  - vit:      google/vit-base-patch16-224 (`ViTFeatureExtractor`, `size` 224: a 224x224 squash,
              bilinear, mean/std 0.5);
  - deit:     facebook/deit-small-patch16-224 (`DeiTFeatureExtractor`, `size` 256 and `crop_size`
              224: a 256x256 squash, then a 224 center crop);
  - dinov2:   facebook/dinov2-small (`BitImageProcessor`, `shortest_edge` 256, crop 224);
  - clip:     openai/clip-vit-base-patch32 (`CLIPFeatureExtractor`, `size` 224 as the shorter side,
              crop 224);
  - convnext: facebook/convnext-tiny-224 (`ConvNextFeatureExtractor`, `size` 224 as the shorter
              side, `crop_pct` 0.875: shorter side to 256, then a 224 crop; microsoft/resnet-50's
              config is the same);
  - convnext-shortest-edge: the same as `ConvNextImageProcessor.save_pretrained` writes it now
              (`size` {"shortest_edge": 224}), as in facebook/convnextv2-tiny-1k-224;
at sizes S below (64, 96) and above (240; ConvNeXt also 384, where its processor stops cropping)
the folder's 224, on two photos (`chelsea.png`, 451x300, wider than tall, and `coffee.png`
cropped to 260x400 at x=70, taller than wide, as in `make_resize_goldens.py`): every size on both
photos, but for ViT's, DeiT's and CLIP's 240 and ConvNeXt's 384, on one each (`SIZES`), which
keeps the file near 1.3 MB.

At size S a transformers user gets the config graft's export writes for the run's transform
(`processor_config` in crates/graft-train/src/export/transformers.rs, mirrored by
`export_config` here): `ViTImageProcessor` squashing to S, `BitImageProcessor` with the shorter
side at floor(S / crop_pct) and an S center crop (crop_pct as the folder states it: crop / size,
ConvNeXt's `crop_pct`; ConvNeXt from 384 on squashes), or for DeiT's layout `DeiTImageProcessor`
squashing to floor(S / crop_pct) square before the S crop. Each case records the folder's config, that
at-size config, the size transformers resizes to before the crop and where the crop starts, and
what the at-size config gives through `AutoImageProcessor` with `backend="pil"` (the slow processor,
`use_fast=False`) and `backend="torchvision"` (the fast one, `use_fast=True`). The script checks
that the folder's own processor class, sized to S the same way (`own_config`), gives the very same
pixels, so the export's config is the one a user of the folder's processor would write.

`LEFT_OUT` names layouts graft cannot follow yet (none now); `left_out` would record by how much
graft's reading differs from the folder's processor, at 224 and at each S.

Both processors produce 8-bit images before `pixel_values = (x / 255 - mean) / std` (PIL resizes
8-bit images; torchvision's antialiased resize keeps uint8), so the cases store those images,
losslessly: the slow one as a base64 PNG (`images`, shared where two cases give the same pixels,
as DINOv2's and ConvNeXt's do below 384), the fast one as a PNG of fast - slow + 128 per channel.
The script asserts that the stored bytes give back each processor's `pixel_values` to 1e-5 and
records the largest error as `reconstruction_error`.
"""
import argparse
import base64
import hashlib
import io
import json
import math
import os
import tempfile

import numpy as np
import PIL
import torch
import torchvision
import transformers
from PIL import Image
from transformers import AutoImageProcessor
from transformers.image_transforms import get_resize_output_image_size
from transformers.image_utils import ChannelDimension

ROOT = os.path.join(os.path.dirname(__file__), "../..")
VISION = os.path.join(ROOT, "crates/graft-model/tests/golden/vision")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# The folders' preprocessor_config.json, as on the Hub.
FOLDERS = {
    "vit": ("google/vit-base-patch16-224", {
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "ViTFeatureExtractor",
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "resample": 2,
        "size": 224,
    }),
    "deit": ("facebook/deit-small-patch16-224", {
        "crop_size": 224,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "DeiTFeatureExtractor",
        "image_mean": IMAGENET_MEAN,
        "image_std": IMAGENET_STD,
        "resample": 3,
        "size": 256,
    }),
    "dinov2": ("facebook/dinov2-small", {
        "crop_size": {"height": 224, "width": 224},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": IMAGENET_MEAN,
        "image_processor_type": "BitImageProcessor",
        "image_std": IMAGENET_STD,
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": 256},
    }),
    "clip": ("openai/clip-vit-base-patch32", {
        "crop_size": 224,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "resample": 3,
        "size": 224,
    }),
    "convnext": ("facebook/convnext-tiny-224", {
        "crop_pct": 0.875,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "ConvNextFeatureExtractor",
        "image_mean": IMAGENET_MEAN,
        "image_std": IMAGENET_STD,
        "resample": 3,
        "size": 224,
    }),
    "convnext-shortest-edge": ("facebook/convnextv2-tiny-1k-224", {
        "crop_pct": 0.875,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": IMAGENET_MEAN,
        "image_processor_type": "ConvNextImageProcessor",
        "image_std": IMAGENET_STD,
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": 224},
    }),
}
FOLDER_SIZE = 224
BOTH = ("chelsea.png", "coffee-260x400")
# (size, photos) per layout. Every layout below and above 224; the larger sizes, whose images
# weigh most, on both photos for the crop DINOv2 and ConvNeXt share and on one each otherwise.
SIZES = {
    "vit": [(64, BOTH), (96, BOTH), (240, ("chelsea.png",))],
    "deit": [(64, BOTH), (96, BOTH), (240, ("coffee-260x400",))],
    "dinov2": [(64, BOTH), (96, BOTH), (240, BOTH)],
    "clip": [(64, BOTH), (96, BOTH), (240, ("coffee-260x400",))],
    "convnext": [(64, BOTH), (96, BOTH), (240, BOTH), (384, ("chelsea.png",))],
    "convnext-shortest-edge": [(64, BOTH), (96, BOTH), (240, BOTH), (384, ("chelsea.png",))],
}
# Layouts graft cannot follow yet, and why (none now).
LEFT_OUT = {}


def photos():
    chelsea = Image.open(os.path.join(VISION, "chelsea.png")).convert("RGB")
    coffee = Image.open(os.path.join(VISION, "coffee.png")).convert("RGB").crop((70, 0, 330, 400))
    return {"chelsea.png": chelsea, "coffee-260x400": coffee}


def f32(values):
    """The values as graft's export writes them: f32, printed as f64."""
    return [float(np.float32(v)) for v in values]


def graft_transform(name, size):
    """graft's transform of the folder at `size`, by its rule (`processor_transform`, `at_size`):
    (image_size, resized side or None for a squash, resample, mean, std, whether the whole image
    is squashed to that side before the crop)."""
    _, cfg = FOLDERS[name]
    crop = cfg.get("crop_size")
    crop = crop["height"] if isinstance(crop, dict) else crop
    shortest = cfg["size"]["shortest_edge"] if isinstance(cfg["size"], dict) else cfg["size"]
    if name.startswith("convnext"):
        crop_pct = cfg["crop_pct"] if size < 384 else None
    elif crop is not None:
        crop_pct = crop / shortest
    else:
        crop_pct = None
    shorter = math.floor(size / crop_pct) if crop_pct is not None else None
    # A square `size` followed by a crop squashes first (DeiT's processor); an integer `size` is a
    # shorter side for CLIP's, BiT's and ConvNeXt's processors.
    kind = cfg.get("image_processor_type") or cfg.get("feature_extractor_type") or ""
    integer_is_shorter = "crop_pct" in cfg or kind.startswith(("CLIP", "Bit", "ConvNext"))
    size_is_square = (isinstance(cfg["size"], dict) and "height" in cfg["size"]) or (
        isinstance(cfg["size"], int) and not integer_is_shorter)
    squash = size_is_square and crop is not None
    return size, shorter, cfg["resample"], cfg["image_mean"], cfg["image_std"], squash


def export_config(size, shorter, resample, mean, std, squash):
    """`processor_config` of crates/graft-train/src/export/transformers.rs."""
    square = {"height": size, "width": size}
    if shorter is None:
        processor, resize = "ViTImageProcessor", square
    elif squash:
        processor, resize = "DeiTImageProcessor", {"height": shorter, "width": shorter}
    else:
        processor, resize = "BitImageProcessor", {"shortest_edge": shorter}
    config = {
        "image_processor_type": processor,
        "do_resize": True,
        "size": resize,
        "resample": resample,
        "do_rescale": True,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": True,
        "image_mean": f32(mean),
        "image_std": f32(std),
        "do_center_crop": shorter is not None,
    }
    if shorter is not None:
        config["crop_size"] = square
    return config


def own_config(name, size):
    """The folder's own processor config, sized to `size` as graft sizes it."""
    _, cfg = FOLDERS[name]
    cfg = dict(cfg)
    _, shorter, _, _, _, _ = graft_transform(name, size)
    if name == "vit":
        cfg["size"] = {"height": size, "width": size}
    elif name.startswith("convnext"):
        cfg["size"] = {"shortest_edge": size}  # the processor applies crop_pct itself
    elif name == "deit":
        cfg["size"] = {"height": shorter, "width": shorter}
        cfg["crop_size"] = {"height": size, "width": size}
    else:
        cfg["size"] = {"shortest_edge": shorter}
        cfg["crop_size"] = {"height": size, "width": size}
    return cfg


def run(config, image, backend):
    """The processor `config` loads as, on `image`: (its class name, pixel_values [3, S, S])."""
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
            json.dump(config, f)
        processor = AutoImageProcessor.from_pretrained(folder, backend=backend)
    pixels = processor(image, return_tensors="pt")["pixel_values"][0]
    return type(processor).__name__, pixels.numpy().astype(np.float64)


def to_u8(pixels, mean, std):
    """The 8-bit HWC image behind `pixel_values`, and how far the bytes are from giving it back."""
    mean = np.asarray(mean, dtype=np.float64)[:, None, None]
    std = np.asarray(std, dtype=np.float64)[:, None, None]
    levels = np.round((pixels * std + mean) * 255.0)
    assert levels.min() >= 0 and levels.max() <= 255
    back = (levels / 255.0 - mean) / std
    error = float(np.abs(back - pixels).max())
    assert error < 1e-5, error
    return levels.astype(np.uint8).transpose(1, 2, 0), error


def png(array):
    out = io.BytesIO()
    Image.fromarray(array).save(out, "PNG", optimize=True)
    return base64.b64encode(out.getvalue()).decode()


def resized_and_crop(image, size, shorter, squash):
    """The (height, width) transformers resizes the shorter side to `shorter` at (or squashes the
    image to), and where its `center_crop` to `size` starts (top, left); None for a squash without
    a crop."""
    if shorter is None:
        return None, None
    if squash:
        return [shorter, shorter], [int((shorter - size) / 2.0)] * 2
    hwc = np.asarray(image)
    height, width = get_resize_output_image_size(
        hwc, size=shorter, default_to_square=False, input_data_format=ChannelDimension.LAST)
    return [height, width], [int((height - size) / 2.0), int((width - size) / 2.0)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    args = parser.parse_args()
    images, cases, left_out = {}, [], []
    for name, (model, folder) in FOLDERS.items():
        for size, names in SIZES[name]:
            transform = graft_transform(name, size)
            shorter, squash = transform[1], transform[5]
            at_size = export_config(*transform)
            own = own_config(name, size)
            for photo in names:
                image = photos()[photo]
                slow_class, slow = run(at_size, image, "pil")
                fast_class, fast = run(at_size, image, "torchvision")
                assert slow.shape == fast.shape == (3, size, size), slow.shape
                slow_u8, slow_error = to_u8(slow, at_size["image_mean"], at_size["image_std"])
                fast_u8, fast_error = to_u8(fast, at_size["image_mean"], at_size["image_std"])
                own_diffs = {}
                for backend, ours in (("pil", slow_u8), ("torchvision", fast_u8)):
                    _, theirs = run(own, image, backend)
                    theirs, _ = to_u8(theirs, folder["image_mean"], folder["image_std"])
                    own_diffs[backend] = int(np.abs(theirs.astype(int) - ours.astype(int)).max())
                if name in LEFT_OUT:
                    left_out.append({"layout": name, "size": size, "photo": photo,
                                     "own_vs_export_max_diff_255": own_diffs})
                    continue
                assert own_diffs == {"pil": 0, "torchvision": 0}, (name, size, photo, own_diffs)
                delta = (fast_u8.astype(int) - slow_u8.astype(int) + 128).astype(np.uint8)
                slow_key, delta_key = (hashlib.sha256(a.tobytes()).hexdigest()[:12]
                                       for a in (slow_u8, delta))
                images[slow_key], images[delta_key] = png(slow_u8), png(delta)
                resized, crop = resized_and_crop(image, size, shorter, squash)
                cases.append({
                    "layout": name,
                    "photo": photo,
                    "size": size,
                    "at_size_config": at_size,
                    "own_config": own,
                    "processors": {"slow": slow_class, "fast": fast_class},
                    "resized_hw": resized,
                    "crop_top_left": crop,
                    "slow": slow_key,
                    "fast_minus_slow": delta_key,
                    "slow_vs_fast_max_diff_255": int(np.abs(delta.astype(int) - 128).max()),
                    "reconstruction_error": max(slow_error, fast_error),
                })
        if name in LEFT_OUT:
            # At the folder's own size too: the folder's processor against graft's reading of it.
            graft = export_config(*graft_transform(name, FOLDER_SIZE))
            for photo, image in photos().items():
                _, theirs = run(folder, image, "pil")
                _, ours = run(graft, image, "pil")
                theirs, _ = to_u8(theirs, folder["image_mean"], folder["image_std"])
                ours, _ = to_u8(ours, graft["image_mean"], graft["image_std"])
                left_out.append({"layout": name, "size": FOLDER_SIZE, "photo": photo,
                                 "own_vs_export_max_diff_255": {
                                     "pil": int(np.abs(theirs.astype(int) - ours.astype(int)).max())}})
    out = {
        "folder_size": FOLDER_SIZE,
        "folders": {name: {"model": model, "config": config}
                    for name, (model, config) in FOLDERS.items() if name not in LEFT_OUT},
        "cases": cases,
        "images": images,
        "left_out": {"reason": LEFT_OUT, "measured": left_out,
                     "folders": {name: {"model": FOLDERS[name][0], "config": FOLDERS[name][1]}
                                 for name in LEFT_OUT}},
        "made_with": {"transformers": transformers.__version__, "Pillow": PIL.__version__,
                      "torch": torch.__version__, "torchvision": torchvision.__version__},
    }
    with open(args.out, "w") as f:
        json.dump(out, f)
        f.write("\n")
    for case in cases:
        print(f"{case['layout']} {case['photo']} {case['size']}: {case['processors']}, "
              f"slow vs fast {case['slow_vs_fast_max_diff_255']}/255")
    for entry in left_out:
        print(f"left out: {entry}")
    print(f"{len(cases)} cases, {len(images)} images, {os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
