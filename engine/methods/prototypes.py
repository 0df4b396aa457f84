"""The math of prototype heads, written once.

ProtoNet's predictor, the labeler's cached scorer (engine.labeling.scoring) and the
ONNX export (a traced module) all call these functions, so the three cannot drift
apart. :func:`proto_outputs` takes its class axis as an argument: predictors keep
(queries, classes); the cached scorer keeps (classes, images), where per-image
reductions run down contiguous rows.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

DISTANCES = ("euclidean", "cosine")
#: With one example per class there is no within-class scatter to measure, so the OOD
#: score's unit (a class member's typical distance to its prototype) is taken as this
#: fraction of the median distance between the prototypes. Medians over 1-shot tasks on
#: data the reported results do not use (the omniglot model's background alphabets; the
#: GCompris calibration photos): benchmarks/bench_calibration.py fit-typical,
#: docs/CALIBRATION.md. The older rule (a fraction of the *closest* pair) put a typical
#: Omniglot query at 1.8 to 3.1 by the way, past the "unusual" flag for 43-81% of them.
ONE_SHOT_TYPICAL = {"euclidean": 0.244, "cosine": 0.842}


def pairwise_distance(z: Tensor, protos: Tensor, distance: str) -> Tensor:
    """(n, d) x (c, d) -> (n, c); squared Euclidean, or 1 - cosine similarity."""
    if distance == "euclidean":
        # The expanded form is one matmul; clamp undoes its rounding below zero.
        d = (z * z).sum(1, keepdim=True) - 2 * z @ protos.T + (protos * protos).sum(1)
        return d.clamp_min(0)
    return 1 - F.normalize(z, dim=1) @ F.normalize(protos, dim=1).T


def class_major_distance(protos: Tensor, z: Tensor, distance: str, z_sq_norms: Tensor | None = None,
                         z_unit: Tensor | None = None) -> Tensor:
    """(c, d) x (n, d) -> (c, n): :func:`pairwise_distance` transposed, in one ``addmm``,
    reusing the images' squared norms (euclidean) or unit rows (cosine) when given --
    the cached scorer keeps those for a project's whole embedding table."""
    if distance == "euclidean":
        sq = z_sq_norms if z_sq_norms is not None else (z * z).sum(1)
        d = torch.addmm((protos * protos).sum(1, keepdim=True), protos, z.T, alpha=-2.0)
        return d.add_(sq).clamp_min_(0)
    unit = z_unit if z_unit is not None else F.normalize(z, dim=1)
    return torch.addmm(torch.ones(1, 1, dtype=protos.dtype), F.normalize(protos, dim=1), unit.T, alpha=-1.0)


def prototypes_of(z: Tensor, y: Tensor, n_classes: int) -> Tensor:
    sums = torch.zeros(n_classes, z.shape[1], dtype=z.dtype, device=z.device).index_add_(0, y, z)
    counts = torch.bincount(y, minlength=n_classes).to(z.dtype).clamp_min(1)
    return sums / counts[:, None]


def prototype_scale(protos: Tensor, distance: str) -> float | None:
    """Median distance between distinct prototypes (None with fewer than two)."""
    c = protos.shape[0]
    if c < 2:
        return None
    d = pairwise_distance(protos.double(), protos.double(), distance)
    iu = torch.triu_indices(c, c, 1)
    value = float(d[iu[0], iu[1]].median())
    return value if value > 0 and math.isfinite(value) else None


def support_spread(z: Tensor, y: Tensor, protos: Tensor, distance: str) -> Tensor:
    """The typical distance of a class member to its prototype, from the support set.

    Within-class scatter where some class has 2+ examples (times n/(n-1): the
    prototype was fitted to those same points); with one shot everywhere,
    a quarter of the closest prototype pair's distance (the radius at which
    classes would touch); with a single 1-shot class, the embeddings' own scale.
    bayes-proto's variance prior uses it as it is; the OOD score's unit is
    :func:`ood_scale`, whose one-shot rule is measured.
    """
    n_classes = protos.shape[0]
    counts = torch.bincount(y, minlength=n_classes)
    multi = counts[y] > 1
    if multi.any():
        d_own = pairwise_distance(z[multi], protos, distance).gather(1, y[multi, None]).squeeze(1)
        n = counts[y[multi]].to(z.dtype)
        spread = (d_own * n / (n - 1)).mean()
    elif n_classes > 1:
        dp = pairwise_distance(protos, protos, distance)
        dp.fill_diagonal_(float("inf"))
        spread = dp.min() / 4 if distance == "euclidean" else dp.min() / 2
    else:
        spread = (z * z).sum(1).mean() if distance == "euclidean" else torch.tensor(0.5, dtype=z.dtype)
    return spread.clamp_min(1e-8)


def ood_scale(z: Tensor, y: Tensor, protos: Tensor, distance: str) -> Tensor:
    """What the OOD score divides by, so that a typical class member scores about 1:
    :func:`support_spread` when some class has two or more examples, else
    :data:`ONE_SHOT_TYPICAL` times the median distance between the prototypes."""
    counts = torch.bincount(y, minlength=protos.shape[0])
    scale = prototype_scale(protos, distance) if not (counts > 1).any() else None
    if scale is None:
        return support_spread(z, y, protos, distance)
    return torch.tensor(ONE_SHOT_TYPICAL[distance] * scale, dtype=z.dtype, device=z.device)


def proto_outputs(d: Tensor, temperature: float | Tensor, spread: float | Tensor, class_dim: int = 1
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """Probabilities, entropy and OOD score from distances ``d`` to the prototypes.

    ``probs`` = softmax(-temperature * d) over ``class_dim``. With a = logits - max
    (<= 0) and s = sum(exp a), the entropy is log s - sum(p * a): no log per entry, and
    accurate when distances are large. The OOD score is the distance to the nearest
    prototype over the support's spread (about 1 for a typical class member)."""
    a = d * (-temperature)
    a = a - a.amax(dim=class_dim, keepdim=True)
    e = a.exp()
    s = e.sum(dim=class_dim, keepdim=True)
    probs = e / s
    entropy = s.squeeze(class_dim).log() - (probs * a).sum(dim=class_dim)
    ood = d.amin(dim=class_dim) / spread
    return probs, entropy, ood

