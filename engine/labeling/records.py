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
    The prediction fields are the model's even for confirmed images.
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
    entropy: float | None
    margin: float | None
    mutual_info: float | None
    ood_score: float | None
    probs: dict[int, float] | None  # class id -> probability, for classes that still exist

    @property
    def usable(self) -> bool:
        return self.error is None


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


@dataclass
class PredictionRow:
    """The model's prediction for one image. ``probs[k]`` is the probability of class
    ``class_ids[k]``; ``mutual_info`` only for methods that sample weights."""

    image_id: int
    probs: Sequence[float] | np.ndarray
    class_ids: Sequence[int]
    entropy: float
    margin: float
    mutual_info: float | None = None
    ood_score: float | None = None
