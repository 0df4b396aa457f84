"""The method protocol every meta-learner follows (see DESIGN.md).

``MetaLearner.meta_loss`` trains, ``MetaLearner.adapt`` learns a task at test
time and returns a ``Predictor``; ``Predictor.predict`` returns a
``Prediction`` with probabilities and every uncertainty the method can give.
The GUI, trainer and exporters only ever talk to these three types.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from engine.data.episodes import Episode


@dataclass
class Prediction:
    """Per-query class probabilities and uncertainties.

    ``entropy`` is the predictive entropy in nats; ``ood_score`` is large for
    queries that look like none of the classes (about 1 means "as far from its
    nearest class as that class's own examples are"); ``mutual_info`` is the
    epistemic part of the entropy, only for methods that sample weights.
    """

    probs: Tensor
    entropy: Tensor
    ood_score: Tensor
    mutual_info: Tensor | None = None

    @property
    def labels(self) -> Tensor:
        return self.probs.argmax(dim=1)

    @property
    def confidence(self) -> Tensor:
        return self.probs.max(dim=1).values

    @property
    def margin(self) -> Tensor:
        """Top-1 minus top-2 probability (1 for a single class)."""
        if self.probs.shape[1] < 2:
            return torch.ones(self.probs.shape[0], dtype=self.probs.dtype)
        top2 = self.probs.topk(2, dim=1).values
        return top2[:, 0] - top2[:, 1]

    @property
    def normalized_entropy(self) -> Tensor:
        """Entropy divided by its maximum log(C), so 0..1 whatever the class count."""
        c = self.probs.shape[1]
        return self.entropy / math.log(c) if c > 1 else torch.zeros_like(self.entropy)


def entropy_of(probs: Tensor) -> Tensor:
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)


class Predictor:
    """A learned task: maps images (or, for head-only methods, embeddings) to predictions."""

    #: True when adaptation changed the backbone, so cached embeddings are stale.
    adapts_backbone: bool = False
    class_count: int

    def predict(self, x: Tensor) -> Prediction:
        raise NotImplementedError

    def predict_embeddings(self, z: Tensor) -> Prediction:
        """Predict from backbone embeddings; only for head-only predictors."""
        raise NotImplementedError(f"{type(self).__name__} adapts the backbone; use predict()")

    def as_module(self, backbone: nn.Module | None = None) -> nn.Module:
        """The adapted task as one plain module for export (ONNX): normalized pixels
        (N, C, H, W) -> ``(probs (N, C), entropy (N), ood_score (N))``, with exactly the
        math of :meth:`predict`, the adapted weights baked in as buffers/parameters.

        ``backbone``: the feature extractor to put in front of a head-only predictor
        (default: the one it was adapted with); a predictor that adapted its backbone
        uses its own and ignores this.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot be exported as a module yet")


class MetaLearner(nn.Module):
    """A meta-learning method around a backbone."""

    name: str = "base"
    #: True when adapt() touches only a head over frozen backbone embeddings.
    head_only: bool = True

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def meta_loss(self, episode: "Episode") -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def adapt(self, support_x: Tensor, support_y: Tensor) -> Predictor:
        raise NotImplementedError

    def adapt_embeddings(self, support_z: Tensor, support_y: Tensor) -> Predictor:
        """Adapt from cached support embeddings; only for head-only methods."""
        raise NotImplementedError(f"{self.name} adapts the backbone; use adapt()")

    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        return self.backbone(x)
