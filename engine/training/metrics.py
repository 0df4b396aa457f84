"""How good and how honest a model's probabilities are over many episodes.

- accuracy: the share of queries whose most probable class is right;
- ECE (expected calibration error, 15 equal-width confidence bins): the gap between
  the confidence a model states and how often it is right, averaged over all queries;
  0 is perfectly calibrated;
- NLL: the mean negative log-probability of the right class (nats);
- Brier score: the mean squared distance between the probability vector and the
  one-hot truth, summed over classes (0 best, 2 worst).

Each comes with the half-width of its 95% confidence interval over episodes (the
episode is the unit that is sampled): the normal approximation for the per-episode
means, as papers report accuracy; for ECE, which pools queries across episodes and
is not a mean of per-episode values, 1.96 bootstrap standard errors over episodes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

ECE_BINS = 15
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0


def mean_ci95(values: list[float] | np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation 95% interval."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return (float(v.mean()) if v.size else 0.0), 0.0
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(v.size))


def bin_of(confidence: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Equal-width bin of each confidence: [0, 1/b), ..., [(b-1)/b, 1]."""
    return np.minimum((np.asarray(confidence) * bins).astype(np.int64), bins - 1)


def ece_of(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    b = bin_of(confidence, bins)
    n = np.bincount(b, minlength=bins)
    gap = np.abs(np.bincount(b, confidence, bins) - np.bincount(b, correct.astype(np.float64), bins))
    return float(gap.sum() / max(1, n.sum()))


@dataclass
class CalibrationTally:
    """Adds up episodes' predictions; :meth:`summary` gives the metrics with their CIs."""

    bins: int = ECE_BINS
    accuracy: list[float] = field(default_factory=list)
    nll: list[float] = field(default_factory=list)
    brier: list[float] = field(default_factory=list)
    # Per episode and bin: queries, summed confidence, summed correctness (for the bootstrap).
    bin_counts: list[np.ndarray] = field(default_factory=list)
    bin_conf: list[np.ndarray] = field(default_factory=list)
    bin_correct: list[np.ndarray] = field(default_factory=list)

    def add(self, probs: np.ndarray, labels: np.ndarray) -> None:
        """One episode: ``probs`` (queries, classes), ``labels`` (queries,)."""
        probs = np.asarray(probs, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.int64)
        rows = np.arange(len(labels))
        conf = probs.max(axis=1)
        correct = (probs.argmax(axis=1) == labels).astype(np.float64)
        self.accuracy.append(float(correct.mean()))
        self.nll.append(float(-np.log(np.clip(probs[rows, labels], 1e-12, 1.0)).mean()))
        onehot = np.zeros_like(probs)
        onehot[rows, labels] = 1.0
        self.brier.append(float(((probs - onehot) ** 2).sum(axis=1).mean()))
        b = bin_of(conf, self.bins)
        self.bin_counts.append(np.bincount(b, minlength=self.bins).astype(np.float64))
        self.bin_conf.append(np.bincount(b, conf, self.bins))
        self.bin_correct.append(np.bincount(b, correct, self.bins))

    def reliability(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per bin: query count, mean confidence, accuracy (NaN where empty)."""
        n = np.sum(self.bin_counts, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return n, np.sum(self.bin_conf, axis=0) / n, np.sum(self.bin_correct, axis=0) / n

    def ece(self) -> tuple[float, float]:
        n = np.asarray(self.bin_counts)
        c = np.asarray(self.bin_conf)
        k = np.asarray(self.bin_correct)
        point = float(np.abs(c.sum(0) - k.sum(0)).sum() / max(1.0, n.sum()))
        episodes = len(n)
        if episodes < 2:
            return point, 0.0
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        picks = rng.integers(0, episodes, size=(BOOTSTRAP_SAMPLES, episodes))
        weights = np.zeros((BOOTSTRAP_SAMPLES, episodes))
        np.add.at(weights, (np.arange(BOOTSTRAP_SAMPLES)[:, None], picks), 1.0)
        gaps = np.abs(weights @ c - weights @ k).sum(axis=1) / np.maximum(1.0, weights @ n.sum(axis=1))
        return point, float(1.96 * gaps.std(ddof=1))

    def summary(self) -> dict[str, float]:
        acc, acc_ci = mean_ci95(self.accuracy)
        nll, nll_ci = mean_ci95(self.nll)
        brier, brier_ci = mean_ci95(self.brier)
        ece, ece_ci = self.ece()
        return {"accuracy": acc, "ci95": acc_ci, "ece": ece, "ece_ci95": ece_ci, "nll": nll, "nll_ci95": nll_ci,
                "brier": brier, "brier_ci95": brier_ci}
