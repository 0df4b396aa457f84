"""Few-shot evaluation: mean accuracy over seeded episodes with a 95% CI."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine.methods.base import MetaLearner


@dataclass
class EpisodeScore:
    accuracy: float
    ci95: float
    episodes: int
    way: int
    shot: int
    query: int

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "ci95": self.ci95, "episodes": self.episodes,
                "way": self.way, "shot": self.shot, "query": self.query}


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation 95% interval (as the papers report)."""
    t = torch.tensor(values, dtype=torch.float64)
    if len(values) < 2:
        return float(t.mean()), 0.0
    return float(t.mean()), float(1.96 * t.std(unbiased=True) / math.sqrt(len(values)))


@torch.no_grad()
def evaluate_episodes(learner: MetaLearner, sampler, episodes: int, device: torch.device,
                      progress: Callable[[int, int], None] | None = None) -> EpisodeScore:
    """Adapt on each episode's support set and score its query set, for episodes 0..episodes-1."""
    learner.eval()
    accs: list[float] = []
    for i, ep in enumerate(sampler.iter_from(0, episodes)):
        ep = ep.to(device)
        if learner.head_only:
            # One forward over support and query together: same result (eval-mode BN), one call fewer.
            z = learner.backbone(torch.cat([ep.support_x, ep.query_x]))
            n = ep.support_x.shape[0]
            pred = learner.adapt_embeddings(z[:n], ep.support_y, ep.way).predict_embeddings(z[n:])
        else:
            pred = learner.adapt(ep.support_x, ep.support_y).predict(ep.query_x)
        accs.append((pred.labels == ep.query_y).float().mean().item())
        if progress is not None:
            progress(i + 1, episodes)
    mean, ci = mean_ci95(accs)
    return EpisodeScore(mean, ci, episodes, sampler.way, sampler.shot, sampler.query)
