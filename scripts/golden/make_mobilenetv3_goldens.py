#!/usr/bin/env python3
"""Make small MobileNetV3 folders (timm and torchvision) and their golden outputs.

Usage:
    python scripts/golden/make_mobilenetv3_goldens.py OUT_DIR   (crates/graft-model/tests/golden/mobilenet_v3)

Random-weight models of MobileNetV3's real layouts, narrowed (width 0.1, a 32-wide hidden layer)
and stored in float16 so the folders stay small; the outputs are computed with those float16
weights in float32. Weights N(0, 0.3²), BatchNorm running means N(0, 0.1²) and variances in
[0.5, 1.5], so the inference-mode BatchNorm matters:
  - timm-small:  timm mobilenetv3_small_100 (timm's folder layout: `config.json` with
                 `pretrained_cfg`);
  - tv-large:    torchvision mobilenet_v3_large, in graft's vision folder
                 (`"architecture": "mobilenet_v3"`, `"variant": "large"`).
Inputs as in make_vit_goldens.py (a batch of 2 at 32 and 64 px). For each: the features the
classifier reads (after the hidden layer and hard-swish) and the logits.
"""
import json
import math
import os
import sys

import timm
import torch
import torchvision
from safetensors.torch import save_file
from timm.models import mobilenetv3 as timm_mobilenetv3
from timm.models._hub import save_for_hf
from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf


def pixels(side):
    n = 2 * 3 * side * side
    values = [math.sin(0.37 * i) * 1.5 for i in range(n)]
    return torch.tensor(values, dtype=torch.float32).reshape(2, 3, side, side)


def randomize(model):
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        # What the float16 files hold, exactly.
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().float())
    return model.eval()


def half(state):
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}


def torchvision_model(variant):
    setting, _ = _mobilenet_v3_conf(f"mobilenet_v3_{variant}", width_mult=0.1)
    model = MobileNetV3(setting, 32, num_classes=3)
    return randomize(model)


def main():
    out = sys.argv[1]
    torch.set_num_threads(1)
    torch.manual_seed(70)
    models = {}
    timm_model = timm_mobilenetv3._gen_mobilenet_v3("mobilenetv3_small_100", 0.1,
                                                    pretrained=False, num_classes=3)
    timm_model.conv_head = torch.nn.Conv2d(timm_model.conv_head.in_channels, 32, 1)
    timm_model.classifier = torch.nn.Linear(32, 3)
    timm_model.num_features = timm_model.head_hidden_size = 32
    timm_model = randomize(timm_model)
    save_for_hf(timm_model, os.path.join(out, "timm-small"), safe_serialization=True)
    save_file(half(timm_model.state_dict()), os.path.join(out, "timm-small", "model.safetensors"))
    models["timm-small"] = (
        timm_model,
        lambda x: timm_model.forward_head(timm_model.forward_features(x), pre_logits=True))
    for variant in ["large"]:
        model = torchvision_model(variant)
        folder = os.path.join(out, f"tv-{variant}")
        os.makedirs(folder, exist_ok=True)
        save_file(half(model.state_dict()), os.path.join(folder, "model.safetensors"))
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump({"architecture": "mobilenet_v3", "variant": variant, "num_classes": 3,
                       "image_size": 32, "resize": "squash",
                       "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}, f, indent=1)
        models[f"tv-{variant}"] = (
            model, lambda x, m=model: m.classifier[:2](torch.flatten(m.avgpool(m.features(x)), 1)))
    for name, (model, features) in models.items():
        cases = []
        for side in (32, 64):
            x = pixels(side)
            with torch.no_grad():
                cases.append({"side": side, "features": features(x).tolist(),
                              "logits": model(x).tolist()})
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump({"folder": name, "cases": cases,
                       "made_with": {"torch": torch.__version__, "timm": timm.__version__,
                                     "torchvision": torchvision.__version__}}, f)
            f.write("\n")


if __name__ == "__main__":
    main()
