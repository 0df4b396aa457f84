"""E-MAML, an ensemble of M MAMLs (the baseline of Kim et al. 2018): M starts, each
meta-trained as its own MAML and adapted alone; predictions average the M adapted
networks, and their disagreement is the epistemic uncertainty (engine.methods.particles)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.methods.particles import ParticleLearner


class EMAML(ParticleLearner):
    name = "emaml"
    description = "E-MAML: an ensemble of independently adapted MAMLs; their disagreement is the epistemic uncertainty"

    def meta_loss(self, episode) -> tuple[Tensor, dict[str, float]]:
        steps, second = self.config.inner_steps, not self.config.first_order
        logits = []
        with torch.enable_grad():
            for m in range(self.config.particles):
                with self.particle(m):
                    trail, stats = self.inner_loop(episode.support_x, episode.support_y, episode.way, steps, second)
                logits.append(self.query_logits(trail[-1], stats[-1], episode.query_x))
        # Each particle learns as its own MAML would; the ensemble is only read.
        loss = torch.stack([F.cross_entropy(lg, episode.query_y) for lg in logits]).mean()
        with torch.no_grad():
            _, log_avg = self.ensemble_loss(torch.stack(logits), episode.query_y)
        acc = (log_avg.argmax(1) == episode.query_y).float().mean()
        return loss, {"loss": float(loss.detach()), "acc": float(acc)}
