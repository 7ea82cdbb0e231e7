#!/usr/bin/env python3
"""Make PyTorch reference ("golden") vectors for graft-train's training control.

Usage (from the repository root):
    python scripts/golden/training_control.py [OUT_DIR]

OUT_DIR defaults to crates/graft-train/tests/golden/training/ and receives:

- losses.json       cross-entropy (plain / class weights / label smoothing / both),
                    sklearn 'balanced' class weights, BCE-with-logits (plain /
                    pos_weight / weight), MSE and Huber losses, each with the
                    gradient w.r.t. its input (torch.nn.functional, mean reduction).
- schedules.json    the learning rate used by each of 20 optimizer steps for the
                    transformers warmup schedules (constant / linear / cosine, with
                    and without warmup) and torch OneCycleLR.
- clip.json         torch.nn.utils.clip_grad_norm_ on three gradient tensors
                    (max_norm 1.0, which clips, and 10.0, which does not).
- optim_steps.json  three full-batch steps of AdamW / Adam(L2) / SGD momentum
                    (plain and Nesterov) on LayerNorm(4) -> Linear(4, 3) with
                    cross-entropy, with decay / no_decay parameter groups.

All inputs are drawn in float32 (so they are exactly representable in f32) and
then every reference is computed in float64 on the CPU from those values.
Deterministic: seeded with torch.manual_seed(0) plus one torch.Generator per
section.  Needs no network access.
"""
import json
import math
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

try:
    import sklearn  # noqa: E402
    from sklearn.utils.class_weight import compute_class_weight  # noqa: E402
except ImportError:  # pragma: no cover - fallback documented in README
    sklearn = None
    compute_class_weight = None

F64 = torch.float64
DEFAULT_OUT = os.path.join("crates", "graft-train", "tests", "golden", "training")


def f32_randn(gen, *shape, scale=1.0, shift=0.0):
    """randn in float32 (scaled/shifted in float32), returned as float64."""
    t = torch.randn(*shape, generator=gen, dtype=torch.float32) * scale + shift
    return t.to(torch.float32).to(F64)


def as_f32_exact(t):
    """Round a float64 tensor to float32 and back (exact f32 value as f64)."""
    return t.to(torch.float32).to(F64)


def tolist(t):
    """Tensor -> nested python floats (full precision)."""
    if isinstance(t, torch.Tensor):
        t = t.detach().to(F64)
        if t.dim() == 0:
            return float(t.item())
        return [tolist(x) for x in t]
    return float(t)


def meta():
    return {
        "generator": "scripts/golden/training_control.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "sklearn": sklearn.__version__ if sklearn is not None else None,
        "compute_dtype": "float64 (inputs are exact float32 values)",
    }


def loss_and_grad(fn, inp, *args, **kwargs):
    x = inp.clone().requires_grad_(True)
    loss = fn(x, *args, **kwargs)
    loss.backward()
    return float(loss.item()), x.grad.detach().clone()


# --------------------------------------------------------------------------- A
def make_losses():
    gen = torch.Generator().manual_seed(1)
    logits = f32_randn(gen, 6, 4, scale=2.0)
    targets = torch.tensor([2, 0, 3, 1, 0, 2], dtype=torch.long)
    assert sorted(set(targets.tolist())) == [0, 1, 2, 3]
    ce_weight = torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=F64)
    smoothing = 0.1

    out = {"meta": meta()}
    out["logits"] = tolist(logits)
    out["targets"] = targets.tolist()
    out["ce_weight"] = tolist(ce_weight)
    out["label_smoothing"] = smoothing

    ce_cases = {
        "ce_plain": {},
        "ce_weights": {"weight": ce_weight},
        "ce_smoothing": {"label_smoothing": smoothing},
        "ce_weights_smoothing": {"weight": ce_weight, "label_smoothing": smoothing},
    }
    for name, kw in ce_cases.items():
        loss, grad = loss_and_grad(F.cross_entropy, logits, targets, **kw)
        out[name] = loss
        out[name + "_grad"] = tolist(grad)

    # Independent numpy cross-check of PyTorch's weighted + smoothed CE formula:
    #   nll_i  = -w[y_i] * log p[i, y_i]
    #   smth_i = -sum_c w[c] * log p[i, c]
    #   loss   = ((1-eps) * sum_i nll_i + eps/C * sum_i smth_i) / sum_i w[y_i]
    lp = torch.log_softmax(logits, dim=1).numpy()
    w = ce_weight.numpy()
    y = targets.numpy()
    C = lp.shape[1]
    nll = -w[y] * lp[np.arange(len(y)), y]
    smth = -(lp * w[None, :]).sum(1)
    ref = ((1 - smoothing) * nll.sum() + smoothing / C * smth.sum()) / w[y].sum()
    assert abs(ref - out["ce_weights_smoothing"]) < 1e-12, (ref, out["ce_weights_smoothing"])

    # balanced class weights
    counts = [10, 5, 3, 2]
    bal = torch.cat([torch.full((c,), k, dtype=torch.long) for k, c in enumerate(counts)])
    bal = bal[torch.randperm(len(bal), generator=gen)]
    bal_list = bal.tolist()
    classes = np.array([0, 1, 2, 3])
    if compute_class_weight is not None:
        bw = compute_class_weight("balanced", classes=classes, y=np.array(bal_list))
        bw_source = "sklearn.utils.class_weight.compute_class_weight('balanced')"
    else:
        bw = len(bal_list) / (len(classes) * np.bincount(bal_list, minlength=4))
        bw_source = "n_samples / (n_classes * count)"
    formula = len(bal_list) / (len(classes) * np.bincount(bal_list, minlength=4).astype(np.float64))
    assert np.allclose(bw, formula, rtol=0, atol=1e-15)
    out["balanced_targets"] = bal_list
    out["balanced_counts"] = np.bincount(bal_list, minlength=4).tolist()
    out["balanced_weights"] = [float(v) for v in bw]
    out["balanced_weights_source"] = bw_source

    # multi-label
    ml_logits = f32_randn(gen, 6, 4, scale=2.0)
    while True:
        ml_targets = (torch.rand(6, 4, generator=gen) < 0.5).to(F64)
        colsum = ml_targets.sum(0)
        if bool(((colsum > 0) & (colsum < 6)).all()):
            break
    pw = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=F64)
    out["ml_logits"] = tolist(ml_logits)
    out["ml_targets"] = tolist(ml_targets)
    out["bce_pos_weight_vec"] = tolist(pw)
    out["bce_weight_vec"] = tolist(pw)
    for name, kw in {
        "bce_plain": {},
        "bce_pos_weight": {"pos_weight": pw},
        "bce_weight": {"weight": pw},  # shape [4] broadcast over the last dim
    }.items():
        loss, grad = loss_and_grad(F.binary_cross_entropy_with_logits, ml_logits, ml_targets, **kw)
        out[name] = loss
        out[name + "_grad"] = tolist(grad)

    # regression: include residuals both inside and outside the Huber deltas
    reg_target = f32_randn(gen, 8)
    reg_pred = as_f32_exact(reg_target + f32_randn(gen, 8, scale=1.2))
    out["reg_pred"] = tolist(reg_pred)
    out["reg_target"] = tolist(reg_target)
    out["mse"], g = loss_and_grad(F.mse_loss, reg_pred, reg_target)
    out["mse_grad"] = tolist(g)
    out["huber_1"], g = loss_and_grad(F.huber_loss, reg_pred, reg_target, delta=1.0)
    out["huber_1_grad"] = tolist(g)
    out["huber_05"], g = loss_and_grad(F.huber_loss, reg_pred, reg_target, delta=0.5)
    out["huber_05_grad"] = tolist(g)
    r = (reg_pred - reg_target).abs()
    out["_notes"] = (
        "All losses use reduction='mean'. Weighted CE divides by sum_i weight[target_i], "
        "not by N; with label smoothing the smoothing term is also class-weighted and "
        "divided by the same sum: loss = ((1-eps)*sum_i w[y_i]*nll_i + eps/C*sum_i "
        "sum_c w[c]*(-log p_ic)) / sum_i w[y_i]. BCE pos_weight multiplies the "
        "positive term only; BCE weight multiplies the whole elementwise loss before the "
        "mean over all N*C elements. Huber: 0.5*r^2 if |r|<delta else delta*(|r|-0.5*delta), "
        "mean over elements (huber_loss, not smooth_l1_loss). "
        f"|pred-target| = {[round(float(v), 4) for v in r]}."
    )
    return out


# --------------------------------------------------------------------------- B
def make_schedules():
    peak, total, warmup = 1e-3, 20, 5

    def record(make_sched):
        p = torch.nn.Parameter(torch.zeros(1, dtype=F64))
        opt = torch.optim.SGD([p], lr=peak)
        sched = make_sched(opt)
        lrs = []
        for _ in range(total):
            lrs.append(float(opt.param_groups[0]["lr"]))
            p.grad = torch.zeros_like(p)
            opt.step()
            sched.step()
        return lrs, float(opt.param_groups[0]["lr"])

    cases = {
        "constant_warmup": (
            {"fn": "transformers.get_constant_schedule_with_warmup", "num_warmup_steps": warmup},
            lambda o: get_constant_schedule_with_warmup(o, warmup),
        ),
        "linear_warmup": (
            {"fn": "transformers.get_linear_schedule_with_warmup", "num_warmup_steps": warmup,
             "num_training_steps": total},
            lambda o: get_linear_schedule_with_warmup(o, warmup, total),
        ),
        "cosine_warmup": (
            {"fn": "transformers.get_cosine_schedule_with_warmup", "num_warmup_steps": warmup,
             "num_training_steps": total, "num_cycles": 0.5},
            lambda o: get_cosine_schedule_with_warmup(o, warmup, total),
        ),
        "linear_nowarmup": (
            {"fn": "transformers.get_linear_schedule_with_warmup", "num_warmup_steps": 0,
             "num_training_steps": total},
            lambda o: get_linear_schedule_with_warmup(o, 0, total),
        ),
        "cosine_nowarmup": (
            {"fn": "transformers.get_cosine_schedule_with_warmup", "num_warmup_steps": 0,
             "num_training_steps": total, "num_cycles": 0.5},
            lambda o: get_cosine_schedule_with_warmup(o, 0, total),
        ),
        "one_cycle": (
            {"fn": "torch.optim.lr_scheduler.OneCycleLR", "max_lr": peak, "total_steps": total,
             "pct_start": 0.3, "anneal_strategy": "cos", "div_factor": 25.0,
             "final_div_factor": 1e4, "cycle_momentum": False, "three_phase": False},
            lambda o: torch.optim.lr_scheduler.OneCycleLR(
                o, max_lr=peak, total_steps=total, pct_start=0.3, anneal_strategy="cos",
                div_factor=25.0, final_div_factor=1e4, cycle_momentum=False, three_phase=False),
        ),
    }
    out = {
        "meta": meta(),
        "settings": {
            "peak_lr": peak,
            "total_steps": total,
            "warmup_steps": warmup,
            "optimizer": "torch.optim.SGD([dummy], lr=1e-3)",
            "protocol": "lrs[k] = optimizer.param_groups[0]['lr'] read right before the "
                        "(k+1)-th optimizer.step(); scheduler.step() is called after each "
                        "optimizer.step(). lr_after_last = lr after the 20th scheduler.step().",
        },
        "cases": {},
    }
    for name, (settings, mk) in cases.items():
        lrs, after = record(mk)
        out["cases"][name] = {"settings": settings, "lrs": lrs, "lr_after_last": after}

    # closed-form cross-checks (HF lambdas evaluated at step index s = 0..19)
    def lin(s, w):
        return s / max(1, w) if s < w else max(0.0, (total - s) / max(1, total - w))

    def cos(s, w):
        if s < w:
            return s / max(1, w)
        prog = (s - w) / max(1, total - w)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * prog)))

    c = out["cases"]
    for s in range(total):
        assert abs(c["linear_warmup"]["lrs"][s] - peak * lin(s, warmup)) < 1e-18
        assert abs(c["cosine_warmup"]["lrs"][s] - peak * cos(s, warmup)) < 1e-18
        assert abs(c["linear_nowarmup"]["lrs"][s] - peak * lin(s, 0)) < 1e-18
        assert abs(c["cosine_nowarmup"]["lrs"][s] - peak * cos(s, 0)) < 1e-18
        assert abs(c["constant_warmup"]["lrs"][s] - peak * min(1.0, s / warmup)) < 1e-18
    # OneCycleLR (two-phase): phase ends at pct*T - 1 and T - 1
    init, final = peak / 25.0, peak / 25.0 / 1e4
    e1, e2 = 0.3 * total - 1, total - 1

    def cos_anneal(a, b, pct):
        return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)

    for s in range(total):
        want = cos_anneal(init, peak, s / e1) if s <= e1 else cos_anneal(peak, final, (s - e1) / (e2 - e1))
        assert abs(c["one_cycle"]["lrs"][s] - want) < 1e-15, (s, c["one_cycle"]["lrs"][s], want)
    out["_notes"] = (
        "HF warmup schedules are LambdaLR multipliers of the optimizer's initial lr evaluated "
        "at step index s = 0, 1, ...: the very first optimizer step uses lr = peak * 0/warmup "
        "= 0 (constant/linear/cosine with warmup). Without warmup the first step uses the "
        "full peak lr and linear reaches peak*(1/20) on the last step (never 0). "
        "OneCycleLR overrides the optimizer lr at construction: step 0 uses max_lr/div_factor, "
        "peak is hit at step index pct_start*total-1 = 5, the last step (index 19 = total-1) "
        "uses max_lr/div_factor/final_div_factor. Its lr_after_last is PyTorch extrapolating "
        "the cosine past the end (pct = 15/14 > 1, so the lr rises again); do not use it."
    )
    return out


# --------------------------------------------------------------------------- C
def make_clip():
    gen = torch.Generator().manual_seed(3)
    shapes = [[3, 4], [4], [2, 2]]
    raw = [torch.randn(*s, generator=gen, dtype=F64) for s in shapes]
    norm = torch.sqrt(sum((g ** 2).sum() for g in raw))
    grads = [as_f32_exact(g * (3.7 / norm)) for g in raw]

    out = {"meta": meta(), "shapes": shapes,
           "grads": [tolist(g) for g in grads], "norm_type": 2.0, "cases": {}}
    for key, max_norm in (("max_norm_1", 1.0), ("max_norm_10", 10.0)):
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=2.0)
        coef = float(max_norm / (float(total) + 1e-6))
        clipped = [p.grad.detach().clone() for p in params]
        # cross-check against the documented formula
        for g, cg in zip(grads, clipped):
            assert torch.allclose(cg, g * min(1.0, coef), rtol=0, atol=1e-15)
        out["cases"][key] = {
            "max_norm": max_norm,
            "total_norm": float(total),
            "clip_coef": coef,
            "clip_coef_clamped": min(1.0, coef),
            "clipped_grads": [tolist(g) for g in clipped],
        }
    out["_notes"] = (
        "total_norm is the L2 norm over all gradients together (the value returned, "
        "before clipping). Clipping multiplies every gradient by "
        "clip_coef_clamped = min(1, max_norm / (total_norm + 1e-6)), so the clipped "
        "global norm is slightly below max_norm (not exactly max_norm)."
    )
    return out


# --------------------------------------------------------------------------- D
class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = torch.nn.LayerNorm(4, eps=1e-5)
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.linear(self.norm(x))


PARAM_NAMES = ["norm.weight", "norm.bias", "linear.weight", "linear.bias"]


def make_optim():
    gen = torch.Generator().manual_seed(4)
    x = f32_randn(gen, 5, 4, scale=1.5)
    targets = torch.tensor([0, 2, 1, 2, 0], dtype=torch.long)
    init = {
        "norm.weight": f32_randn(gen, 4, scale=0.1, shift=1.0),
        "norm.bias": f32_randn(gen, 4, scale=0.1),
        "linear.weight": f32_randn(gen, 3, 4, scale=0.5),
        "linear.bias": f32_randn(gen, 3, scale=0.1),
    }

    def build():
        m = Tiny().to(F64)
        sd = m.state_dict()
        for k in PARAM_NAMES:
            sd[k].copy_(init[k])
        return m

    def groups(m, wd):
        p = dict(m.named_parameters())
        return [
            {"params": [p["linear.weight"]], "weight_decay": wd, "names": ["linear.weight"]},
            {"params": [p["linear.bias"], p["norm.weight"], p["norm.bias"]],
             "weight_decay": 0.0, "names": ["linear.bias", "norm.weight", "norm.bias"]},
        ]

    def strip(gs):
        return [{k: v for k, v in g.items() if k != "names"} for g in gs]

    decay_groups = {"decay": ["linear.weight"],
                    "no_decay": ["linear.bias", "norm.weight", "norm.bias"]}
    cases = {
        "adamw": dict(
            opt="torch.optim.AdamW", lr=0.01, betas=[0.9, 0.999], eps=1e-8,
            weight_decay={"decay": 0.1, "no_decay": 0.0},
            make=lambda m: torch.optim.AdamW(strip(groups(m, 0.1)), lr=0.01, betas=(0.9, 0.999),
                                             eps=1e-8, amsgrad=False, foreach=False)),
        "adam_l2": dict(
            opt="torch.optim.Adam", lr=0.01, betas=[0.9, 0.999], eps=1e-8,
            weight_decay={"decay": 0.01, "no_decay": 0.0},
            make=lambda m: torch.optim.Adam(strip(groups(m, 0.01)), lr=0.01, betas=(0.9, 0.999),
                                            eps=1e-8, amsgrad=False, foreach=False)),
        "sgd_nesterov": dict(
            opt="torch.optim.SGD", lr=0.1, momentum=0.9, dampening=0.0, nesterov=True,
            weight_decay={"decay": 0.01, "no_decay": 0.0},
            make=lambda m: torch.optim.SGD(strip(groups(m, 0.01)), lr=0.1, momentum=0.9,
                                           dampening=0.0, nesterov=True, foreach=False)),
        "sgd_momentum": dict(
            opt="torch.optim.SGD", lr=0.1, momentum=0.9, dampening=0.0, nesterov=False,
            weight_decay={"decay": 0.01, "no_decay": 0.0},
            make=lambda m: torch.optim.SGD(strip(groups(m, 0.01)), lr=0.1, momentum=0.9,
                                           dampening=0.0, nesterov=False, foreach=False)),
        "adamw_all_decay": dict(
            opt="torch.optim.AdamW", lr=0.01, betas=[0.9, 0.999], eps=1e-8,
            weight_decay={"all": 0.1},
            make=lambda m: torch.optim.AdamW(m.parameters(), lr=0.01, betas=(0.9, 0.999),
                                             eps=1e-8, weight_decay=0.1, amsgrad=False,
                                             foreach=False)),
    }

    out = {
        "meta": meta(),
        "model": "LayerNorm(4, eps=1e-5, elementwise_affine) -> Linear(4, 3); "
                 "loss = F.cross_entropy(logits, targets) (mean)",
        "layernorm_eps": 1e-5,
        "param_names": PARAM_NAMES,
        "param_shapes": {k: list(init[k].shape) for k in PARAM_NAMES},
        "param_groups": decay_groups,
        "x": tolist(x),
        "targets": targets.tolist(),
        "init": {k: tolist(init[k]) for k in PARAM_NAMES},
        "num_steps": 3,
        "cases": {},
    }
    for name, spec in cases.items():
        m = build()
        opt = spec["make"](m)
        losses, params_after, grads = [], [], []
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(m(x), targets)
            loss.backward()
            losses.append(float(loss.item()))
            grads.append({k: tolist(p.grad) for k, p in m.named_parameters()})
            opt.step()
            params_after.append({k: tolist(p) for k, p in m.named_parameters()})
        with torch.no_grad():
            final_loss = float(F.cross_entropy(m(x), targets).item())
        hp = {k: v for k, v in spec.items() if k != "make"}
        hp["groups"] = ("one group: all four parameters" if name == "adamw_all_decay"
                        else decay_groups)
        out["cases"][name] = {
            "hyperparams": hp,
            "losses": losses,
            "grads": grads,
            "params_after": params_after,
            "final_loss": final_loss,
        }

    # Hand-written replay of the adamw case (first step) as a cross-check.
    m = build()
    loss = F.cross_entropy(m(x), targets)
    loss.backward()
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    for k, p in m.named_parameters():
        wd = 0.1 if k == "linear.weight" else 0.0
        g = p.grad
        mt = (1 - b1) * g
        vt = (1 - b2) * g * g
        upd = p.detach() * (1 - lr * wd) - lr * (mt / (1 - b1)) / ((vt / (1 - b2)).sqrt() + eps)
        got = torch.tensor(out["cases"]["adamw"]["params_after"][0][k], dtype=F64)
        assert torch.allclose(upd, got, rtol=0, atol=1e-15), k

    out["_notes"] = (
        "Computed in float64 from float32-exact inputs. losses[k] is the loss at the "
        "parameters before step k+1; grads[k] the gradients used by step k+1 (before any "
        "weight decay is folded in); params_after[k] the parameters after step k+1; "
        "final_loss the loss after step 3. AdamW: p *= 1 - lr*wd, then the Adam update "
        "lr*mhat/(sqrt(vhat)+eps) with bias correction. Adam(L2): g += wd*p before the "
        "moments. SGD: g += wd*p; buf = g on the first step, else buf = momentum*buf + "
        "(1-dampening)*g; update = g + momentum*buf (nesterov) or buf; p -= lr*update."
    )
    return out


def dump(obj, path):
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=1)
        fh.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def main():
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_default_dtype(torch.float32)
    out_dir = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT
    os.makedirs(out_dir, exist_ok=True)
    dump(make_losses(), os.path.join(out_dir, "losses.json"))
    dump(make_schedules(), os.path.join(out_dir, "schedules.json"))
    dump(make_clip(), os.path.join(out_dir, "clip.json"))
    dump(make_optim(), os.path.join(out_dir, "optim_steps.json"))


if __name__ == "__main__":
    main()
