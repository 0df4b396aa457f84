"""Prototypical Networks (Snell, Swersky & Zemel 2017).

Each class is the mean of its support embeddings; a query's class
probabilities are a softmax over negative distances to the prototypes.
Adaptation touches no weights, so it runs on cached embeddings in
milliseconds -- which is what makes "every correction re-adapts" possible.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.errors import FewShotError
from engine.methods.base import MetaLearner, Prediction, Predictor, entropy_of

DISTANCES = ("euclidean", "cosine")


def pairwise_distance(z: Tensor, protos: Tensor, distance: str) -> Tensor:
    """(n, d) x (c, d) -> (n, c); squared Euclidean, or 1 - cosine similarity."""
    if distance == "euclidean":
        # The expanded form is one matmul; clamp undoes its rounding below zero.
        d = (z * z).sum(1, keepdim=True) - 2 * z @ protos.T + (protos * protos).sum(1)
        return d.clamp_min(0)
    return 1 - F.normalize(z, dim=1) @ F.normalize(protos, dim=1).T


def prototypes_of(z: Tensor, y: Tensor, n_classes: int) -> Tensor:
    sums = torch.zeros(n_classes, z.shape[1], dtype=z.dtype, device=z.device).index_add_(0, y, z)
    counts = torch.bincount(y, minlength=n_classes).to(z.dtype).clamp_min(1)
    return sums / counts[:, None]


def support_spread(z: Tensor, y: Tensor, protos: Tensor, distance: str) -> Tensor:
    """The typical distance of a class member to its prototype, from the support set.

    Within-class scatter where some class has 2+ examples (times n/(n-1): the
    prototype was fitted to those same points); with one shot everywhere,
    a quarter of the closest prototype pair's distance (the radius at which
    classes would touch); with a single 1-shot class, the embeddings' own scale.
    """
    n_classes = protos.shape[0]
    counts = torch.bincount(y, minlength=n_classes)
    multi = counts[y] > 1
    if multi.any():
        d_own = pairwise_distance(z[multi], protos, distance).gather(1, y[multi, None]).squeeze(1)
        n = counts[y[multi]].to(z.dtype)
        spread = (d_own * n / (n - 1)).mean()
    elif n_classes > 1:
        dp = pairwise_distance(protos, protos, distance)
        dp.fill_diagonal_(float("inf"))
        spread = dp.min() / 4 if distance == "euclidean" else dp.min() / 2
    else:
        spread = (z * z).sum(1).mean() if distance == "euclidean" else torch.tensor(0.5, dtype=z.dtype)
    return spread.clamp_min(1e-8)


class ProtoHeadModule(nn.Module):
    """An adapted ProtoNet task as one module (the ONNX export's graph): normalized pixels
    -> ``(probs, entropy, ood_score)``, the math of :meth:`ProtoHead.predict_embeddings`
    with the prototypes and the spread as constant buffers."""

    def __init__(self, backbone: nn.Module, prototypes: Tensor, spread: Tensor, distance: str, temperature: float):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("prototypes", prototypes.detach().clone())
        self.register_buffer("spread", spread.detach().clone().reshape(()))
        self.distance = distance
        self.temperature = float(temperature)

    def forward(self, pixels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z = self.backbone(pixels).to(self.prototypes.dtype)
        d = pairwise_distance(z, self.prototypes, self.distance)
        probs = (-d * self.temperature).softmax(dim=1)
        return probs, entropy_of(probs), d.min(dim=1).values / self.spread


class ProtoHead(Predictor):
    """An adapted ProtoNet task over embeddings: prototypes plus the support's spread."""

    adapts_backbone = False

    def __init__(self, prototypes: Tensor, spread: Tensor, distance: str, temperature: float,
                 backbone: nn.Module | None = None):
        self.prototypes = prototypes
        self.spread = spread
        self.distance = distance
        self.temperature = temperature
        self.backbone = backbone
        self.class_count = prototypes.shape[0]

    def logits(self, z: Tensor) -> tuple[Tensor, Tensor]:
        d = pairwise_distance(z.to(self.prototypes.dtype), self.prototypes, self.distance)
        return -d * self.temperature, d

    @torch.no_grad()
    def predict_embeddings(self, z: Tensor) -> Prediction:
        z = z.to(self.prototypes.device)
        logits, d = self.logits(z)
        probs = logits.softmax(dim=1)
        return Prediction(probs=probs, entropy=entropy_of(probs),
                          ood_score=d.min(dim=1).values / self.spread)

    def as_module(self, backbone: nn.Module | None = None) -> ProtoHeadModule:
        backbone = backbone if backbone is not None else self.backbone
        if backbone is None:
            raise FewShotError("this predictor was adapted from embeddings only; give the backbone to export with")
        return ProtoHeadModule(backbone, self.prototypes, self.spread, self.distance, self.temperature).eval()

    @torch.no_grad()
    def predict(self, x: Tensor) -> Prediction:
        if self.backbone is None:
            raise FewShotError("this predictor was adapted from embeddings only; use predict_embeddings()")
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            z = self.backbone(x.to(self.prototypes.device))
        finally:
            self.backbone.train(was_training)
        return self.predict_embeddings(z)


class ProtoNet(MetaLearner):
    name = "protonet"
    head_only = True

    def __init__(self, backbone: nn.Module, distance: str = "euclidean", temperature: float | None = None):
        super().__init__(backbone)
        if distance not in DISTANCES:
            raise FewShotError(f"unknown distance '{distance}'; choose one of {', '.join(DISTANCES)}")
        self.distance = distance
        # Cosine similarities live in [-1, 1]: without a scale the softmax is nearly
        # flat, so cosine gets the usual temperature of 10 (Chen et al. 2019).
        self.temperature = float(temperature if temperature is not None else (1.0 if distance == "euclidean" else 10.0))

    def config(self) -> dict:
        return {"distance": self.distance, "temperature": self.temperature}

    def meta_loss(self, episode) -> tuple[Tensor, dict[str, float]]:
        n_support = episode.support_x.shape[0]
        z = self.backbone(torch.cat([episode.support_x, episode.query_x]))
        protos = prototypes_of(z[:n_support], episode.support_y, episode.way)
        logits = -pairwise_distance(z[n_support:], protos, self.distance) * self.temperature
        loss = F.cross_entropy(logits, episode.query_y)
        acc = (logits.argmax(1) == episode.query_y).float().mean()
        return loss, {"loss": loss.item(), "acc": acc.item()}

    @torch.no_grad()
    def adapt_embeddings(self, support_z: Tensor, support_y: Tensor, n_classes: int | None = None) -> ProtoHead:
        n_classes = int(n_classes if n_classes is not None else support_y.max().item() + 1)
        if support_z.shape[0] == 0:
            raise FewShotError("no examples to learn from: add at least one example image per class")
        missing = set(range(n_classes)) - set(support_y.tolist())
        if missing:
            raise FewShotError(f"classes {sorted(missing)} have no examples: add at least one example to each class")
        support_z = support_z.float()
        protos = prototypes_of(support_z, support_y, n_classes)
        spread = support_spread(support_z, support_y, protos, self.distance)
        return ProtoHead(protos, spread, self.distance, self.temperature, backbone=self.backbone)

    @torch.no_grad()
    def adapt(self, support_x: Tensor, support_y: Tensor) -> ProtoHead:
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            z = self.backbone(support_x)
        finally:
            self.backbone.train(was_training)
        return self.adapt_embeddings(z, support_y)
