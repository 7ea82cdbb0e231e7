#!/usr/bin/env python3
"""Make small ConvNeXt folders (transformers and timm) and their golden outputs.

Usage:
    python scripts/golden/make_convnext_goldens.py OUT_DIR

Random-weight models (N(0, 0.3²), norms included, so every path matters at 1e-5) of ConvNeXt's
real layouts, scaled down to widths 8/16/24/32:
  - convnext:        transformers ConvNextForImageClassification (depths 1/1/2/1, layer scale),
                     3 labels, with ConvNextImageProcessor's config (shortest edge 32,
                     crop_pct 0.875);
  - timm-convnext:   timm convnext_atto (`conv_mlp`: the MLP as 1x1 convolutions), depths 1/1/2/1;
  - timm-convnext-t: timm convnext_tiny's layout (linear MLP), depths 1/1/1/1.
Inputs as in make_vit_goldens.py: pixel [b, c, y, x] of a batch of 2 at side S is
sin(0.37 * (((b * 3 + c) * S + y) * S + x)) * 1.5, at S = 32 and 64. For each: the pre-logits
features (pooled and normalized) and the logits.
"""
import json
import math
import os
import sys

import timm
import torch
import transformers
from timm.models._hub import save_for_hf
from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor

LABELS = ["cat", "dog", "fish"]


def pixels(side):
    n = 2 * 3 * side * side
    values = [math.sin(0.37 * i) * 1.5 for i in range(n)]
    return torch.tensor(values, dtype=torch.float32).reshape(2, 3, side, side)


def randomize(model):
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


def main():
    out = sys.argv[1]
    torch.set_num_threads(1)
    torch.manual_seed(60)
    dims = [8, 16, 24, 32]
    models = {}
    config = ConvNextConfig(hidden_sizes=dims, depths=[1, 1, 2, 1], num_labels=3,
                            image_size=32, id2label=dict(enumerate(LABELS)),
                            label2id={l: i for i, l in enumerate(LABELS)})
    hf = randomize(ConvNextForImageClassification(config))
    hf.save_pretrained(os.path.join(out, "convnext"), safe_serialization=True)
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(
        os.path.join(out, "convnext"))
    models["convnext"] = (lambda x: hf.convnext(pixel_values=x).pooler_output,
                          lambda x: hf(pixel_values=x).logits, "ConvNextForImageClassification")
    for name, arch, depths in [("timm-convnext", "convnext_atto", (1, 1, 2, 1)),
                               ("timm-convnext-t", "convnext_tiny", (1, 1, 1, 1))]:
        args = dict(dims=tuple(dims), depths=depths)
        model = randomize(timm.create_model(arch, pretrained=False, num_classes=3, **args))
        save_for_hf(model, os.path.join(out, name), model_args=args, safe_serialization=True)
        models[name] = (
            lambda x, m=model: m.forward_head(m.forward_features(x), pre_logits=True),
            lambda x, m=model: m(x), arch)
    for name, (features, logits, model) in models.items():
        cases = []
        for side in (32, 64):
            x = pixels(side)
            with torch.no_grad():
                cases.append({"side": side, "features": features(x).tolist(),
                              "logits": logits(x).tolist()})
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump({"folder": name, "model": model, "cases": cases,
                       "made_with": {"torch": torch.__version__,
                                     "transformers": transformers.__version__,
                                     "timm": timm.__version__}}, f)
            f.write("\n")


if __name__ == "__main__":
    main()
