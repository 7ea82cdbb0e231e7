#!/usr/bin/env python3
"""Load an image folder graft wrote (`graft export` of an image run, timm or torchvision, or
`graft convert` of a Keras EfficientNet) with its library as it is, and compare its outputs with
graft's or Keras'.

Purpose: graft exports runs tuned from Keras' EfficientNets as timm's `tf_efficientnet_bN`, and
`graft convert` writes a Keras EfficientNetB0-B7 built at a fixed size as that same folder. This
script builds the folder's `architecture` with `timm.create_model(..., num_classes=N,
**model_args)`, loads `model.safetensors` with `strict=True` (no missing or unexpected keys),
preprocesses images with the transform timm derives from the folder's `pretrained_cfg`
(`resolve_data_config` + `create_transform`), and prints the largest difference. A torchvision
export (`export.json` with `"layout": "torchvision"`) is built with `torchvision.models.NAME(
num_classes=N)`, loaded with `strict=True`, and fed images resized and normalized as
`export.json` says (torchvision's `Resize`, `CenterCrop`, `Normalize`):

    # an export: softmax probabilities against `graft predict`'s on the same images
    graft export --model RUN --out EXPORT
    graft predict --model RUN --input IMAGES --output PREDICTIONS.jsonl
    python scripts/check/vision_folder.py EXPORT --predictions PREDICTIONS.jsonl

    # a converted Keras model: pooled features (`forward_head(pre_logits=True)`) of an image
    # against Keras' own (a JSON with "features", as `make_keras_goldens.py --full` writes)
    graft convert efficientnet_b0.keras CONVERTED
    python scripts/check/vision_folder.py CONVERTED --features KERAS.json --image PHOTO.png

Needs torch, timm, torchvision, safetensors and Pillow (checked with torch 2.15, timm 1.0.31,
torchvision 0.29.2).
"""
import argparse
import json
import os

import numpy as np
import timm
import torch
from PIL import Image
from safetensors.torch import load_file
from timm.data import create_transform, resolve_data_config


def load_torchvision(folder, export):
    from torchvision import models, transforms
    labels = export["labels"]
    name = export["model"].split("(")[0].removeprefix("torchvision.models.")
    model = getattr(models, name)(num_classes=len(labels))
    model.load_state_dict(load_file(os.path.join(folder, "model.safetensors")), strict=True)
    size = export["image_size"]
    interpolation = transforms.InterpolationMode(export["interpolation"])
    resize = export["resize_shorter"] or size
    steps = [transforms.Resize(resize if export["resize_shorter"] and not export[
        "squash_before_crop"] else (resize, resize), interpolation=interpolation)]
    steps += [transforms.CenterCrop(size), transforms.ToTensor(),
              transforms.Normalize(export["mean"], export["std"])]
    return model.eval(), transforms.Compose(steps), {"architecture": name, "label_names": labels}


def load(folder):
    export_json = os.path.join(folder, "export.json")
    if os.path.exists(export_json):
        export = json.load(open(export_json))
        if export["layout"] == "torchvision":
            return load_torchvision(folder, export)
    config = json.load(open(os.path.join(folder, "config.json")))
    model = timm.create_model(
        config["architecture"],
        num_classes=config["num_classes"],
        pretrained_cfg_overlay=config["pretrained_cfg"],
        **config.get("model_args", {}),
    )
    model.load_state_dict(load_file(os.path.join(folder, "model.safetensors")), strict=True)
    model.eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    return model, transform, config


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--predictions")
    ap.add_argument("--features")
    ap.add_argument("--image")
    args = ap.parse_args()
    model, transform, config = load(args.folder)
    print(f"{config['architecture']}: loaded with strict=True; {transform}")
    if args.predictions:
        labels = config["label_names"]
        worst = 0.0
        rows = [json.loads(line) for line in open(args.predictions) if line.strip()]
        for row in rows:
            x = transform(Image.open(row["input"]).convert("RGB"))[None]
            with torch.no_grad():
                probs = model(x).softmax(-1)[0].numpy()
            graft = np.array([row["probabilities"][label] for label in labels])
            worst = max(worst, float(np.abs(probs - graft).max()))
        print(f"{len(rows)} images: largest probability difference {worst:.3g}")
    if args.features:
        want = np.array(json.load(open(args.features))["features"], dtype=np.float32)
        x = transform(Image.open(args.image).convert("RGB"))[None]
        with torch.no_grad():
            got = model.forward_head(model.forward_features(x), pre_logits=True)[0].numpy()
        print(f"features: largest difference {np.abs(got - want).max():.3g} "
              f"(largest feature {np.abs(want).max():.3g})")


if __name__ == "__main__":
    main()
