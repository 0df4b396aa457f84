"""Few-shot evaluation over seeded episodes: accuracy and calibration, each with a 95% CI."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine.methods.base import MetaLearner
from engine.training.metrics import CalibrationTally, mean_ci95

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

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "ci95": self.ci95, "ece": self.ece, "ece_ci95": self.ece_ci95,
                "nll": self.nll, "nll_ci95": self.nll_ci95, "brier": self.brier, "brier_ci95": self.brier_ci95,
                "adapt_ms": self.adapt_ms, "episodes": self.episodes, "way": self.way, "shot": self.shot,
                "query": self.query}


def evaluate_episodes(learner: MetaLearner, sampler, episodes: int, device: torch.device,
                      progress: Callable[[int, int], None] | None = None) -> EpisodeScore:
    """Adapt on each episode's support set and score its query set, for episodes 0..episodes-1."""
    learner.eval()
    tally = CalibrationTally()
    adapt_s = 0.0
    for i, ep in enumerate(sampler.iter_from(0, episodes)):
        ep = ep.to(device)
        if not learner.adapts_backbone:
            # One forward over support and query together: same result (eval-mode BN), one call fewer.
            z = learner.embed(torch.cat([ep.support_x, ep.query_x]))
            n = ep.support_x.shape[0]
            t0 = time.perf_counter()
            predictor = learner.adapt_embeddings(z[:n], ep.support_y, ep.way)
            adapt_s += time.perf_counter() - t0
            pred = predictor.predict_embeddings(z[n:])
        else:
            t0 = time.perf_counter()
            predictor = learner.adapt(ep.support_x, ep.support_y, ep.way)  # owns its grad mode (inner loops)
            adapt_s += time.perf_counter() - t0
            with torch.no_grad():
                pred = predictor.predict(ep.query_x)
        tally.add(pred.probs.detach().float().cpu().numpy(), ep.query_y.cpu().numpy())
        if progress is not None:
            progress(i + 1, episodes)
    s = tally.summary()
    return EpisodeScore(s["accuracy"], s["ci95"], episodes, sampler.way, sampler.shot, sampler.query,
                        ece=s["ece"], ece_ci95=s["ece_ci95"], nll=s["nll"], nll_ci95=s["nll_ci95"],
                        brier=s["brier"], brier_ci95=s["brier_ci95"],
                        adapt_ms=1e3 * adapt_s / max(1, episodes), tally=tally)
