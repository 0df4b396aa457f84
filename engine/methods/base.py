"""The method protocol every meta-learner follows (see docs/ARCHITECTURE.md).

``MetaLearner.outer_step`` trains on a meta-batch of episodes; ``MetaLearner.adapt``
learns one task at test time and returns a ``Predictor``; ``Predictor.predict``
returns a ``Prediction``: calibrated probabilities and the named uncertainty scores
of :mod:`engine.methods.uncertainty`. The trainer, the labeler, the exporter and the
app only ever talk to these types, so a method is added by writing one file and
registering it (:mod:`engine.methods.registry`).
"""
from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from engine.errors import FewShotError
from engine.methods import uncertainty

if TYPE_CHECKING:
    from engine.data.episodes import Episode


def entropy_of(probs: Tensor, dim: int = 1) -> Tensor:
    """Entropy in nats of probabilities along ``dim``."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=dim)


def margin_of(probs: Tensor, dim: int = 1) -> Tensor:
    """Top-1 minus top-2 probability along ``dim``: 0 for an exact tie, 1 with one class.

    No topk: the best is hidden by a mask and the maximum taken again, which is a
    pass down contiguous rows in either layout (the cached scorer keeps classes
    along dim 0, where topk costs 10x more)."""
    if probs.shape[dim] < 2:
        shape = list(probs.shape)
        del shape[dim]
        return torch.ones(shape, dtype=probs.dtype, device=probs.device)
    top = probs.amax(dim=dim, keepdim=True)
    is_top = probs == top
    second = probs.masked_fill(is_top, -1.0).amax(dim=dim)
    ties = is_top.sum(dim=dim) > 1
    top = top.squeeze(dim)
    return torch.where(ties, torch.zeros_like(top), top - second)


class Prediction:
    """Per-query class probabilities and named uncertainty scores (``scores[name]``,
    one value per query, names from :data:`engine.methods.uncertainty.SCORES`).

    Build it with :meth:`from_probs`, which adds the scores every method has
    (entropy and margin) unless the method computed them itself."""

    def __init__(self, probs: Tensor, scores: dict[str, Tensor]):
        unknown = [k for k in scores if k not in uncertainty.BY_NAME]
        if unknown:
            raise ValueError(f"unknown scores {unknown}; known: {', '.join(uncertainty.NAMES)}")
        self.probs = probs
        self.scores = scores

    @classmethod
    def from_probs(cls, probs: Tensor, **scores: Tensor | None) -> "Prediction":
        given = {k: v for k, v in scores.items() if v is not None}
        given.setdefault("entropy", entropy_of(probs))
        given.setdefault("margin", margin_of(probs))
        return cls(probs, given)

    def score(self, name: str) -> Tensor | None:
        return self.scores.get(name)

    @property
    def labels(self) -> Tensor:
        return self.probs.argmax(dim=1)

    @property
    def confidence(self) -> Tensor:
        return self.probs.max(dim=1).values

    @property
    def entropy(self) -> Tensor:
        return self.scores["entropy"]

    @property
    def margin(self) -> Tensor:
        return self.scores["margin"]

    @property
    def ood_score(self) -> Tensor | None:
        return self.scores.get("ood_score")

    @property
    def mutual_info(self) -> Tensor | None:
        return self.scores.get("mutual_info")

    @property
    def aleatoric(self) -> Tensor | None:
        return self.scores.get("aleatoric")

    @property
    def normalized_entropy(self) -> Tensor:
        """Entropy divided by its maximum log(C), so 0..1 whatever the class count."""
        c = self.probs.shape[1]
        return self.entropy / math.log(c) if c > 1 else torch.zeros_like(self.entropy)


@dataclass
class MethodConfig:
    """A method's options. Each field is a ``fewshot train`` flag (``--field-name``),
    its ``metadata["help"]`` the flag's help, and the whole is model.json's
    ``method_config``. Subclasses add fields; :meth:`from_dict` checks what a file says."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, who: str = "the model") -> "MethodConfig":
        data = dict(data or {})
        names = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise FewShotError(f"{who}: unknown method options {unknown} for {cls.__name__}; it was written by "
                               f"another version of this program, or edited (known: {', '.join(sorted(names))})")
        hints = typing.get_type_hints(cls)
        for key, value in data.items():
            data[key] = _checked(key, value, hints[key], who)
        try:
            config = cls(**data)
        except (TypeError, ValueError) as e:
            raise FewShotError(f"{who}: method options do not fit {cls.__name__} ({e})") from None
        config.validate()
        return config

    def validate(self) -> None:
        """Raise FewShotError for values out of range (subclasses)."""


def _checked(key: str, value: Any, hint: Any, who: str) -> Any:
    """A JSON value for a config field of type ``hint`` (bool, int, float, str, their
    Optional forms), or a FewShotError that names the option."""
    allowed = [a for a in typing.get_args(hint)] or [hint]
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                break
            return float(value)
        if kind is str and isinstance(value, str):
            return value
    raise FewShotError(f"{who}: method option {key!r} = {value!r} is not a valid {getattr(hint, '__name__', hint)}")


class Predictor:
    """A learned task: maps images (or, for head-only methods, embeddings) to predictions.

    ``scores``: the uncertainty scores its predictions carry (registry names)."""

    class_count: int
    scores: tuple[str, ...] = uncertainty.REQUIRED

    def predict(self, x: Tensor) -> Prediction:
        raise NotImplementedError

    def predict_embeddings(self, z: Tensor) -> Prediction:
        """Predict from backbone embeddings; only for predictors of head-only methods."""
        raise NotImplementedError(f"{type(self).__name__} adapted its backbone; use predict()")

    def as_module(self, backbone: nn.Module | None = None) -> nn.Module:
        """The adapted task as one plain module for export (ONNX): normalized pixels
        (N, C, H, W) -> ``(probs, *scores)``, with exactly the math of :meth:`predict` and
        the adapted weights baked in. The module's ``output_names`` name its outputs:
        ``probs`` then the ONNX outputs of :mod:`engine.methods.uncertainty` it gives.

        ``backbone``: the feature extractor to put in front of a head-only predictor
        (default: the one it was adapted with); a predictor that adapted its backbone
        uses its own and ignores this."""
        raise NotImplementedError(f"{type(self).__name__} cannot be exported as a module yet")

    def head_module(self) -> nn.Module:
        """For head-only predictors: embeddings (N, D) -> ``(probs, *scores)``, the same
        math as :meth:`predict_embeddings` (exported after ONNX feature extractors)."""
        raise NotImplementedError(f"{type(self).__name__} has no head to export on its own")


class MetaLearner(nn.Module):
    """A meta-learning method around a backbone.

    Class attributes: ``name`` (registry key), ``Config`` (its options dataclass),
    ``adapts_backbone`` (adaptation changes the backbone's weights, so embeddings
    cached from the meta-learned backbone are not the adapted task's; False for
    head-only methods, which adapt on cached embeddings), ``scores`` (the
    uncertainty scores its predictions carry) and ``description`` (one line)."""

    name: ClassVar[str] = "base"
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    adapts_backbone: ClassVar[bool] = False
    scores: ClassVar[tuple[str, ...]] = uncertainty.REQUIRED
    description: ClassVar[str] = ""

    def __init__(self, backbone: nn.Module, config: MethodConfig | None = None):
        super().__init__()
        self.backbone = backbone
        self.config = config if config is not None else self.Config()

    def saved_config(self) -> MethodConfig:
        """The options model.json records after training (a method may fill in what
        it learned, such as ProtoNet's temperature)."""
        return self.config

    def optimizer_groups(self, lr: float) -> list[dict[str, Any]]:
        """The outer optimizer's parameter groups (a method may give some parameters a
        rate of their own); default: one group at ``lr``."""
        return [{"params": list(self.parameters()), "lr": lr}]

    def backbone_replaced(self) -> None:
        """The backbone's weights were loaded from elsewhere (``--init-from``); a method
        that keeps copies of them renews those (default: nothing to do)."""

    def outside_per_episode(self, way: int, query: int) -> int:
        """How many images of classes outside each training episode its meta-loss uses
        (``Episode.outside_x``); default none."""
        return 0

    def meta_loss(self, episode: "Episode") -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def outer_step(self, episodes: list["Episode"], optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """One meta-update over a meta-batch of episodes: the mean of their meta-losses,
        backward, one optimizer step. Returns the mean of each statistic."""
        optimizer.zero_grad(set_to_none=True)
        stats: dict[str, float] = {}
        for ep in episodes:
            loss, s = self.meta_loss(ep)
            (loss / len(episodes)).backward()
            for k, v in s.items():
                stats[k] = stats.get(k, 0.0) + v / len(episodes)
        optimizer.step()
        return stats

    def adapt(self, support_x: Tensor, support_y: Tensor, n_classes: int | None = None) -> Predictor:
        """Learn the task of the support set. Owns its gradient mode: callers never wrap
        it in ``no_grad`` (methods with an inner loop need gradients here)."""
        with torch.no_grad():
            z = self.embed(support_x)
        return self.adapt_embeddings(z, support_y, n_classes)

    def adapt_embeddings(self, support_z: Tensor, support_y: Tensor, n_classes: int | None = None) -> Predictor:
        """Adapt from cached support embeddings; only for head-only methods."""
        raise NotImplementedError(f"{self.name} adapts the backbone; use adapt()")

    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        return eval_forward(self.backbone, x)


def eval_forward(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)`` in eval mode (batch norm on its running statistics: each image
    alone), its mode restored after."""
    was_training = module.training
    module.eval()
    try:
        return module(x)
    finally:
        module.train(was_training)


def check_support(support_y: Tensor, n_classes: int | None, count: int) -> int:
    """The class count of a support set, or a FewShotError saying what is missing."""
    if count == 0:
        raise FewShotError("no examples to learn from: add at least one example image per class")
    n = int(n_classes if n_classes is not None else support_y.max().item() + 1)
    missing = set(range(n)) - set(support_y.tolist())
    if missing:
        raise FewShotError(f"classes {sorted(missing)} have no examples: add at least one example to each class")
    return n
