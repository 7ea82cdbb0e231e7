#!/usr/bin/env python3
"""Make golden values and gradients of sentence-transformers' embedding losses.

Usage (from the repository root):
    python scripts/golden/make_embedding_loss_goldens.py [OUT]

OUT defaults to crates/graft-train/tests/golden/training/embedding_losses.json, which was made with
sentence-transformers 6.3.0 (torch 2.15.0, CPU); the versions that made it are under "meta".

The losses are sentence-transformers' own classes, not re-implementations, called through their
`compute_loss_from_embeddings(embeddings, labels)` (the method their `forward` calls once the
model has embedded each text column); the model they are built with is never called:
  - MultipleNegativesRankingLoss (default scale 20, cos_sim, directions ("query_to_doc",),
    partition_mode "joint", no hardness weighting, gather_across_devices False): for anchor i the
    candidates are all positives of the batch, then all negatives (column-major: positive 0..n-1,
    negative 0..n-1), logits = scale * cos, loss = mean_i(logsumexp_j(logits_ij) - logits_ii).
    cos_sim normalises each row with F.normalize (x / max(|x|, 1e-12)).
  - CosineSimilarityLoss (MSELoss, identity transformation): mean((cos(u, v) - label)^2), with
    torch.cosine_similarity (eps 1e-8).
  - TripletLoss (TripletDistanceMetric.EUCLIDEAN, margin 5 by default):
    mean(relu(|a - p| - |a - n| + margin)), |x| = torch.linalg.vector_norm, no eps.

Each case: `embeddings` holds examples * texts rows of dim floats in example-major order (row
e * texts + j is text j of example e: anchor, positive[, negative]); `grad` is d value / d
embeddings in the same layout; `labels` holds the cosine_similarity targets (else null); `value`
is the loss as sentence-transformers returns it (a mean over the examples). Inputs are multiples
of 1/256 (embeddings) and 1/32 (labels), so they are exact in f32 and short in decimal; the losses
and gradients are computed in float64. For the triplet cases `hinge` lists each example's
|a - p| - |a - n| + margin before the relu (a negative one is a zero term with zero gradient);
`zero_terms` lists those examples. Seeded (torch.Generator per case); needs no network access.
"""
import json
import os
import sys

import sentence_transformers
import torch
from torch import nn
from sentence_transformers.sentence_transformer.losses import (
    CosineSimilarityLoss,
    MultipleNegativesRankingLoss,
    TripletLoss,
)

OUT = "crates/graft-train/tests/golden/training/embedding_losses.json"


def draw(seed, rows, dim, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, dim, generator=g, dtype=torch.float64) * scale
    return torch.round(x * 256) / 256


def case(name, kind, texts, examples, dim, seed, params, scale=1.0, labels=None):
    stub = nn.Identity()  # the losses keep a model; these calls never run it
    if kind == "multiple_negatives_ranking":
        loss_fn = MultipleNegativesRankingLoss(stub, **params)
    elif kind == "cosine_similarity":
        loss_fn = CosineSimilarityLoss(stub)
    else:
        loss_fn = TripletLoss(stub, triplet_margin=params["margin"])
    emb = draw(seed, examples * texts, dim, scale).requires_grad_(True)
    columns = list(emb.view(examples, texts, dim).unbind(1))  # one (examples, dim) tensor per text
    target = torch.tensor(labels, dtype=torch.float64) if labels is not None else None
    value = loss_fn.compute_loss_from_embeddings(columns, target)
    (grad,) = torch.autograd.grad(value, emb)
    out = {
        "name": name,
        "loss": kind,
        "texts": texts,
        "examples": examples,
        "dim": dim,
        "params": params if kind != "cosine_similarity" else {},
        "embeddings": emb.detach().tolist(),
        "labels": labels,
        "value": value.item(),
        "grad": grad.tolist(),
    }
    if kind == "triplet":
        with torch.no_grad():
            a, p, n = columns
            hinge = (torch.linalg.vector_norm(a - p, dim=-1) - torch.linalg.vector_norm(a - n, dim=-1)
                     + params["margin"])
        # keep clear of the kink, where the gradient is ambiguous
        assert hinge.abs().min() > 0.05, (name, hinge)
        out["hinge"] = hinge.tolist()
        out["zero_terms"] = [i for i, h in enumerate(hinge.tolist()) if h <= 0]
    return out


def dump(obj):
    """JSON with one line per embedding or gradient row, to keep the committed file short."""
    lines = ["{"]
    lines.append(f' "meta": {json.dumps(obj["meta"])},')
    lines.append(' "cases": [')
    for k, c in enumerate(obj["cases"]):
        lines.append("  {")
        items = list(c.items())
        for i, (key, value) in enumerate(items):
            end = "," if i + 1 < len(items) else ""
            if key in ("embeddings", "grad"):
                rows = ",\n".join("    " + json.dumps(r) for r in value)
                lines.append(f'   "{key}": [\n{rows}\n   ]{end}')
            else:
                lines.append(f'   "{key}": {json.dumps(value)}{end}')
        lines.append("  }" + ("," if k + 1 < len(obj["cases"]) else ""))
    lines.append(" ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else OUT
    torch.set_num_threads(1)
    labels_g = torch.Generator().manual_seed(104)
    sts_labels = (torch.round(torch.rand(5, generator=labels_g, dtype=torch.float64) * 32) / 32).tolist()
    cases = [
        case("mnrl_pairs", "multiple_negatives_ranking", 2, 4, 8, 101, {"scale": 20.0}),
        case("mnrl_hard_negatives", "multiple_negatives_ranking", 3, 4, 8, 102, {"scale": 20.0}),
        case("mnrl_pairs_scale10", "multiple_negatives_ranking", 2, 3, 8, 103, {"scale": 10.0}),
        case("cosine_similarity", "cosine_similarity", 2, 5, 8, 104, {}, labels=sts_labels),
        case("triplet_margin5", "triplet", 3, 4, 8, 105, {"margin": 5.0}),
        # embeddings drawn at 1.5 times the scale, so |a - p| - |a - n| spreads over several units
        # and margin 1 leaves examples 1 and 2 with a negative hinge (zero terms, zero gradient;
        # see "zero_terms"), examples 0 and 3 with a positive one
        case("triplet_margin1_some_zero", "triplet", 3, 4, 8, 116, {"margin": 1.0}, scale=1.5),
    ]
    zero = cases[-1]["zero_terms"]
    assert zero == [1, 2], cases[-1]["hinge"]
    obj = {
        "meta": {
            "generator": "scripts/golden/make_embedding_loss_goldens.py",
            "sentence_transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
            "compute_dtype": "float64 (inputs are exact float32 values)",
            "layout": "row e*texts+j is text j (anchor, positive, negative) of example e",
        },
        "cases": cases,
    }
    with open(out_path, "w", encoding="utf-8") as fh:
        fh.write(dump(obj))
    for c in cases:
        print(c["name"], c["value"], c.get("zero_terms", ""))


if __name__ == "__main__":
    main()
