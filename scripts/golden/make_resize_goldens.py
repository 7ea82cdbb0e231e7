#!/usr/bin/env python3
"""Golden resized images: what timm's eval transform (through PIL) gives graft's Preprocess to match.

Usage:
    python scripts/golden/make_resize_goldens.py OUT.json

For two photos of different aspect ratios (`crates/graft-model/tests/golden/vision/chelsea.png`,
451x300, and `coffee.png`, 600x400 cropped to 260x400 here, so that both orientations are covered)
and several (size, crop_pct, interpolation) settings, smaller and larger than a 224 px model's
input and than the images, and for two small cuts of them that every setting enlarges (48x32 and
24x60; the second one also shrinks its height, which Pillow 13 resamples first), writes the 8-bit RGB image timm's `create_transform` (eval) makes before
`ToTensor`: `Resize(floor(size / crop_pct))` on the shorter side, then `CenterCrop(size)`, or with
`crop_mode="squash"` the whole image resized to `floor(size / crop_pct)` square, then the crop. Pixels are stored base64-encoded, row-major RGB.
"""
import argparse
import base64
import json
import os

import PIL
import timm
import torchvision
from PIL import Image
from timm.data import create_transform

ROOT = os.path.join(os.path.dirname(__file__), "../..")
SETTINGS = [
    # size, crop_pct, interpolation, crop_mode
    (40, 0.875, "bicubic", "center"),
    (72, 0.875, "bicubic", "center"),
    (48, 0.9, "bilinear", "center"),
    (96, 1.0, "bicubic", "center"),
    (240, 0.875, "bicubic", "center"),
    (56, 1.0, "bicubic", "squash"),
    (48, 0.875, "bicubic", "squash"),
]
# Small cuts (no resampling in the cut), enlarged by every setting.
SMALL_SETTINGS = [
    (40, 0.875, "bicubic", "center"),
    (40, 1.0, "bicubic", "squash"),
    (72, 0.9, "bilinear", "center"),
    (96, 1.0, "bicubic", "squash"),
]


def images():
    vision = os.path.join(ROOT, "crates/graft-model/tests/golden/vision")
    chelsea = Image.open(os.path.join(vision, "chelsea.png")).convert("RGB")
    coffee = Image.open(os.path.join(vision, "coffee.png")).convert("RGB").crop((70, 0, 330, 400))
    return {
        "chelsea.png": (chelsea, SETTINGS),
        "coffee-260x400": (coffee, SETTINGS),
        "chelsea-48x32": (chelsea.crop((200, 100, 248, 132)), SMALL_SETTINGS),
        "coffee-24x60": (coffee.crop((100, 150, 124, 210)), SMALL_SETTINGS),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    args = parser.parse_args()
    cases = []
    for name, (image, settings) in images().items():
        for size, crop_pct, interpolation, crop_mode in settings:
            transform = create_transform(
                input_size=(3, size, size),
                crop_pct=crop_pct,
                crop_mode=crop_mode,
                interpolation=interpolation,
                is_training=False,
            )
            # Everything before ToTensor / Normalize: the PIL image the network's input is made of.
            steps = transform.transforms
            stop = next(i for i, t in enumerate(steps) if type(t).__name__ in ("ToTensor", "MaybeToTensor"))
            out = image
            for step in steps[:stop]:
                out = step(out)
            assert out.size == (size, size), out.size
            cases.append({
                "image": name,
                "size": size,
                "crop_pct": crop_pct,
                "interpolation": interpolation,
                "crop_mode": crop_mode,
                "transform": [repr(t) for t in steps[:stop]],
                "rgb": base64.b64encode(out.tobytes()).decode(),
            })
    with open(args.out, "w") as f:
        json.dump({
            "cases": cases,
            "made_with": {"timm": timm.__version__, "Pillow": PIL.__version__,
                          "torchvision": torchvision.__version__},
        }, f)
        f.write("\n")


if __name__ == "__main__":
    main()
