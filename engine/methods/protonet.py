"""Prototypical Networks (Snell, Swersky & Zemel 2017).

Each class is the mean of its support embeddings; a query's class
probabilities are a softmax over negative distances to the prototypes, at a
temperature chosen per task (engine.methods.calibration) so that they are
calibrated. Adaptation touches no weights, so it runs on cached embeddings in
milliseconds -- which is what makes "every correction re-adapts" possible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.errors import FewShotError
from engine.methods.base import MetaLearner, MethodConfig, Prediction, Predictor, check_support, eval_forward
from engine.methods.calibration import Temperature, choose_temperature
from engine.methods.prototypes import (DISTANCES, ood_scale, pairwise_distance, proto_outputs, prototypes_of,
                                       support_spread)

__all__ = ["ProtoNet", "ProtoNetConfig", "ProtoHead", "ProtoHeadModule", "pairwise_distance", "prototypes_of",
           "support_spread"]

# Training temperatures when none is given: squared Euclidean distances are large, and
# cosine distances live in [0, 2], where an unscaled softmax is nearly flat (10 is the
# usual scale, Chen et al. 2019).
TRAIN_TEMPERATURE = {"euclidean": 1.0, "cosine": 10.0}
OUTPUTS = ("probs", "entropy", "ood_score")


@dataclass
class ProtoNetConfig(MethodConfig):
    distance: str = field(default="euclidean", metadata={
        "help": "distance between embeddings and prototypes", "choices": DISTANCES})
    temperature: float | None = field(default=None, metadata={
        "help": "softmax temperature (logits = -temperature x distance) to train with; a trained model keeps the "
                "one it learned. Default: 1 for euclidean, 10 for cosine; untrained heads on pretrained features "
                "use a scale rule (docs/CALIBRATION.md)"})
    learn_temperature: bool | None = field(default=None, metadata={
        "help": "learn the temperature during meta-training (default: yes for cosine, no for euclidean); "
                "off with no temperature marks a head nothing trained (the scale rule chooses)"})
    calibrate: bool = field(default=True, metadata={
        "help": "fit each task's temperature on its own examples when a class has two or more"})

    def validate(self) -> None:
        if self.distance not in DISTANCES:
            raise FewShotError(f"unknown distance '{self.distance}'; choose one of {', '.join(DISTANCES)}")
        if self.temperature is not None and not (0 < self.temperature < 1e6):
            raise FewShotError(f"temperature must be a positive number, not {self.temperature}")


class ProtoHeadOnly(nn.Module):
    """An adapted ProtoNet task over embeddings: (N, D) -> ``(probs, entropy, ood_score)``,
    the prototypes and the spread as constant buffers."""

    output_names = OUTPUTS

    def __init__(self, prototypes: Tensor, spread: Tensor, distance: str, temperature: float):
        super().__init__()
        self.register_buffer("prototypes", prototypes.detach().clone())
        self.register_buffer("spread", spread.detach().clone().reshape(()))
        self.distance = distance
        self.temperature = float(temperature)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        d = pairwise_distance(z.to(self.prototypes.dtype), self.prototypes, self.distance)
        return proto_outputs(d, self.temperature, self.spread)


class ProtoHeadModule(nn.Module):
    """An adapted ProtoNet task as one module (the ONNX export's graph): normalized pixels
    -> ``(probs, entropy, ood_score)``."""

    output_names = OUTPUTS

    def __init__(self, backbone: nn.Module, head: ProtoHeadOnly):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, pixels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.head(self.backbone(pixels))


class ProtoHead(Predictor):
    """An adapted ProtoNet task over embeddings: prototypes, the support's spread, and
    the temperature (``calibration`` says how it was chosen)."""

    scores = ("entropy", "margin", "ood_score")

    def __init__(self, prototypes: Tensor, spread: Tensor, distance: str, temperature: float,
                 backbone: nn.Module | None = None, calibration: Temperature | None = None):
        self.prototypes = prototypes
        self.spread = spread
        self.distance = distance
        self.temperature = float(temperature)
        self.backbone = backbone
        self.calibration = calibration or Temperature(self.temperature, "fixed")
        self.class_count = prototypes.shape[0]

    @torch.no_grad()
    def predict_embeddings(self, z: Tensor) -> Prediction:
        z = z.to(self.prototypes.device)
        d = pairwise_distance(z.to(self.prototypes.dtype), self.prototypes, self.distance)
        probs, entropy, ood = proto_outputs(d, self.temperature, self.spread)
        return Prediction.from_probs(probs, entropy=entropy, ood_score=ood)

    def head_module(self) -> ProtoHeadOnly:
        return ProtoHeadOnly(self.prototypes, self.spread, self.distance, self.temperature).eval()

    def as_module(self, backbone: nn.Module | None = None) -> ProtoHeadModule:
        backbone = backbone if backbone is not None else self.backbone
        if backbone is None:
            raise FewShotError("this predictor was adapted from embeddings only; give the backbone to export with")
        return ProtoHeadModule(backbone, self.head_module()).eval()

    @torch.no_grad()
    def predict(self, x: Tensor) -> Prediction:
        if self.backbone is None:
            raise FewShotError("this predictor was adapted from embeddings only; use predict_embeddings()")
        return self.predict_embeddings(eval_forward(self.backbone, x.to(self.prototypes.device)))


class ProtoNet(MetaLearner):
    name = "protonet"
    Config = ProtoNetConfig
    adapts_backbone = False
    scores = ProtoHead.scores
    description = "Prototypical Networks: each class is the mean of its examples' embeddings (Snell et al. 2017)"

    def __init__(self, backbone: nn.Module, config: ProtoNetConfig | None = None, **options):
        if config is None:
            config = ProtoNetConfig.from_dict(options, "ProtoNet")
        elif options:
            raise TypeError("give either a config or options, not both")
        super().__init__(backbone, config)
        self.distance = config.distance
        learn = config.learn_temperature if config.learn_temperature is not None else config.distance == "cosine"
        start = config.temperature if config.temperature is not None else TRAIN_TEMPERATURE[config.distance]
        self.learn_temperature = learn
        if learn:
            self.log_temperature = nn.Parameter(torch.tensor(math.log(start)))
        else:
            self._fixed_temperature = start

    @property
    def train_temperature(self) -> Tensor | float:
        return self.log_temperature.exp() if self.learn_temperature else self._fixed_temperature

    def learned_temperature(self) -> float | None:
        """The meta-trained temperature, or None for a head nothing trained (its config
        gives none and it learns none): then the scale rule chooses."""
        if self.learn_temperature:
            return float(self.log_temperature.detach().exp())
        return self.config.temperature

    def saved_config(self) -> ProtoNetConfig:
        return replace(self.config, temperature=float(torch.as_tensor(self.train_temperature).detach()),
                       learn_temperature=self.learn_temperature)

    def meta_loss(self, episode) -> tuple[Tensor, dict[str, float]]:
        n_support = episode.support_x.shape[0]
        z = self.backbone(torch.cat([episode.support_x, episode.query_x]))
        protos = prototypes_of(z[:n_support], episode.support_y, episode.way)
        logits = -pairwise_distance(z[n_support:], protos, self.distance) * self.train_temperature
        loss = F.cross_entropy(logits, episode.query_y)
        acc = (logits.argmax(1) == episode.query_y).float().mean()
        return loss, {"loss": loss.item(), "acc": acc.item()}

    @torch.no_grad()
    def adapt_embeddings(self, support_z: Tensor, support_y: Tensor, n_classes: int | None = None) -> ProtoHead:
        n_classes = check_support(support_y, n_classes, support_z.shape[0])
        support_z = support_z.float()
        protos = prototypes_of(support_z, support_y, n_classes)
        spread = ood_scale(support_z, support_y, protos, self.distance)
        temperature = choose_temperature(support_z, support_y, n_classes, self.distance,
                                         self.learned_temperature(), fit=self.config.calibrate)
        return ProtoHead(protos, spread, self.distance, temperature.value, backbone=self.backbone,
                         calibration=temperature)
