#!/usr/bin/env python3
"""Check `graft convert`'s transformers folder of a Keras ResNet against Keras' own outputs.

Purpose: `graft convert resnet50.h5 OUT` writes transformers' `ResNetForImageClassification`
folder (stride on the 1x1 as `downsample_in_bottleneck`, conv biases folded into the BatchNorms,
caffe preprocessing in `preprocessor_config.json`). This loads it with transformers' Auto classes
as they are, runs the photo through the folder's processor and the model, and prints the largest
differences from the features and logits Keras computed (`make_keras_goldens.py --full DIR`
writes DIR/resnet50.json from golden/vision/chelsea_224.png).

    python scripts/golden/make_keras_goldens.py --full DIR        # the TensorFlow venv
    graft convert DIR/resnet50.h5 DIR/hf50
    python scripts/check/keras_transformers.py DIR/hf50 \
        crates/graft-model/tests/golden/vision/chelsea_224.png DIR/resnet50.json

Needs torch, transformers and Pillow (checked with torch 2.15, transformers 5.24).
"""
import json
import sys

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification


def main(folder, image, golden):
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    inputs = processor(images=Image.open(image).convert("RGB"), return_tensors="pt")
    with torch.no_grad():
        features = model.resnet(**inputs).pooler_output.flatten().numpy()
        logits = model(**inputs).logits.flatten().numpy()
    with open(golden) as f:
        want = json.load(f)
    print(f"features: max abs diff {np.abs(features - np.array(want['features'])).max():.3g}")
    print(f"logits: max abs diff {np.abs(logits - np.array(want['logits'])).max():.3g}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
