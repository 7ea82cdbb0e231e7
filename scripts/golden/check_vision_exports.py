#!/usr/bin/env python3
"""Check graft's vision-transformer and ConvNeXt exports in transformers and timm (run by hand;
needs torch, transformers, timm and Pillow).

Usage:
    python scripts/golden/check_vit_exports.py DIR NAME:SIDE...

For each NAME, DIR holds `NAME-export/` (`graft export` of a run whose images are squashed to
SIDE, so images already SIDE x SIDE are not resized) and `NAME-run.jsonl` (`graft predict` of
the run on DIR/imagesSIDE.csv). A transformers export is loaded with
`AutoModelForImageClassification.from_pretrained` (no missing or unexpected keys); a timm export
with `timm.create_model(architecture, num_classes=N, **model_args)` and `load_state_dict(...,
strict=True)`. The images are scaled to [0, 1] and normalized with the export's mean and std,
and the largest difference between the library's softmax probabilities and graft's is printed.
"""
import csv
import json
import os
import sys

import numpy as np
import timm
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification


def main():
    root = sys.argv[1]
    for spec in sys.argv[2:]:
        name, side = spec.split(":")
        export = os.path.join(root, f"{name}-export")
        labels = json.load(open(os.path.join(export, "labels.json")))
        if os.path.exists(os.path.join(export, "preprocessor_config.json")):
            model, info = AutoModelForImageClassification.from_pretrained(
                export, output_loading_info=True)
            problems = {k: v for k, v in info.items() if v and k != "error_msgs"}
            assert not problems, (name, problems)
            processor = json.load(open(os.path.join(export, "preprocessor_config.json")))
            mean, std = processor["image_mean"], processor["image_std"]
            run = lambda x: model(pixel_values=x, interpolate_pos_encoding=True).logits \
                if "ViT" in type(model).__name__ or "DeiT" in type(model).__name__ \
                else model(pixel_values=x).logits
            kind = type(model).__name__
        else:
            config = json.load(open(os.path.join(export, "config.json")))
            args = dict(config.get("model_args", {}))
            args.pop("num_classes", None)
            if config["architecture"].startswith(("vit", "deit")):
                args["dynamic_img_size"] = True  # the run's size may differ from the grid
            model = timm.create_model(config["architecture"], pretrained=False,
                                      num_classes=len(labels), **args)
            model.load_state_dict(load_file(os.path.join(export, "model.safetensors")),
                                  strict=True)
            mean, std = config["pretrained_cfg"]["mean"], config["pretrained_cfg"]["std"]
            run = model
            kind = config["architecture"]
        model.eval()
        with open(os.path.join(root, f"images{side}.csv"), newline="") as f:
            paths = [row["path"] for row in csv.DictReader(f)]
        x = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0
                      for p in paths])
        x = (x - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
        x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        with torch.no_grad():
            ours = run(x).softmax(-1)
        graft = torch.tensor([[json.loads(line)["probabilities"][l] for l in labels]
                              for line in open(os.path.join(root, f"{name}-run.jsonl"))])
        print(f"{name}: {kind} max abs diff {(ours - graft).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
