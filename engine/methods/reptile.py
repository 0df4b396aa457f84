"""Reptile (Nichol, Achiam & Schulman 2018): no meta-gradient at all. Each task is
learned by plain gradient steps on all its images from the shared start, and the
start moves towards the weights each task ended with:
``theta <- theta + epsilon * mean_i(theta_i - theta)``, where epsilon is the outer
optimizer's learning rate (the difference is handed to it as the gradient). At test
time the start is adapted to the examples like MAML's.

The logit scale (calibration, engine.methods.gradient_base) is the one parameter
learned by gradient: from the query loss of the batch's first task, after adapting on
its support set, so it is fitted on images the inner loop never saw. The MAML++
options have no meaning without a meta-gradient and are refused."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from engine.errors import FewShotError
from engine.methods.gradient_base import GradientConfig, GradientLearner

REFUSED = ("learn_inner_lr", "multi_step_loss", "per_step_bn")


class Reptile(GradientLearner):
    name = "reptile"
    description = "Reptile: the start moves towards the weights each task learns on its own (Nichol et al. 2018)"

    def __init__(self, backbone: nn.Module, config: GradientConfig | None = None, **options):
        super().__init__(backbone, config, **options)
        on = [f"--{k.replace('_', '-')}" for k in REFUSED if getattr(self.config, k)]
        if on:
            raise FewShotError(f"reptile learns no meta-gradient, so {', '.join(on)} cannot apply; drop them "
                               "or use --method maml")

    def meta_loss(self, episode) -> tuple[Tensor, dict[str, float]]:
        """The query loss after adapting on the support set (first order): what Reptile
        is judged by, for logging; its update is :meth:`outer_step`."""
        with torch.enable_grad():
            trail, stats = self.inner_loop(episode.support_x, episode.support_y, episode.way,
                                           self.config.inner_steps, second_order=False)
            self.track_start_stats(stats[0])
            logits = self.query_logits(trail[-1], stats[-1], episode.query_x)
            loss = torch.nn.functional.cross_entropy(logits, episode.query_y)
        acc = (logits.argmax(1) == episode.query_y).float().mean()
        return loss, {"loss": float(loss.detach()), "acc": float(acc)}

    def outer_step(self, episodes: list, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        optimizer.zero_grad(set_to_none=True)
        meta = dict(self.backbone.named_parameters())
        sums = {n: torch.zeros_like(p) for n, p in meta.items()}
        head_w, head_b = torch.zeros_like(self.head_weight), torch.zeros_like(self.head_bias)
        for ep in episodes:
            x = torch.cat([ep.support_x, ep.query_x])
            y = torch.cat([ep.support_y, ep.query_y])
            with torch.enable_grad():
                trail, _ = self.inner_loop(x, y, ep.way, self.config.inner_steps, second_order=False)
            end = trail[-1]
            for n in sums:
                sums[n] += (meta[n] - end[n]).detach()
            # The head row is repeated per class: it moves towards the mean of the rows the task learned.
            head_w += (self.head_weight - end["head.weight"].mean(0)).detach()
            head_b += (self.head_bias - end["head.bias"].mean()).detach()
        # What Reptile is judged by, logged from the batch's first task only (another inner loop per task
        # would double the cost of a step): query loss and accuracy after adapting on its support set.
        loss, logged = self.meta_loss(episodes[0])
        (scale_grad,) = torch.autograd.grad(loss, [self.log_scale])
        b = len(episodes)
        for n, p in meta.items():
            p.grad = sums[n] / b
        self.head_weight.grad, self.head_bias.grad = head_w / b, head_b / b
        self.log_scale.grad = scale_grad
        optimizer.step()
        self.outer_steps += 1
        return logged
