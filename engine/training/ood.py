"""Out-of-episode detection: how well each uncertainty score tells images of the
episode's classes from images of classes outside it ("none of these").

Each episode scores its own queries and as many queries from other classes; a score's
AUROC is the probability that a random outside image is ranked more uncertain than a
random inside one (0.5: no better than chance, 1: perfect), computed per episode
(Mann-Whitney, ties counted half) and averaged, with a 95% interval over episodes as
for accuracy. Scores whose small values mean uncertain (margin) are negated first, so
every AUROC reads the same way; ``confidence`` (the top probability) is always there.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.methods import uncertainty
from engine.training.metrics import mean_ci95


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(outside > inside) + P(tie) / 2 from the two samples' scores (higher = more unusual)."""
    inside, outside = np.asarray(inside, np.float64), np.asarray(outside, np.float64)
    if inside.size == 0 or outside.size == 0:
        return float("nan")
    both = np.concatenate([inside, outside])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(both.size, dtype=np.float64)
    sorted_values = both[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_values, return_index=True, return_counts=True)
    mean_rank = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(mean_rank, counts)
    u = ranks[inside.size:].sum() - outside.size * (outside.size + 1) / 2.0
    return float(u / (inside.size * outside.size))


def unusualness(name: str, values: np.ndarray) -> np.ndarray:
    """``values`` of score ``name`` oriented so that higher means more uncertain."""
    if name == "confidence":
        return -values
    return values if uncertainty.score(name).descending else -values


@dataclass
class OODTally:
    """Per-score AUROC over episodes; :meth:`summary` gives {score: (mean, ci95)}."""

    per_score: dict[str, list[float]] = field(default_factory=dict)

    def add(self, inside: dict[str, np.ndarray], outside: dict[str, np.ndarray]) -> None:
        """One episode: each score's values on its own queries and on the outside ones."""
        for name in inside:
            value = auroc(unusualness(name, inside[name]), unusualness(name, outside[name]))
            if np.isfinite(value):
                self.per_score.setdefault(name, []).append(value)

    def summary(self) -> dict[str, tuple[float, float]]:
        return {name: mean_ci95(v) for name, v in self.per_score.items()}


def prediction_scores(prediction) -> dict[str, np.ndarray]:
    """A Prediction's scores as arrays, with its confidence."""
    out = {name: v.detach().float().cpu().numpy() for name, v in prediction.scores.items()}
    out["confidence"] = prediction.confidence.detach().float().cpu().numpy()
    return out
