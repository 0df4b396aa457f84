"""Few-shot evaluation over seeded episodes: accuracy, calibration and out-of-episode
detection, each with a 95% CI.

Out-of-episode queries (``ood=True``): each episode also draws as many queries as it has
from classes outside the episode (episode i's own stream, so the in-episode figures are
those of a run without them), and every score the method gives is judged on telling
them apart (engine/training/ood.py).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine.methods.base import MetaLearner, Prediction
from engine.training.metrics import CalibrationTally, mean_ci95
from engine.training.ood import OODTally, prediction_scores

__all__ = ["EpisodeScore", "evaluate_episodes", "mean_ci95"]


@dataclass
class EpisodeScore:
    """Metrics over ``episodes`` episodes (see engine.training.metrics); ``adapt_ms``: mean
    time to adapt to one episode's support set."""

    accuracy: float
    ci95: float
    episodes: int
    way: int
    shot: int
    query: int
    ece: float = 0.0
    ece_ci95: float = 0.0
    nll: float = 0.0
    nll_ci95: float = 0.0
    brier: float = 0.0
    brier_ci95: float = 0.0
    adapt_ms: float = 0.0
    tally: CalibrationTally | None = None
    ood: dict[str, tuple[float, float]] | None = None  # score -> (AUROC, its 95% CI half-width)

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "ci95": self.ci95, "ece": self.ece, "ece_ci95": self.ece_ci95,
                "nll": self.nll, "nll_ci95": self.nll_ci95, "brier": self.brier, "brier_ci95": self.brier_ci95,
                "adapt_ms": self.adapt_ms, "episodes": self.episodes, "way": self.way, "shot": self.shot,
                "query": self.query,
                **({"ood_auroc": {k: {"auroc": m, "ci95": c} for k, (m, c) in self.ood.items()}}
                   if self.ood is not None else {})}


def evaluate_episodes(learner: MetaLearner, sampler, episodes: int, device: torch.device,
                      progress: Callable[[int, int], None] | None = None, ood: bool = False) -> EpisodeScore:
    """Adapt on each episode's support set and score its query set, for episodes 0..episodes-1
    (``ood``: and out-of-episode queries, see the module doc)."""
    learner.eval()
    tally = CalibrationTally()
    ood_tally = OODTally() if ood else None
    adapt_s = 0.0
    for i, ep in enumerate(sampler.iter_from(0, episodes)):
        ep = ep.to(device)
        outside = sampler.outside_images(i, ep.classes, ep.query_x.shape[0]).to(device) if ood else None
        pred, pred_out, seconds = _predict(learner, ep, outside)
        adapt_s += seconds
        tally.add(pred.probs.detach().float().cpu().numpy(), ep.query_y.cpu().numpy())
        if ood_tally is not None and pred_out is not None:
            ood_tally.add(prediction_scores(pred), prediction_scores(pred_out))
        if progress is not None:
            progress(i + 1, episodes)
    s = tally.summary()
    return EpisodeScore(s["accuracy"], s["ci95"], episodes, sampler.way, sampler.shot, sampler.query,
                        ece=s["ece"], ece_ci95=s["ece_ci95"], nll=s["nll"], nll_ci95=s["nll_ci95"],
                        brier=s["brier"], brier_ci95=s["brier_ci95"],
                        adapt_ms=1e3 * adapt_s / max(1, episodes), tally=tally,
                        ood=ood_tally.summary() if ood_tally is not None else None)


def _predict(learner: MetaLearner, ep, outside: torch.Tensor | None
             ) -> tuple[Prediction, Prediction | None, float]:
    """The episode's query predictions, the outside images' (same task), and the seconds
    adapting took."""
    n = ep.support_x.shape[0]
    extra = outside is not None and outside.numel() > 0
    if not learner.adapts_backbone:
        # One forward over support and queries together: same result (eval-mode BN), one call fewer.
        z = learner.embed(torch.cat([ep.support_x, ep.query_x, *([outside] if extra else [])]))
        t0 = time.perf_counter()
        predictor = learner.adapt_embeddings(z[:n], ep.support_y, ep.way)
        seconds = time.perf_counter() - t0
        q = ep.query_x.shape[0]
        return (predictor.predict_embeddings(z[n:n + q]),
                predictor.predict_embeddings(z[n + q:]) if extra else None, seconds)
    t0 = time.perf_counter()
    predictor = learner.adapt(ep.support_x, ep.support_y, ep.way)  # owns its grad mode (inner loops)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        return predictor.predict(ep.query_x), (predictor.predict(outside) if extra else None), seconds
