#!/usr/bin/env python3
"""Make small vision folders whose configs differ from the shipped/default ones, and their goldens.

Usage:
    python scripts/golden/make_vision_variant_goldens.py OUT_DIR [NAME ...]
    (OUT_DIR: crates/graft-model/tests/golden/vision_variants; with names, only those folders)

Same recipe and JSON layout as make_vit_goldens.py, make_convnext_goldens.py and
make_mobilenetv3_goldens.py (whose `pixels`, `randomize` and `half` are imported from them):
random weights N(0, 0.3²) of each library's real layout, the deterministic batch of two images
(pixel [b, c, y, x] at side S is sin(0.37 * (((b * 3 + c) * S + y) * S + x)) * 1.5), and for
each side the features the classifier reads (`features`), the logits where the folder has one
classifier (`logits`, else null) and, where `embed` writes something else than the features,
`embedding`. Every folder is run at the size its config was made for and at another size.

Each config sets fields to values other than the library's defaults (see VARIANTS and the README
beside the goldens). So that a loader that ignores a field fails the 1e-5 check (and the 1e-3 one
on wgpu), a few weights are scaled down where a LayerNorm's epsilon would otherwise be lost in the
variance of its input (`shrink`), and for each such field the JSON's `sensitivity` records the
largest change of any output when only that field is put back to its default value (or to what
graft assumes) with the same weights. The `expect` key says what graft did with the folder when
the goldens were made (read from its source): "match", "refuse" (a field or tensor graft does not
support) or "mismatch" (graft loads it but ignores a field that changes the outputs).
"""
import json
import os
import sys
from functools import partial

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import timm  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from timm.layers import LayerNorm as TimmLayerNorm  # noqa: E402
from timm.models import mobilenetv3 as timm_mobilenetv3  # noqa: E402
from timm.models._hub import save_for_hf  # noqa: E402
from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf  # noqa: E402
from transformers import (  # noqa: E402
    CLIPVisionConfig,
    CLIPVisionModel,
    ConvNextConfig,
    ConvNextModel,
    Dinov2Config,
    Dinov2Model,
    ViTConfig,
    ViTModel,
)

from make_mobilenetv3_goldens import half  # noqa: E402
from make_mobilenetv3_goldens import randomize as randomize_bn_half  # noqa: E402
from make_vit_goldens import pixels, randomize  # noqa: E402


def shrink(model, names, factor=1e-3):
    """Scales the named parameters (exact names) so the LayerNorm after them sees a variance near
    its epsilon."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in names:
            params[name].mul_(factor)
    return model


def max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def outputs(run, sides):
    with torch.no_grad():
        return [t for side in sides for t in run(pixels(side)) if t is not None]


def sensitivity(model, run, sides, others):
    """The largest output change when `model`'s weights run in each of `others` (name -> a
    freshly built model with one field put back)."""
    want = outputs(lambda x: run(model, x), sides)
    result = {}
    for field, other in others.items():
        other.load_state_dict(model.state_dict())
        other.eval()
        result[field] = max_diff(want, outputs(lambda x, m=other: run(m, x), sides))
    return result


def cases_of(run, sides):
    cases = []
    with torch.no_grad():
        for side in sides:
            features, logits, embedding = run(pixels(side))
            case = {"side": side, "features": features.tolist(),
                    "logits": None if logits is None else logits.tolist()}
            if embedding is not None:
                case["embedding"] = embedding.tolist()
            cases.append(case)
    return cases


# --- transformers vision transformers ----------------------------------------------------------

def vit(folder):
    """ViTModel (no classifier, a pooler graft does not use): gelu_new, eps 1e-6, no qkv bias,
    36 wide with 3 heads, image 40 with patch 8."""
    base = dict(hidden_size=36, num_hidden_layers=2, num_attention_heads=3, intermediate_size=60,
                image_size=40, patch_size=8, num_channels=3)
    fields = dict(hidden_act="gelu_new", layer_norm_eps=1e-6, qkv_bias=False)
    build = lambda **f: ViTModel(ViTConfig(**base, **dict(fields, **f)))  # noqa: E731
    model = shrink(randomize(build()), ["embeddings.cls_token", "embeddings.position_embeddings",
                                        "embeddings.patch_embeddings.projection.weight",
                                        "embeddings.patch_embeddings.projection.bias"])
    model.save_pretrained(folder, safe_serialization=True)
    sides = [40, 56]

    def run(m, x):
        hidden = m(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state
        return hidden[:, 0], None, None

    sens = sensitivity(model, run, sides, {"layer_norm_eps": build(layer_norm_eps=1e-12),
                                           "hidden_act": build(hidden_act="gelu")})
    return dict(model="ViTModel", cases=cases_of(lambda x: run(model, x), sides),
                fields=dict(fields, hidden_size=36, num_attention_heads=3, image_size=40,
                            patch_size=8),
                sensitivity=sens, expect="match",
                describe="vit (2 blocks, 36 wide, patch 8)", architecture="vit")


def dinov2_run(m, x):
    out = m(pixel_values=x)
    hidden = out.last_hidden_state
    features = torch.cat([hidden[:, 0], hidden[:, 1:].mean(1)], dim=1)
    # graft's `embed` for transformers' DINOv2: pooler_output, the normalized class token.
    return features, None, out.pooler_output


def dinov2(folder):
    """Dinov2Model: layerscale_value 0.5, mlp_ratio 3, no qkv bias, quick_gelu, eps 1e-5, no mask
    token, image 28 with patch 4."""
    base = dict(hidden_size=36, num_hidden_layers=2, num_attention_heads=3, image_size=28,
                patch_size=4)
    fields = dict(layerscale_value=0.5, mlp_ratio=3, qkv_bias=False, hidden_act="quick_gelu",
                  layer_norm_eps=1e-5, use_mask_token=False)
    build = lambda **f: Dinov2Model(Dinov2Config(**base, **dict(fields, **f)))  # noqa: E731
    model = shrink(randomize(build()), ["embeddings.cls_token", "embeddings.position_embeddings",
                                        "embeddings.patch_embeddings.projection.weight",
                                        "embeddings.patch_embeddings.projection.bias"])
    model.save_pretrained(folder, safe_serialization=True)
    sides = [28, 20]
    sens = sensitivity(model, dinov2_run, sides, {"layer_norm_eps": build(layer_norm_eps=1e-6),
                                                  "hidden_act": build(hidden_act="gelu")})
    return dict(model="Dinov2Model", cases=cases_of(lambda x: dinov2_run(model, x), sides),
                fields=dict(fields, hidden_size=36, num_attention_heads=3, image_size=28,
                            patch_size=4),
                sensitivity=sens, expect="match",
                describe="dinov2 (2 blocks, 36 wide, patch 4)", architecture="vit")


def dinov2_swiglu(folder):
    """Dinov2Model with use_swiglu_ffn (DINOv2 giant's SwiGLU MLP), one block."""
    fields = dict(use_swiglu_ffn=True, mlp_ratio=3, layerscale_value=0.5)
    model = randomize(Dinov2Model(Dinov2Config(hidden_size=36, num_hidden_layers=1,
                                               num_attention_heads=3, image_size=28,
                                               patch_size=4, **fields)))
    model.save_pretrained(folder, safe_serialization=True)
    return dict(model="Dinov2Model", cases=cases_of(lambda x: dinov2_run(model, x), [28, 20]),
                fields=fields, sensitivity={}, expect="refuse",
                describe="dinov2 (1 blocks, 36 wide, patch 4)", architecture="vit")


def clip(folder):
    """CLIPVisionModel (no projection): gelu instead of quick_gelu, eps 1e-6, image 40."""
    base = dict(hidden_size=36, intermediate_size=72, num_hidden_layers=2, num_attention_heads=3,
                image_size=40, patch_size=8)
    fields = dict(hidden_act="gelu", layer_norm_eps=1e-6)
    build = lambda **f: CLIPVisionModel(CLIPVisionConfig(**base, **dict(fields, **f)))  # noqa
    model = shrink(randomize(build()), [
        "embeddings.class_embedding",
        "embeddings.patch_embedding.weight",
        "embeddings.position_embedding.weight"])
    model.save_pretrained(folder, safe_serialization=True)
    sides = [40, 24]

    def run(m, x):
        pooled = m(pixel_values=x, interpolate_pos_encoding=True).pooler_output
        # Without visual_projection, `embed` writes the pooled output.
        return pooled, None, pooled

    sens = sensitivity(model, run, sides, {"layer_norm_eps": build(layer_norm_eps=1e-5),
                                           "hidden_act": build(hidden_act="quick_gelu")})
    return dict(model="CLIPVisionModel", cases=cases_of(lambda x: run(model, x), sides),
                fields=dict(fields, hidden_size=36, num_attention_heads=3, image_size=40),
                sensitivity=sens, expect="match",
                describe="clip (2 blocks, 36 wide, patch 8)", architecture="vit")


# --- timm vision transformers ------------------------------------------------------------------

def timm_vit_run(m, x):
    features = m.forward_head(m.forward_features(x), pre_logits=True)
    return features, m(x), None


def timm_vit(folder, arch, args, sides, shrunk=(), others=None):
    """A scaled-down timm VisionTransformer, run at `sides` (dynamic_img_size: positions
    resampled as timm does)."""
    make = lambda dynamic=True, **kw: timm.create_model(  # noqa: E731
        arch, pretrained=False, num_classes=3, dynamic_img_size=dynamic, **dict(args, **kw))
    # Saved from the fixed-size model (input_size is then the trained size, and model_args
    # does not carry dynamic_img_size), run by the dynamic one.
    saved = shrink(randomize(make(dynamic=False)), shrunk)
    save_for_hf(saved, folder, model_args=args, safe_serialization=True)
    model = make()
    model.load_state_dict(saved.state_dict())
    model.eval()
    sens = sensitivity(model, timm_vit_run, sides,
                       {k: make(**kw) for k, kw in (others or {}).items()})
    return model, cases_of(lambda x: timm_vit_run(model, x), sides), sens


def timm_vit_quickgelu(folder):
    """timm ViT, CLIP-style: pre_norm (norm_pre, no patch bias), quick_gelu from
    model_args.act_layer, no qkv bias, fc_norm on the class token (no final norm), mlp_ratio 3."""
    args = dict(embed_dim=36, depth=2, num_heads=3, mlp_ratio=3, img_size=40, patch_size=8,
                pre_norm=True, qkv_bias=False, act_layer="quick_gelu", fc_norm=True)
    model, cases, sens = timm_vit(folder, "vit_small_patch16_224", args, [40, 56],
                                  others={"act_layer": dict(act_layer="gelu")})
    return dict(model="vit_small_patch16_224", cases=cases, fields=args, sensitivity=sens,
                expect="match", describe="vit (2 blocks, 36 wide, patch 8)", architecture="vit")


def timm_vit_noembed(folder):
    """timm ViT, DeiT-III-style: positions only on the patches (no_embed_class), layer scale
    (init_values 0.5), average pooling with the final norm kept (fc_norm False)."""
    args = dict(embed_dim=36, depth=2, num_heads=3, mlp_ratio=2, img_size=40, patch_size=8,
                no_embed_class=True, init_values=0.5, global_pool="avg", fc_norm=False)
    model, cases, sens = timm_vit(folder, "vit_small_patch16_224", args, [40, 24])
    return dict(model="vit_small_patch16_224", cases=cases, fields=args, sensitivity=sens,
                expect="match", describe="vit (2 blocks, 36 wide, patch 8)", architecture="vit")


def timm_vit_nocls(folder):
    """timm ViT without a class token (class_token False, average pooling, fc_norm)."""
    args = dict(embed_dim=36, depth=1, num_heads=3, mlp_ratio=2, img_size=40, patch_size=8,
                class_token=False, global_pool="avg")
    model, cases, sens = timm_vit(folder, "vit_small_patch16_224", args, [40, 56])
    return dict(model="vit_small_patch16_224", cases=cases, fields=args, sensitivity=sens,
                expect="match", describe="vit (1 blocks, 36 wide, patch 8)", architecture="vit")


def timm_vit_clip(folder):
    """timm vit_base_patch16_clip_quickgelu_224 scaled down, saved as a hub folder would be: the
    registered model sets quick_gelu and LayerNorm eps 1e-5 itself, so model_args name neither."""
    args = dict(embed_dim=36, depth=2, num_heads=3, mlp_ratio=2, img_size=40, patch_size=8)
    model, cases, sens = timm_vit(
        folder, "vit_base_patch16_clip_quickgelu_224", args, [40, 24],
        shrunk=["cls_token", "pos_embed", "patch_embed.proj.weight"],
        others={"act_layer (gelu, what graft assumes)": dict(act_layer="gelu"),
                "eps (1e-6, what graft assumes)":
                    dict(norm_layer=partial(TimmLayerNorm, eps=1e-6))})
    return dict(model="vit_base_patch16_clip_quickgelu_224", cases=cases,
                fields=dict(args, pre_norm=True, act_layer="quick_gelu (implied by the name)",
                            norm_eps="1e-5 (implied by the name)"),
                sensitivity=sens, expect="mismatch",
                describe="vit (2 blocks, 36 wide, patch 8)", architecture="vit")


def timm_vit_avg_prefix(folder):
    """timm ViT with average pooling over the class token too (pool_include_prefix)."""
    args = dict(embed_dim=36, depth=1, num_heads=3, mlp_ratio=2, img_size=40, patch_size=8,
                global_pool="avg", pool_include_prefix=True)
    model, cases, sens = timm_vit(folder, "vit_small_patch16_224", args, [40, 24],
                                  others={"pool_include_prefix": dict(pool_include_prefix=False)})
    return dict(model="vit_small_patch16_224", cases=cases, fields=args, sensitivity=sens,
                expect="mismatch", describe="vit (1 blocks, 36 wide, patch 8)",
                architecture="vit")


# --- ConvNeXt ----------------------------------------------------------------------------------

DIMS = [8, 12, 16, 24]
CONV_SIDES = [48, 72]  # neither a multiple of 32: the strided layers floor


def convnext(folder, act="gelu", expect="match"):
    """ConvNextModel (no classifier): no layer scale (layer_scale_init_value 0), final LayerNorm
    eps 1e-5, image_size 48."""
    fields = dict(layer_scale_init_value=0.0, layer_norm_eps=1e-5, image_size=48, hidden_act=act)
    build = lambda **f: ConvNextModel(ConvNextConfig(  # noqa: E731
        hidden_sizes=DIMS, depths=[1, 1, 1, 1], **dict(fields, **f)))
    # The pooled features' variance near the final norm's epsilon.
    model = shrink(randomize(build()), [
        "encoder.stages.3.downsampling_layer.1.weight",
        "encoder.stages.3.downsampling_layer.1.bias",
        "encoder.stages.3.layers.0.pwconv2.weight", "encoder.stages.3.layers.0.pwconv2.bias"])
    model.save_pretrained(folder, safe_serialization=True)

    def run(m, x):
        return m(pixel_values=x).pooler_output, None, None

    others = {"layer_norm_eps": build(layer_norm_eps=1e-12)}
    if act != "gelu":
        others["hidden_act"] = build(hidden_act="gelu")
    sens = sensitivity(model, run, CONV_SIDES, others)
    return dict(model="ConvNextModel", cases=cases_of(lambda x: run(model, x), CONV_SIDES),
                fields=fields, sensitivity=sens, expect=expect,
                describe=f"convnext (dims {DIMS}, depths [1, 1, 1, 1])", architecture="convnext")


def convnext_relu(folder):
    """The same with hidden_act relu."""
    return convnext(folder, act="relu", expect="refuse")


def timm_convnext(folder, args, expect, shrunk=(), others=None, arch="convnext_tiny"):
    make = lambda **kw: timm.create_model(arch, pretrained=False, num_classes=3,  # noqa: E731
                                          dims=tuple(DIMS), depths=(1, 1, 1, 1),
                                          **dict(args, **kw))
    model = shrink(randomize(make()), shrunk)
    save_for_hf(model, folder, model_args=dict(args, dims=DIMS, depths=[1, 1, 1, 1]),
                data_config=dict(input_size=(3, CONV_SIDES[0], CONV_SIDES[0])),
                safe_serialization=True)
    sens = sensitivity(model, timm_vit_run, CONV_SIDES,
                       {k: make(**kw) for k, kw in (others or {}).items()})
    return dict(model=arch, cases=cases_of(lambda x: timm_vit_run(model, x), CONV_SIDES),
                fields=args, sensitivity=sens, expect=expect,
                describe=f"convnext (dims {DIMS}, depths [1, 1, 1, 1])", architecture="convnext")


def timm_convnext_nols(folder):
    """timm convnext_tiny layout without layer scale (ls_init_value None)."""
    return timm_convnext(folder, dict(ls_init_value=None), "match")


def timm_convnext_nobias(folder):
    """timm ConvNeXt without convolution biases (conv_bias False: stem, downsampling and
    depthwise convolutions)."""
    return timm_convnext(folder, dict(conv_bias=False), "refuse")


def timm_convnext_normfirst(folder):
    """timm ConvNeXt with head_norm_first: a channel LayerNorm (`norm_pre`) before the pooling,
    no head.norm."""
    return timm_convnext(folder, dict(head_norm_first=True), "refuse")


SHRINK_LAST_STAGE = ["stages.3.downsample.1.weight", "stages.3.downsample.1.bias",
                     "stages.3.blocks.0.mlp.fc2.weight", "stages.3.blocks.0.mlp.fc2.bias"]


def timm_convnext_act(folder):
    """timm ConvNeXt with model_args.act_layer relu."""
    return timm_convnext(folder, dict(act_layer="relu"), "mismatch",
                         others={"act_layer": dict(act_layer="gelu")})


def timm_convnext_eps(folder):
    """timm ConvNeXt with model_args.norm_eps 1e-3 (every LayerNorm)."""
    return timm_convnext(folder, dict(norm_eps=1e-3), "mismatch", shrunk=SHRINK_LAST_STAGE,
                         others={"norm_eps": dict(norm_eps=None)})


# --- MobileNetV3 -------------------------------------------------------------------------------

MNV3_SIDES = [40, 72]


def mnv3_cases(model, features, sides):
    cases = []
    with torch.no_grad():
        for side in sides:
            x = pixels(side)
            cases.append({"side": side, "features": features(x).tolist(),
                          "logits": model(x).tolist()})
    return cases


def timm_large_075(folder):
    """timm mobilenetv3_large_075's name and timm's large layout (blocks.0-5, 15 blocks), built
    with a channel multiplier of 0.1 and a 32-wide hidden layer so it stays small (graft reads
    every width from the weights), float16 weights."""
    model = timm_mobilenetv3._gen_mobilenet_v3("mobilenetv3_large_075", 0.1, pretrained=False,
                                               num_classes=3)
    model.conv_head = torch.nn.Conv2d(model.conv_head.in_channels, 32, 1)
    model.classifier = torch.nn.Linear(32, 3)
    model.num_features = model.head_hidden_size = 32
    model = randomize_bn_half(model)
    save_for_hf(model, folder, data_config=dict(input_size=(3, MNV3_SIDES[0], MNV3_SIDES[0])),
                safe_serialization=True)
    save_file(half(model.state_dict()), os.path.join(folder, "model.safetensors"))
    features = lambda x: model.forward_head(model.forward_features(x), pre_logits=True)  # noqa
    return dict(model="mobilenetv3_large_075", cases=mnv3_cases(model, features, MNV3_SIDES),
                fields=dict(architecture="mobilenetv3_large_075", channel_multiplier=0.1,
                            num_features=32),
                sensitivity={}, expect="match", describe="mobilenet_v3 (large, 15 blocks)",
                architecture="mobilenet_v3")


def tv_small(folder):
    """torchvision mobilenet_v3_small with width_mult 0.25 and reduced_tail (the last stage at
    half width), a 32-wide hidden layer, in graft's vision folder, float16 weights."""
    setting, _ = _mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.25, reduced_tail=True)
    model = randomize_bn_half(MobileNetV3(setting, 32, num_classes=3))
    os.makedirs(folder, exist_ok=True)
    save_file(half(model.state_dict()), os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"architecture": "mobilenet_v3", "variant": "small", "num_classes": 3,
                   "image_size": 40, "resize": "squash",
                   "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}, f, indent=1)
    def features(x):
        return model.classifier[:2](torch.flatten(model.avgpool(model.features(x)), 1))

    return dict(model="torchvision mobilenet_v3_small",
                cases=mnv3_cases(model, features, MNV3_SIDES),
                fields=dict(variant="small", width_mult=0.25, reduced_tail=True, last_channel=32),
                sensitivity={}, expect="match", describe="mobilenet_v3 (small, 11 blocks)",
                architecture="mobilenet_v3")


VARIANTS = {
    "vit": vit,
    "dinov2": dinov2,
    "dinov2-swiglu": dinov2_swiglu,
    "clip": clip,
    "timm-vit-quickgelu": timm_vit_quickgelu,
    "timm-vit-noembed": timm_vit_noembed,
    "timm-vit-nocls": timm_vit_nocls,
    "timm-vit-clip": timm_vit_clip,
    "timm-vit-avg-prefix": timm_vit_avg_prefix,
    "convnext": convnext,
    "convnext-relu": convnext_relu,
    "timm-convnext-nols": timm_convnext_nols,
    "timm-convnext-nobias": timm_convnext_nobias,
    "timm-convnext-normfirst": timm_convnext_normfirst,
    "timm-convnext-act": timm_convnext_act,
    "timm-convnext-eps": timm_convnext_eps,
    "timm-large-075": timm_large_075,
    "tv-small": tv_small,
}


def main():
    out, only = sys.argv[1], sys.argv[2:]
    torch.set_num_threads(1)
    for seed, (name, make) in enumerate(VARIANTS.items()):
        if only and name not in only:
            continue
        torch.manual_seed(seed + 90)
        result = make(os.path.join(out, name))
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump({"folder": name, "model": result["model"], "cases": result["cases"],
                       "describe": result["describe"], "architecture": result["architecture"],
                       "expect": result["expect"], "fields": result["fields"],
                       "sensitivity": result["sensitivity"],
                       "made_with": {"torch": torch.__version__,
                                     "transformers": transformers.__version__,
                                     "timm": timm.__version__,
                                     "torchvision": torchvision.__version__}}, f)
            f.write("\n")
        sens = ", ".join(f"{k} {v:.2e}" for k, v in result["sensitivity"].items())
        print(f"{name}: {result['expect']}; {result['describe']}; sensitivity: {sens or '-'}")


if __name__ == "__main__":
    main()
