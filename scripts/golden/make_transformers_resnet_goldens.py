#!/usr/bin/env python3
"""Make a transformers ResNet folder (random weights) and its outputs, for graft's tests.

Purpose: graft reads transformers' ResNet folders (`model_type` "resnet": microsoft/resnet-50
and the folders `graft convert` writes from Keras ResNets). This saves a small
`ResNetForImageClassification` (four stages of one bottleneck, hidden sizes 16-64, 3 classes)
with random weights and BatchNorm statistics, in the v1.5 layout (stride on the 3x3, as
microsoft/resnet-50) and with `downsample_in_bottleneck` (stride on the 1x1), with a
`ViTImageProcessor` config, and the pooled features and logits of golden/vision/chelsea_32.png
through that processor.

    python scripts/golden/make_transformers_resnet_goldens.py \
        --golden crates/graft-model/tests/golden/transformers_resnet

Versions: torch 2.15, transformers 5.24, Pillow, Python 3.11, CPU, float32.
"""
import argparse
import json
import os

import torch
from PIL import Image
from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--golden", required=True)
    args = ap.parse_args()
    image = Image.open(os.path.join(
        ROOT, "crates/graft-model/tests/golden/vision/chelsea_32.png")).convert("RGB")
    outputs = {}
    for name, in_bottleneck in [("v1_5", False), ("stride_in_1x1", True)]:
        torch.manual_seed(0)
        config = ResNetConfig(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 32, 64],
                              layer_type="bottleneck", downsample_in_bottleneck=in_bottleneck,
                              num_labels=3)
        model = ResNetForImageClassification(config).eval()
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.normal_(0, 0.1)
                    module.running_mean.normal_(0, 0.1)
                    module.running_var.uniform_(0.5, 1.5)
        processor = ViTImageProcessor(size={"height": 32, "width": 32})
        out = os.path.join(args.golden, name)
        model.save_pretrained(out)
        processor.save_pretrained(out)
        inputs = processor(images=image, return_tensors="pt")
        with torch.no_grad():
            features = model.resnet(**inputs).pooler_output.flatten()
            logits = model(**inputs).logits.flatten()
        outputs[name] = {"features": features.tolist(), "logits": logits.tolist()}
    with open(os.path.join(args.golden, "outputs.json"), "w") as f:
        json.dump(outputs, f)


if __name__ == "__main__":
    main()
