#!/usr/bin/env python3
"""Make small vision-transformer folders (transformers and timm) and their golden outputs.

Usage:
    python scripts/golden/make_vit_goldens.py OUT_DIR

No weights of these families can be fetched here, so each folder is a random-weight model
(N(0, 0.3²), so every path matters at 1e-5) of the family's real layout, scaled down (hidden 32,
4 heads, one or two blocks, 8x8 or 4x4 patches):
  - vit:          transformers ViTForImageClassification, 32x32 input, 3 labels, with the
                  image processor's config (squash to 32, mean/std 0.5);
  - deit:         transformers DeiTForImageClassification (class and distillation tokens);
  - dinov2:       transformers Dinov2ForImageClassification, trained grid 9x9 (36 px, patch 4):
                  layer scale, the classifier on [CLS, mean of patches]; run at 36 and at 16 px
                  (position embeddings resampled: bicubic);
  - dinov2-reg:   transformers Dinov2WithRegistersForImageClassification, 2 registers, at 36 and
                  16 px (antialiased bicubic);
  - timm-vit:     timm vit_small_patch16_224 (token pooling), 3 classes;
  - timm-vit-avg: the same with global_pool "avg" (fc_norm, no final norm);
  - timm-deit:    timm deit_tiny_distilled_patch16_224: pre-logits are the mean of the class and
                  distillation tokens;
  - timm-dinov2-reg: timm vit_small_patch14_reg4_dinov2 (layer scale, 4 registers, positions only
                  on patches) at 36 and at 16 px (antialiased bicubic, `dynamic_img_size`);
  - clip:         transformers CLIPVisionModelWithProjection (`clip_vision_model`: pre-norm, quick
                  GELU, no patch bias, `post_layernorm` on the class token, projection to 16) at
                  32 and 48 px;
  - clip-full:    a whole CLIPModel (`clip`, a small text tower beside), of which graft reads the
                  vision tower and `visual_projection`.
Inputs are deterministic, so the test rebuilds them: pixel [b, c, y, x] of a batch of 2 at side S
is sin(0.37 * (((b * 3 + c) * S + y) * S + x)) * 1.5. For each size: the pre-logits features (what
the classifier reads) and, where the model has one classifier, the logits; CLIP: the pooled output
as features and the projected image embedding as `embedding`.

With names after OUT_DIR, only those folders are made.
"""
import json
import math
import os
import sys

import timm
import torch
import transformers
from timm.models._hub import save_for_hf
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    DeiTConfig,
    DeiTForImageClassification,
    Dinov2Config,
    Dinov2ForImageClassification,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersForImageClassification,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
)

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


def transformers_model(name, out):
    common = dict(hidden_size=32, num_attention_heads=4, num_labels=3,
                  id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)})
    if name == "vit":
        config = ViTConfig(num_hidden_layers=2, intermediate_size=64, image_size=32, patch_size=8,
                           **common)
        sizes, cls = [32, 48], ViTForImageClassification
    elif name == "deit":
        config = DeiTConfig(num_hidden_layers=1, intermediate_size=64, image_size=32, patch_size=8,
                            **common)
        sizes, cls = [32], DeiTForImageClassification
    elif name == "dinov2":
        config = Dinov2Config(num_hidden_layers=2, mlp_ratio=2, image_size=36, patch_size=4,
                              layerscale_value=1.0, **common)
        sizes, cls = [36, 16], Dinov2ForImageClassification
    else:
        config = Dinov2WithRegistersConfig(num_hidden_layers=1, mlp_ratio=2, image_size=36,
                                           patch_size=4, num_register_tokens=2, **common)
        sizes, cls = [36, 16], Dinov2WithRegistersForImageClassification
    model = randomize(cls(config))
    folder = os.path.join(out, name)
    model.save_pretrained(folder, safe_serialization=True)
    if name == "vit":
        ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    base = getattr(model, model.base_model_prefix)
    cases = []
    for side in sizes:
        x = pixels(side)
        with torch.no_grad():
            kwargs = {"interpolate_pos_encoding": True} if name in ("vit", "deit") else {}
            hidden = base(pixel_values=x, **kwargs).last_hidden_state
            logits = model(pixel_values=x, **kwargs).logits
        if name.startswith("dinov2"):
            skip = 1 + getattr(config, "num_register_tokens", 0)
            features = torch.cat([hidden[:, 0], hidden[:, skip:].mean(1)], dim=1)
        else:
            features = hidden[:, 0]
        cases.append({"side": side, "features": features.tolist(), "logits": logits.tolist()})
    return type(model).__name__, cases


def clip_model(name, out):
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, image_size=32, patch_size=8)
    if name == "clip":
        model = randomize(CLIPVisionModelWithProjection(
            CLIPVisionConfig(projection_dim=16, **vision)))
        tower, project = model.vision_model, model.visual_projection
    else:
        config = CLIPConfig(
            text_config=CLIPTextConfig(vocab_size=50, hidden_size=16, intermediate_size=32,
                                       num_hidden_layers=1, num_attention_heads=2,
                                       max_position_embeddings=16).to_dict(),
            vision_config=CLIPVisionConfig(**vision).to_dict(), projection_dim=16)
        model = randomize(CLIPModel(config))
        tower, project = model.vision_model, model.visual_projection
    model.save_pretrained(os.path.join(out, name), safe_serialization=True)
    cases = []
    for side in (32, 48):
        with torch.no_grad():
            pooled = tower(pixel_values=pixels(side), interpolate_pos_encoding=True).pooler_output
            cases.append({"side": side, "features": pooled.tolist(),
                          "embedding": project(pooled).tolist(), "logits": None})
    return type(model).__name__, cases


def timm_model(name, out):
    args = dict(embed_dim=32, num_heads=4, num_classes=3)
    if name == "timm-vit":
        arch, args = "vit_small_patch16_224", dict(args, depth=2, img_size=32, patch_size=8)
        sizes = [32]
    elif name == "timm-vit-avg":
        arch, args = "vit_small_patch16_224", dict(args, depth=1, img_size=32, patch_size=8,
                                                  global_pool="avg")
        sizes = [32]
    elif name == "timm-deit":
        arch, args = "deit_tiny_distilled_patch16_224", dict(args, depth=1, img_size=32,
                                                             patch_size=8)
        sizes = [32]
    else:
        arch, args = "vit_small_patch14_reg4_dinov2", dict(args, depth=1, img_size=36, patch_size=4,
                                                          dynamic_img_size=True)
        sizes = [36, 16]
    model = randomize(timm.create_model(arch, pretrained=False, **args))
    folder = os.path.join(out, name)
    model_args = {k: v for k, v in args.items() if k not in ("num_classes", "dynamic_img_size")}
    save_for_hf(model, folder, model_args=model_args, safe_serialization=True)
    cases = []
    for side in sizes:
        x = pixels(side)
        with torch.no_grad():
            features = model.forward_head(model.forward_features(x), pre_logits=True)
            logits = model(x)
        cases.append({"side": side, "features": features.tolist(),
                      "logits": None if name == "timm-deit" else logits.tolist()})
    return arch, cases


def main():
    out, only = sys.argv[1], sys.argv[2:]
    torch.set_num_threads(1)
    for seed, name in enumerate(["vit", "deit", "dinov2", "dinov2-reg", "timm-vit",
                                 "timm-vit-avg", "timm-deit", "timm-dinov2-reg", "clip",
                                 "clip-full"]):
        if only and name not in only:
            continue
        torch.manual_seed(seed + 40)
        make = (timm_model if name.startswith("timm")
                else clip_model if name.startswith("clip") else transformers_model)
        model, cases = make(name, out)
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump({"folder": name, "model": model, "cases": cases,
                       "made_with": {"torch": torch.__version__,
                                     "transformers": transformers.__version__,
                                     "timm": timm.__version__}}, f)
            f.write("\n")


if __name__ == "__main__":
    main()
