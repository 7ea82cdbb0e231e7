#!/usr/bin/env python3
r"""Check graft's vision exports end to end through the library's OWN preprocessing, on image
files that are not at the model's size (run by hand; needs torch, torchvision, transformers 5.x,
timm and Pillow).

Usage:
    python scripts/golden/check_vision_exports_at_size.py EXPORT:PREDICTIONS...

EXPORT is `graft export` of a run (typically one whose `[model] image_size` differs from its
model folder's), PREDICTIONS the JSONL `graft predict --model RUN --input CSV --column path`
wrote for the same run (one line per image, with the image's path in `input`: absolute, or
relative to where this script runs). Each image file is opened with Pillow and converted to RGB
(as the libraries' own examples do), then:

  - a timm export (`config.json` with `architecture`) is loaded as timm loads a local folder,
    `timm.create_model("local-dir:EXPORT", pretrained=True)` (strict loading; a ViT or DeiT export
    states `model_args.img_size` at the run's size, and timm resamples the checkpoint's position
    embeddings to it as it loads them), and the image goes through
    `timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))`, i.e. the
    export's `pretrained_cfg` (input size, crop_pct, crop_mode, interpolation, mean, std);
  - a transformers export (`preprocessor_config.json`) is loaded with
    `AutoModelForImageClassification.from_pretrained` (no missing or unexpected keys; ViT and DeiT
    called with `interpolate_pos_encoding=True`) and the image goes through
    `AutoImageProcessor.from_pretrained(EXPORT, backend=...)`, both the slow one (`"pil"`, or
    the deprecated `use_fast=False`) and the fast one (`"torchvision"`, `use_fast=True`).

For each export and each transform the largest absolute difference between the library's softmax
probabilities and graft's is printed, with the image where it is largest and the input size
transformers or timm produced. graft resizes with Pillow's arithmetic, so the slow processor and
timm's transform (both Pillow) should agree to float noise (~1e-6); the fast processor resizes
with torchvision's antialiased tensor kernels (pixels up to a few /255 apart from Pillow's), so its
difference measures how much that costs in probabilities, not a graft error.

A recipe, from the repository root, with `graft` the binary `cargo build --release --workspace`
builds; any small folder from crates/graft-model/tests/golden works, at an `image_size` (at least
32) other than its own. `run.toml`, in a scratch directory $TMP:

    [model]
    backbone = "crates/graft-model/tests/golden/vit/timm-vit"
    image_size = 64

    [data]
    format = "image_folder"
    train = "datasets/fashion-mnist-mini/train"
    valid_fraction = 0.2

    [freeze]
    backbone = true

    [train]
    epochs = 40
    lr = 0.5
    backend = "flex"

    [output]
    dir = "<TMP>/run"

then

    graft train $TMP/run.toml && graft export --model $TMP/run --out $TMP/export
    (echo path; ls $PWD/datasets/fashion-mnist-mini/test/*/*.png \
        $PWD/crates/graft-model/tests/golden/vision/chelsea.png \
        $PWD/crates/graft-model/tests/golden/vision/coffee.png) > $TMP/images.csv
    graft predict --model $TMP/run --input $TMP/images.csv --column path --output $TMP/run.jsonl
    python scripts/golden/check_vision_exports_at_size.py $TMP/export:$TMP/run.jsonl

(A high learning rate and many epochs give the random-weight folders' heads probabilities far
from uniform, so a preprocessing difference shows in them.)
"""
import json
import os
import sys

import timm
import timm.data
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification


def load_rows(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    assert rows, f"{path}: no predictions"
    return rows


def graft_probabilities(rows, labels):
    return torch.tensor([[row["probabilities"][label] for label in labels] for row in rows],
                        dtype=torch.float64)


def report(name, transform, ours, graft, rows, size):
    diff = (ours.double() - graft).abs()
    per_image = diff.max(dim=1).values
    worst = int(per_image.argmax())
    print(f"{name}: {transform:<22} input {size} max abs diff {diff.max().item():.2e} "
          f"(worst {os.path.basename(rows[worst]['input'])}; "
          f"graft's probabilities span {graft.min().item():.3f}..{graft.max().item():.3f})")
    return diff.max().item()


def check_timm(name, export, rows, images):
    config = json.load(open(os.path.join(export, "config.json")))
    architecture = config["architecture"]
    size = config["pretrained_cfg"]["input_size"][-1]
    # A ViT export states `model_args.img_size` at the run's size; timm resamples the
    # checkpoint's position embeddings to it as it loads them.
    grid = config.get("model_args", {}).get("img_size")
    if architecture.startswith(("vit", "deit")) and grid is not None:
        grid = grid if isinstance(grid, int) else grid[-1]
        assert grid == size, (name, "model_args.img_size", grid, "input_size", size)
    model = timm.create_model(f"local-dir:{export}", pretrained=True).eval()
    data_config = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**data_config)
    x = torch.stack([transform(image) for image in images])
    with torch.no_grad():
        ours = model(x).softmax(-1)
    labels = config["label_names"]
    return [report(name, f"timm {architecture}", ours, graft_probabilities(rows, labels), rows,
                   tuple(x.shape[-2:]))]


def check_transformers(name, export, rows, images):
    model, info = AutoModelForImageClassification.from_pretrained(export,
                                                                  output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k != "error_msgs"}
    assert not problems, (name, problems)
    model.eval()
    kind = type(model).__name__
    labels = [model.config.id2label[i] for i in range(len(model.config.id2label))]
    graft = graft_probabilities(rows, labels)
    extra = {"interpolate_pos_encoding": True} if kind.startswith(("ViT", "DeiT")) else {}
    diffs = []
    slow = None
    for backend in ("pil", "torchvision"):
        processor = AutoImageProcessor.from_pretrained(export, backend=backend)
        x = processor(images=images, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            ours = model(pixel_values=x, **extra).logits.softmax(-1)
        diffs.append(report(name, f"{type(processor).__name__}", ours, graft, rows,
                            tuple(x.shape[-2:])))
        if slow is None:
            slow = x
        else:
            # The fast processor's pixels against the slow one's, in 8-bit steps.
            std = torch.tensor(processor.image_std).view(1, -1, 1, 1)
            steps = ((x - slow) * std * 255).abs()
            print(f"{name}: {'':<22} fast - slow pixels: max {steps.max().item():.2f}/255, "
                  f"{(steps > 0.5).float().mean().item():.1%} of values differ")
    return diffs


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    torch.set_grad_enabled(False)
    for spec in sys.argv[1:]:
        export, predictions = spec.rsplit(":", 1)
        name = os.path.basename(os.path.normpath(export))
        rows = load_rows(predictions)
        images = [Image.open(row["input"]).convert("RGB") for row in rows]
        if os.path.exists(os.path.join(export, "preprocessor_config.json")):
            check_transformers(name, export, rows, images)
        else:
            check_timm(name, export, rows, images)


if __name__ == "__main__":
    main()
