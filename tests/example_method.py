"""A tiny meta-learning method, written the way docs/ARCHITECTURE.md says to add one.

Soft nearest neighbours (in the spirit of Matching Networks, Vinyals et al. 2016):
a query's score for a class is the log-sum of exp(-scale * distance) over that
class's support embeddings, and the probabilities are a softmax over those scores.
Head-only (the backbone is never changed by adapting), so it labels from cached
embeddings like ProtoNet. Tests register it and run it through the shared method
suite, meta-training, labeling, export and ``fewshot predict``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.methods.base import MetaLearner, MethodConfig, Prediction, Predictor, check_support
from engine.methods.prototypes import pairwise_distance


@dataclass
class SoftNeighboursConfig(MethodConfig):
    scale: float = field(default=1.0, metadata={"help": "logits = -scale x squared distance to each example"})


def class_scores(z: Tensor, support_z: Tensor, support_onehot: Tensor, scale: float) -> Tensor:
    """(n, C): log sum over each class's examples of exp(-scale * distance)."""
    d = pairwise_distance(z, support_z, "euclidean")  # (n, s)
    logits = -scale * d
    # logsumexp per class, masking other classes' examples with -inf
    masked = logits[:, :, None] + torch.log(support_onehot.clamp_min(1e-30))[None]  # (n, s, C)
    return torch.logsumexp(masked, dim=1)


class SoftNeighboursHead(nn.Module):
    output_names = ("probs", "entropy")

    def __init__(self, support_z: Tensor, support_onehot: Tensor, scale: float):
        super().__init__()
        self.register_buffer("support_z", support_z.detach().clone())
        self.register_buffer("support_onehot", support_onehot.detach().clone())
        self.scale = float(scale)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        probs = class_scores(z, self.support_z, self.support_onehot, self.scale).softmax(dim=1)
        return probs, -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)


class SoftNeighboursPredictor(Predictor):
    scores = ("entropy", "margin")

    def __init__(self, head: SoftNeighboursHead, backbone: nn.Module):
        self.head = head
        self.backbone = backbone
        self.class_count = head.support_onehot.shape[1]

    @torch.no_grad()
    def predict_embeddings(self, z: Tensor) -> Prediction:
        probs, entropy = self.head(z.float())
        return Prediction.from_probs(probs, entropy=entropy)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Prediction:
        self.backbone.eval()
        return self.predict_embeddings(self.backbone(x))

    def head_module(self) -> nn.Module:
        return self.head

    def as_module(self, backbone: nn.Module | None = None) -> nn.Module:
        return _WithBackbone(backbone if backbone is not None else self.backbone, self.head).eval()


class _WithBackbone(nn.Module):
    output_names = SoftNeighboursHead.output_names

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.backbone(pixels))


class SoftNeighbours(MetaLearner):
    name = "example-soft-neighbours"
    Config = SoftNeighboursConfig
    adapts_backbone = False
    scores = SoftNeighboursPredictor.scores
    description = "test-only example: soft nearest neighbours over the support embeddings"

    def meta_loss(self, episode) -> tuple[Tensor, dict[str, float]]:
        n = episode.support_x.shape[0]
        z = self.backbone(torch.cat([episode.support_x, episode.query_x]))
        onehot = F.one_hot(episode.support_y, episode.way).float()
        logits = class_scores(z[n:], z[:n], onehot, self.config.scale)
        loss = F.cross_entropy(logits, episode.query_y)
        return loss, {"loss": loss.item(), "acc": (logits.argmax(1) == episode.query_y).float().mean().item()}

    @torch.no_grad()
    def adapt_embeddings(self, support_z: Tensor, support_y: Tensor, n_classes: int | None = None) -> Predictor:
        n_classes = check_support(support_y, n_classes, support_z.shape[0])
        onehot = F.one_hot(support_y, n_classes).float()
        return SoftNeighboursPredictor(SoftNeighboursHead(support_z.float(), onehot, self.config.scale),
                                       self.backbone)
