"""Meta-SGD (Li, Zhou, Chen & Li 2017): MAML whose inner learning rate is itself
meta-learned, one rate per parameter element (a direction as well as a size)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from engine.methods.gradient_base import GradientConfig, GradientLearner


class MetaSGD(GradientLearner):
    name = "metasgd"
    description = "Meta-SGD: MAML with a learned learning rate for every weight (Li et al. 2017)"

    def __init__(self, backbone: nn.Module, config: GradientConfig | None = None, **options):
        super().__init__(backbone, config, **options)
        rate = float(self.config.inner_lr)
        # One rate tensor per parameter, shaped like it; the head's like its one row (it is repeated per class).
        shapes = [p.shape for _, p in backbone.named_parameters()] + [self.head_weight.shape, self.head_bias.shape]
        self.element_lrs = nn.ParameterList([nn.Parameter(torch.full(s, rate)) for s in shapes])

    def rates(self, step: int, names: list[str]) -> list[Tensor | float]:
        index = {n: k for k, n in enumerate(self.param_names)}
        out: list[Tensor | float] = []
        for n in names:
            rate = self.element_lrs[index[n]]
            out.append(rate.unsqueeze(0) if n == "head.weight" else rate)  # broadcast over the classes
        return out
