#!/usr/bin/env python3
"""Check a transformers export of a run tuned from a Keras ResNet against graft's predictions.

Purpose: a Keras Applications ResNet strides in the first 1x1 convolution of its bottlenecks,
which only transformers' `ResNetForImageClassification` (`downsample_in_bottleneck=True`) can
express among PyTorch libraries, so graft exports such runs in that layout. This script loads
the export with transformers' Auto classes as they are, runs each image through the exported
`preprocessor_config.json` and the model, and prints the largest difference of its softmax
probabilities from `graft predict`'s on the same images.

    graft train CONFIG                         # [model] backbone = "resnet50.h5" (or .keras)
    graft export --model RUN --out EXPORT
    graft predict --model RUN --input IMAGES --output PREDICTIONS.jsonl
    python scripts/check/keras_export.py EXPORT PREDICTIONS.jsonl

Needs torch, transformers and Pillow (checked with torch 2.15, transformers 5.24).
"""
import json
import sys

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification


def main(export, predictions):
    processor = AutoImageProcessor.from_pretrained(export)
    model = AutoModelForImageClassification.from_pretrained(export).eval()
    worst = 0.0
    with open(predictions) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for row in rows:
        image = Image.open(row["input"]).convert("RGB")
        inputs = processor(images=image, return_tensors="pt")
        with torch.no_grad():
            probs = model(**inputs).logits.softmax(-1)[0].numpy()
        labels = [model.config.id2label[i] for i in range(len(probs))]
        graft = np.array([row["probabilities"][label] for label in labels])
        worst = max(worst, float(np.abs(probs - graft).max()))
        print(f"{row['input']}: transformers {labels[int(probs.argmax())]}, graft {row['label']}")
    print(f"{len(rows)} images: largest probability difference {worst:.3g}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
