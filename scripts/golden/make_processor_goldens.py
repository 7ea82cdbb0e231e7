#!/usr/bin/env python3
"""Golden pixel tensors from transformers' image processors, for graft's preprocessing.

Usage:
    python scripts/golden/make_processor_goldens.py OUT_JSON

Two cases on the bundled photo `crates/graft-model/tests/golden/vision/chelsea.png` (451x300):
  - identity: its 32x32 center, saved as `chelsea_32.png`, through ViTImageProcessor at 32x32
    (the resize is the identity), so graft must give the processor's tensor exactly;
  - resized: the whole photo through ViTImageProcessor (squash to 32, bilinear), BitImageProcessor
    (DINOv2's: shorter side 36, bicubic, center crop 32) and ConvNextImageProcessor (shorter side
    32 / 0.875, bicubic, center crop 32). graft resizes with the `image` crate's filters, not
    PIL's or torchvision's, so these differ slightly; the test states by how much.
Each case holds the processor's config (as `preprocessor_config.json` would), the image, and the
`pixel_values` [1, 3, 32, 32] the processor returns.
"""
import json
import os
import sys

import numpy as np
import transformers
from PIL import Image
from transformers import BitImageProcessor, ConvNextImageProcessor, ViTImageProcessor

HERE = "crates/graft-model/tests/golden/vision"


def main():
    out = sys.argv[1]
    photo = Image.open(os.path.join(HERE, "chelsea.png")).convert("RGB")
    w, h = photo.size
    photo.crop((w // 2 - 16, h // 2 - 16, w // 2 + 16, h // 2 + 16)).save(
        os.path.join(HERE, "chelsea_32.png"))
    processors = [
        ("identity", "chelsea_32.png", ViTImageProcessor(size={"height": 32, "width": 32})),
        ("vit", "chelsea.png", ViTImageProcessor(size={"height": 32, "width": 32})),
        ("dinov2", "chelsea.png", BitImageProcessor(size={"shortest_edge": 36},
                                                    crop_size={"height": 32, "width": 32})),
        ("convnext", "chelsea.png", ConvNextImageProcessor(size={"shortest_edge": 32},
                                                           crop_pct=0.875)),
    ]
    cases = []
    for name, image, processor in processors:
        pixels = processor(Image.open(os.path.join(HERE, image)).convert("RGB"),
                           return_tensors="np")["pixel_values"]
        config = json.loads(processor.to_json_string())
        cases.append({"name": name, "image": image, "config": config,
                      "pixel_values": [round(float(v), 7) for v in
                                       np.asarray(pixels, dtype=np.float32).reshape(-1)]})
    with open(out, "w") as f:
        json.dump({"cases": cases, "made_with": {"transformers": transformers.__version__}}, f)
        f.write("\n")


if __name__ == "__main__":
    main()
