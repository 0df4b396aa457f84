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
from engine.methods.calibration import SCALE_LR, Temperature, choose_temperature
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
        "help": "learn the temperature during meta-training (default: yes for cosine, and with an open-set "
                "weight, whose term moves the distances' scale; no for euclidean otherwise); "
                "off with no temperature marks a head nothing trained (the scale rule chooses)"})
    calibrate: bool = field(default=True, metadata={
        "help": "fit each task's temperature on its own examples when a class has two or more"})
    open_set_weight: float = field(default=0.0, metadata={
        "help": "meta-training only: weight of a term that ranks images of classes outside each episode (as many "
                "as its queries) farther from every prototype than the episode's own queries, which is what the "
                "unusualness score needs; 0 trains as Snell et al."})

    def validate(self) -> None:
        if self.distance not in DISTANCES:
            raise FewShotError(f"unknown distance '{self.distance}'; choose one of {', '.join(DISTANCES)}")
        if self.temperature is not None and not (0 < self.temperature < 1e6):
            raise FewShotError(f"temperature must be a positive number, not {self.temperature}")
        if not (0 <= self.open_set_weight < 1e6):
            raise FewShotError(f"open_set_weight must be 0 or more, not {self.open_set_weight}")


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


#: Sharpness of the ranking term's softplus, per unit of (nearest-prototype distance over
#: the median distance between prototypes); at 8 a pair 0.25 units apart in the right
#: order costs 0.13, in the wrong order 2.1.
RANKING_SHARPNESS = 8.0


def open_set_ranking(d: Tensor, n_query: int, protos: Tensor, distance: str) -> Tensor:
    """Mean over (own query, outside image) pairs of softplus(s * (own - outside)), each
    image's distance to its nearest prototype in units of the median distance between
    prototypes (the unit the unusualness score uses with one example per class): a
    smooth surrogate of 1 - AUROC of that score (Mann-Whitney), 0 when every outside
    image is well past every own one."""
    c = protos.shape[0]
    iu = torch.triu_indices(c, c, 1, device=protos.device)
    unit = pairwise_distance(protos, protos, distance)[iu[0], iu[1]].median().detach().clamp_min(1e-8)
    nearest = d.amin(1) / unit
    own, outside = nearest[:n_query], nearest[n_query:]
    return F.softplus(RANKING_SHARPNESS * (own[:, None] - outside[None, :])).mean()


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
        learn = config.learn_temperature
        if learn is None:
            # The open-set term spreads classes apart in distance; a temperature fixed at the
            # start would then be overconfident (20-way ECE 0.051 against 0.038 before it).
            learn = config.distance == "cosine" or config.open_set_weight > 0
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

    def optimizer_groups(self, lr: float) -> list[dict]:
        """A learned temperature learns at SCALE_LR at least (a fine-tuning rate would leave it where it started)."""
        if not self.learn_temperature:
            return super().optimizer_groups(lr)
        rest = [p for n, p in self.named_parameters() if n != "log_temperature"]
        return [{"params": rest, "lr": lr}, {"params": [self.log_temperature], "lr": max(lr, SCALE_LR)}]

    def outside_per_episode(self, way: int, query: int) -> int:
        return way * query if self.config.open_set_weight > 0 else 0

    def meta_loss(self, episode) -> tuple[Tensor, dict[str, float]]:
        n_support = episode.support_x.shape[0]
        outside = episode.outside_x if self.config.open_set_weight > 0 else None
        extra = [outside] if outside is not None and outside.numel() else []
        z = self.backbone(torch.cat([episode.support_x, episode.query_x, *extra]))
        protos = prototypes_of(z[:n_support], episode.support_y, episode.way)
        d = pairwise_distance(z[n_support:], protos, self.distance)
        n_query = episode.query_x.shape[0]
        logits = -d[:n_query] * self.train_temperature
        loss = F.cross_entropy(logits, episode.query_y)
        # "loss" stays the queries' cross-entropy, the quantity the training curves name.
        stats = {"loss": loss.item(), "acc": (logits.argmax(1) == episode.query_y).float().mean().item()}
        if extra and episode.way > 1:
            term = open_set_ranking(d, n_query, protos, self.distance)
            stats["open_set"] = term.item()
            loss = loss + self.config.open_set_weight * term
        return loss, stats

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
