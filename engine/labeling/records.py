"""The plain records the project store hands out and takes in."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class ClassInfo:
    id: int
    name: str
    color: str  # "#rrggbb"
    order: int  # 0-based display position


@dataclass
class ImageRecord:
    """One image as the grid, the review panel and the exporters see it.

    ``status`` is ``error`` (unusable: ``error`` says why), ``confirmed`` (a human
    label), ``predicted`` (only the model's label) or ``unlabeled``.
    ``label_class_id``/``label_source`` are the current label: the human one where
    there is one (class None then means "none of these classes"), else the model's.
    The prediction fields are the model's even for confirmed images: ``confidence``
    (the top probability) and ``scores``, every uncertainty score of
    :mod:`engine.methods.uncertainty` by name (None where the model gives none).
    """

    id: int
    path: str
    hash: str | None
    width: int | None
    height: int | None
    status: str
    error: str | None
    label_class_id: int | None
    label_source: str | None
    predicted_class_id: int | None
    confidence: float | None
    scores: dict[str, float | None]
    probs: dict[int, float] | None  # class id -> probability, for classes that still exist

    @property
    def usable(self) -> bool:
        return self.error is None

    def score(self, name: str) -> float | None:
        return self.scores.get(name)

    @property
    def entropy(self) -> float | None:
        return self.scores.get("entropy")

    @property
    def margin(self) -> float | None:
        return self.scores.get("margin")

    @property
    def ood_score(self) -> float | None:
        return self.scores.get("ood_score")

    @property
    def mutual_info(self) -> float | None:
        return self.scores.get("mutual_info")

    @property
    def aleatoric(self) -> float | None:
        return self.scores.get("aleatoric")


@dataclass
class AddReport:
    """What adding files did.

    ``added``: image ids newly registered (``add_images``) or newly made examples
    (``add_examples``). ``duplicates``: paths whose content was already there.
    ``errors``: (path, reason) of image files that cannot be used; they are recorded
    in the project with that reason. ``skipped``: (path, reason) of things not
    recorded at all (not image files, folders already scanned, missing paths).
    """

    added: list[int] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


class PredictionRow:
    """The model's prediction for one image. ``probs[k]`` is the probability of class
    ``class_ids[k]``; the uncertainty scores by name (the four named ones can also be
    given in this order, as positional arguments)."""

    def __init__(self, image_id: int, probs: Sequence[float] | np.ndarray, class_ids: Sequence[int],
                 entropy: float | None = None, margin: float | None = None, mutual_info: float | None = None,
                 ood_score: float | None = None, *, scores: dict[str, float | None] | None = None):
        self.image_id = image_id
        self.probs = probs
        self.class_ids = class_ids
        named = {"entropy": entropy, "margin": margin, "mutual_info": mutual_info, "ood_score": ood_score}
        self.scores: dict[str, float | None] = {**{k: v for k, v in named.items() if v is not None},
                                                **(scores or {})}
