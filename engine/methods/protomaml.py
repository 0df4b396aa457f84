"""Proto-MAML (Triantafillou et al. 2020): MAML whose head starts, for every task, as
the linear layer equivalent to a Prototypical Network on the support set
(weight 2c_k, bias -|c_k|^2 for prototype c_k), then takes the inner steps. The start
is already a good classifier for any number of classes; the steps refine it."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from engine.methods.gradient_base import GradientConfig, GradientLearner
from engine.methods.inner_loop import Weights
from engine.methods.prototypes import prototypes_of


class ProtoMAML(GradientLearner):
    name = "protomaml"
    description = "Proto-MAML: MAML whose head starts from the examples' prototypes (Triantafillou et al. 2020)"

    def __init__(self, backbone: nn.Module, config: GradientConfig | None = None, **options):
        super().__init__(backbone, config, **options)
        del self.head_weight, self.head_bias  # the prototypes are the head's start: no learned row

    def initial_weights(self, support_x: Tensor, support_y: Tensor, way: int, chunk: int | None = None) -> Weights:
        weights = self.net.backbone_weights()
        start = self.with_step_bn(weights, 0)
        z = torch.cat([self.support_embed(start, part)[0] for part in support_x.split(chunk or len(support_x))])
        protos = prototypes_of(z, support_y, way)
        weights["head.weight"] = 2 * protos
        weights["head.bias"] = -(protos * protos).sum(dim=1)
        return weights
