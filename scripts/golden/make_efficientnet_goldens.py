#!/usr/bin/env python3
"""Make small EfficientNet (B0-B7) folders (timm and torchvision) and their golden outputs.

Usage:
    python scripts/golden/make_efficientnet_goldens.py OUT_DIR   (crates/graft-model/tests/golden/efficientnet)

Random-weight models of EfficientNet's real layouts (the B-series depths, squeeze-excitation,
swish), narrowed so the folders stay small (channel multiplier 0.08 or 0.1; the stem keeps its
real 32 channels, as timm's `fix_stem` does, so that stage 0 opens, as in the real models, with a
block whose input and output widths differ and so has no residual) and stored in float16; the
outputs are computed with those float16 weights in float32. Convolution and linear weights
N(0, 2/fan_in), biases N(0, 0.1²), BatchNorm scales in [0.25, 0.6] and shifts N(0, 0.2²). The
BatchNorm running statistics are set layer by layer from the golden inputs themselves (variance
floored at 0.1), then the means shifted by N(0, 0.2²) standard deviations and the variances scaled
by [0.5, 1.5]: the inference-mode BatchNorm matters (it is not the batch's), the activations stay
O(1) through every block, and the network is neither contracting (features that ignore the input)
nor chaotic (float32 and float64 outputs agree to about 1e-6, so another float32 implementation
can match to 1e-5):
  - timm-b1:     timm efficientnet_b1 (depth multiplier 1.1: stage 0 holds two depthwise-separable
                 blocks, the second with a residual; 23 blocks), channel multiplier 0.08, 3
                 classes (timm's folder layout: `config.json` with `pretrained_cfg`);
  - timm-tf-b0:  timm tf_efficientnet_b0 (TF "same" padding, BatchNorm eps 1e-3; 16 blocks),
                 channel multiplier 0.1, no classifier (`num_classes` 0: no logits);
  - tv-b2:       torchvision efficientnet_b2's layout (depth multiplier 1.2; 23 blocks), width
                 multiplier 0.08, 4 classes, in graft's vision folder
                 (`"architecture": "efficientnet"`, `"variant": "b2"`).
Inputs as in make_vit_goldens.py (a batch of 2 at 32 and 64 px). For each: the features the
classifier reads (after the head convolution, BatchNorm and swish, average-pooled) and the logits.
Each folder is then rebuilt from what was written and must give the same outputs.
Made with torch 2.15.0, timm 1.0.31, torchvision 0.29.2.
"""
import json
import math
import os
import sys

import timm
import torch
import torchvision
from safetensors.torch import load_file, save_file
from timm.models import efficientnet as timm_efficientnet
from timm.models._efficientnet_builder import BN_EPS_TF_DEFAULT
from timm.models._hub import save_for_hf
from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf


def pixels(side):
    n = 2 * 3 * side * side
    values = [math.sin(0.37 * i) * 1.5 for i in range(n)]
    return torch.tensor(values, dtype=torch.float32).reshape(2, 3, side, side)


def randomize(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.normal_(0.0, math.sqrt(2.0 / m.weight[0].numel()))
                if m.bias is not None:
                    m.bias.normal_(0.0, 0.1)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.25, 0.6)
                m.bias.normal_(0.0, 0.2)
        # What the float16 files hold, exactly.
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().float())
        model.eval()
        # Running statistics, in forward order: those of each BatchNorm's input on the golden
        # batches (the layers before it already set), shifted and scaled at random.
        for bn in [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]:
            seen = []
            hook = bn.register_forward_pre_hook(
                lambda _, args: seen.append(args[0].transpose(0, 1).flatten(1)))
            for side in (32, 64):
                model(pixels(side))
            hook.remove()
            x = torch.cat(seen, 1)
            mean, var = x.mean(1), x.var(1).clamp(min=0.1)
            bn.running_mean.copy_((mean + torch.randn_like(mean) * 0.2 * var.sqrt()).half())
            bn.running_var.copy_((var * torch.empty_like(var).uniform_(0.5, 1.5)).half())
    return model


def half(state):
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}


# The narrowed builds; each is called again to rebuild the model from its folder.
def timm_b1():
    return timm_efficientnet._gen_efficientnet(
        "efficientnet_b1", channel_multiplier=0.08, depth_multiplier=1.1, fix_stem=True,
        pretrained=False, num_classes=3)


def timm_tf_b0():
    # The keyword arguments timm's tf_efficientnet_b0 passes.
    return timm_efficientnet._gen_efficientnet(
        "tf_efficientnet_b0", channel_multiplier=0.1, depth_multiplier=1.0, fix_stem=True,
        pretrained=False, num_classes=0, bn_eps=BN_EPS_TF_DEFAULT, pad_type="same")


def tv_b2():
    setting, last_channel = _efficientnet_conf("efficientnet_b2", width_mult=0.08, depth_mult=1.2)
    setting[0].input_channels = 32  # the stem's real width
    return EfficientNet(setting, 0.3, num_classes=4, last_channel=last_channel)


def timm_features(model):
    return lambda x: model.forward_head(model.forward_features(x), pre_logits=True)


def tv_features(model):
    return lambda x: torch.flatten(model.avgpool(model.features(x)), 1)


def outputs(model, features, has_logits):
    cases = []
    for side in (32, 64):
        x = pixels(side)
        with torch.no_grad():
            cases.append({"side": side, "features": features(x).tolist(),
                          "logits": model(x).tolist() if has_logits else None})
    return cases


def main():
    out = sys.argv[1]
    torch.set_num_threads(1)
    torch.manual_seed(71)
    models = {}
    for name, build in [("timm-b1", timm_b1), ("timm-tf-b0", timm_tf_b0)]:
        model = randomize(build())
        folder = os.path.join(out, name)
        save_for_hf(model, folder, safe_serialization=True)
        save_file(half(model.state_dict()), os.path.join(folder, "model.safetensors"))
        models[name] = (model, build, timm_features, model.num_classes > 0)
    model = randomize(tv_b2())
    folder = os.path.join(out, "tv-b2")
    os.makedirs(folder, exist_ok=True)
    save_file(half(model.state_dict()), os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"architecture": "efficientnet", "variant": "b2", "num_classes": 4,
                   "image_size": 32, "resize": "squash",
                   "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}, f, indent=1)
    models["tv-b2"] = (model, tv_b2, tv_features, True)
    for name, (model, build, features, has_logits) in models.items():
        cases = outputs(model, features(model), has_logits)
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump({"folder": name, "cases": cases,
                       "made_with": {"torch": torch.__version__, "timm": timm.__version__,
                                     "torchvision": torchvision.__version__}}, f)
            f.write("\n")
        # Rebuilt from the folder's float16 weights, the model gives the same outputs.
        reloaded = build()
        state = load_file(os.path.join(out, name, "model.safetensors"))
        reloaded.load_state_dict({k: v.float() if v.is_floating_point() else v
                                  for k, v in state.items()})
        reloaded.eval()
        again = outputs(reloaded, features(reloaded), has_logits)
        for case, check in zip(cases, again):
            for key in ("features", "logits"):
                if case[key] is None:
                    assert check[key] is None, (name, key)
                    continue
                want, got = torch.tensor(case[key]), torch.tensor(check[key])
                diff = (want - got).abs().max().item()
                assert diff <= 1e-6, (name, case["side"], key, diff)
        # How far float64 lands from float32: what another float32 implementation may differ by.
        wide = reloaded.double()
        for case in cases:
            rows = torch.tensor(case["features"])
            with torch.no_grad():
                exact = features(wide)(pixels(case["side"]).double())
            print(f"{name} side {case['side']}: features max abs {rows.abs().max().item():.3g}, "
                  f"between images {(rows[0] - rows[1]).abs().max().item():.3g}, "
                  f"float64 differs by {(rows.double() - exact).abs().max().item():.1e}"
                  + (f", logits max abs {torch.tensor(case['logits']).abs().max().item():.3g}"
                     if case["logits"] is not None else ", no logits"))


if __name__ == "__main__":
    main()
