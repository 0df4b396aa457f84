"""The temperature of a prototype head, chosen per task so its probabilities mean what they say.

A prototype head's probabilities are softmax(-T * distance). The distances' scale
depends on the backbone, the shot and the task, so no single T fits all: with
EfficientNet-Lite0 photos and T = 10, 10-way 5-shot tasks were right 79% of the
time but said 47% (ECE 0.32). Three sources, best first:

1. **Fitted on the support set** (some class has 2+ examples). Held-out folds: fold j
   leaves out the j-th example of every class that has more than one, builds the
   prototypes from the rest and classifies what it left out. Every class loses one
   example at once, so each fold is a fair (k-1)-shot task (leaving out one point
   at a time compares it with k-shot prototypes of the other classes, which sit
   closer to everything, and fits T far too low: 10 instead of 20 on 2-shot
   photos). T is fitted by maximum a posteriori over those held-out predictions
   (a log-normal prior around the default below, :data:`PRIOR_SIGMA`), then carried
   from k-1 to k shots by the ratio of the prototypes' spread (median distance
   between prototypes), which is how the right T grows with the shot.
2. **Learned in meta-training**: a ProtoNet trained by ``fewshot train`` carries the
   temperature it was trained with (learned with ``--learn-temperature``).
3. **Scale rule**, for heads on pretrained features that nothing trained (photos,
   ONNX feature extractors): T = :data:`KAPPA` / (median distance between the
   prototypes), which makes the logits independent of the features' scale.

How KAPPA and PRIOR_SIGMA were measured, and what they give, is in
docs/CALIBRATION.md (``benchmarks/bench_calibration.py``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from engine.methods.prototypes import pairwise_distance, prototype_scale, prototypes_of

#: Scale rule: logits = -KAPPA * distance / median prototype distance. Fitted (maximum
#: likelihood, 1-shot 2- to 6-way tasks) on a calibration set of GCompris photos, not
#: on the photos the results are reported on (docs/CALIBRATION.md).
KAPPA = 14.5
#: The outer learning rate, at least, of a learned temperature or logit scale: one number
#: that calibration hangs on, which at a fine-tuning rate (1e-4) a few thousand outer steps
#: could not move (methods' optimizer_groups).
SCALE_LR = 1e-2
#: Prior on log T around the default: one standard deviation is a factor e = 2.7. A narrower
#: prior (0.5) was 0.01 better calibrated on 2-shot photos, but when the default was 20x off
#: (a domain unlike the calibration photos) it left ECE at 0.19 where this one gets 0.06.
PRIOR_SIGMA = 1.0
#: At most this many held-out predictions enter the fit (enough for a stable T; bounds
#: the cost when classes have hundreds of examples).
MAX_HELD_OUT = 256
_SEARCH_HALF_WIDTH = 6.0  # log-space: e^6 = 400x either way of the prior
_GRID_STEP = 0.5
_GOLDEN_STEPS = 24


@dataclass(frozen=True)
class Temperature:
    """The temperature a head uses, and where it came from (``fitted``, ``learned``:
    from meta-training, ``rule``: the scale rule, ``single``: one class, nothing to
    calibrate), with the number of held-out support examples a fit used."""

    value: float
    source: str
    held_out: int = 0

    def describe(self) -> str:
        if self.source == "fitted":
            return f"fitted on {self.held_out} held-out example{'s' if self.held_out != 1 else ''}"
        return {"learned": "learned in meta-training", "rule": "default for one example per class",
                "single": "one class: nothing to calibrate"}.get(self.source, self.source)


def rule_temperature(protos: Tensor, distance: str) -> float:
    scale = prototype_scale(protos, distance)
    return KAPPA / scale if scale is not None else 1.0


def choose_temperature(z: Tensor, y: Tensor, n_classes: int, distance: str, learned: float | None,
                       fit: bool = True) -> Temperature:
    """The head's temperature for support embeddings ``z`` with labels ``y`` (see the module doc).

    ``learned``: the meta-trained temperature, or None for untrained heads (scale rule).
    ``fit``: fit on held-out support examples where some class has two or more."""
    z = z.detach().double()
    protos = prototypes_of(z, y, n_classes)
    if n_classes < 2:
        return Temperature(learned if learned is not None else 1.0, "single")
    default = Temperature(learned, "learned") if learned is not None else Temperature(
        rule_temperature(protos, distance), "rule")
    counts = torch.bincount(y, minlength=n_classes)
    if not fit or int(counts.max()) < 2:
        return default
    held_d, held_y, scales = _held_out_folds(z, y, n_classes, counts, distance)
    full_scale = prototype_scale(protos, distance)
    ratio = (sum(scales) / len(scales)) / full_scale if scales and full_scale else 1.0
    # The prior sits where the result equals the default when the data say nothing.
    center = default.value / ratio
    fitted = _map_temperature(held_d, held_y, center)
    return Temperature(fitted * ratio, "fitted", int(held_y.numel()))


def held_out_folds(y: Tensor, n_classes: int, counts: Tensor) -> list[Tensor]:
    """The held-out indices of each fold: fold j holds out the j-th example (in support
    order) of every class that has more than one, up to :data:`MAX_HELD_OUT` in all."""
    rank = torch.empty_like(y)
    seen = torch.zeros(n_classes, dtype=torch.long)
    for i, c in enumerate(y.tolist()):  # j-th example of its class, in support order
        rank[i] = seen[c]
        seen[c] += 1
    folds, total = [], 0
    for j in range(int(counts.max())):
        held = (rank == j) & (counts[y] > 1)
        if not held.any() or total >= MAX_HELD_OUT:
            break
        folds.append(torch.nonzero(held).squeeze(1))
        total += len(folds[-1])
    return folds


def _held_out_folds(z: Tensor, y: Tensor, n_classes: int, counts: Tensor, distance: str
                    ) -> tuple[Tensor, Tensor, list[float]]:
    """Distances of the held-out examples of each fold to that fold's prototypes, their
    labels, and each fold's prototype scale."""
    sums = torch.zeros(n_classes, z.shape[1], dtype=z.dtype).index_add_(0, y, z)
    ds, ys, scales = [], [], []
    for idx in held_out_folds(y, n_classes, counts):
        part_sums, part_counts = sums.clone(), counts.to(z.dtype).clone()
        part_sums.index_add_(0, y[idx], -z[idx])
        part_counts.index_add_(0, y[idx], -torch.ones(len(idx), dtype=z.dtype))
        protos = part_sums / part_counts.clamp_min(1)[:, None]
        ds.append(pairwise_distance(z[idx], protos, distance))
        ys.append(y[idx])
        scale = prototype_scale(protos, distance)
        if scale is not None:
            scales.append(scale)
    return torch.cat(ds), torch.cat(ys), scales


def _map_temperature(d: Tensor, y: Tensor, center: float) -> float:
    """argmax over T of log p(y | softmax(-T d)) summed, plus a log-normal prior around ``center``."""
    rows = torch.arange(len(y))
    return map_scale(lambda t: float(torch.log_softmax(-d * t, dim=1)[rows, y].sum()), center)


def map_scale(log_likelihood: Callable[[float], float], center: float) -> float:
    """argmax over a positive scale t of ``log_likelihood(t)`` plus a log-normal prior
    (:data:`PRIOR_SIGMA`) around ``center``: a coarse grid over log t, then
    golden-section search around the best. Any head whose logits have one scale fits it
    this way (ProtoNet's temperature, bayes-proto's)."""
    u0 = math.log(max(center, 1e-12))

    def objective(u: float) -> float:
        return -log_likelihood(math.exp(u)) + (u - u0) ** 2 / (2 * PRIOR_SIGMA ** 2)

    grid = [u0 + k * _GRID_STEP for k in range(-int(_SEARCH_HALF_WIDTH / _GRID_STEP),
                                                  int(_SEARCH_HALF_WIDTH / _GRID_STEP) + 1)]
    best = min(grid, key=objective)
    lo, hi = best - _GRID_STEP, best + _GRID_STEP
    phi = (math.sqrt(5) - 1) / 2
    a, b = hi - phi * (hi - lo), lo + phi * (hi - lo)
    fa, fb = objective(a), objective(b)
    for _ in range(_GOLDEN_STEPS):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - phi * (hi - lo)
            fa = objective(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + phi * (hi - lo)
            fb = objective(b)
    return math.exp((lo + hi) / 2)
