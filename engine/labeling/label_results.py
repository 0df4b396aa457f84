"""What labeling produces and records: the adapted task, a run's summary, a refresh's
report, and how predictions and the model that made them are stored."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.labeling.embedder import NON_FINITE, RunPlan
from engine.labeling.scoring import PredictionArrays
from engine.methods.base import Predictor

if TYPE_CHECKING:
    from engine.labeling.store import Project
    from engine.model_store import LoadedModel


@dataclass
class AdaptedTask:
    """A head adapted on the project's examples; output ``k`` of the head is class ``class_ids[k]``."""

    predictor: Predictor
    class_ids: list[int]
    examples: int
    fingerprint: str
    skipped_classes: list[str] = field(default_factory=list)  # classes with no usable example


@dataclass
class LabelSummary:
    """What :func:`label_project` did.

    ``embedded``: images decoded and embedded in this run; ``from_cache``: images
    predicted from embeddings cached before; ``failed``: (image id, path, reason)
    of files that could not be decoded in this run; ``images_per_s``: images
    decoded per second of the whole run.
    """

    model_id: int | None  # None when cancelled before the model could adapt
    class_ids: list[int]
    examples: int
    embedded: int = 0
    from_cache: int = 0
    predicted: int = 0
    failed: list[tuple[int, str, str]] = field(default_factory=list)
    skipped_classes: list[str] = field(default_factory=list)
    cancelled: bool = False
    seconds: float = 0.0
    plan: RunPlan | None = None  # how decoding and the forward pass shared the cores
    backend: str | None = None  # what ran the backbone (torch, onnxruntime); None when nothing was embedded

    @property
    def images_per_s(self) -> float:
        done = self.embedded + len(self.failed)
        return done / self.seconds if self.seconds > 0 else 0.0


@dataclass
class RefreshReport:
    """What :meth:`Labeler.refresh` did, with its time split: loading the cache
    (once per session), adapting and computing every prediction, writing them."""

    model_id: int
    images: int
    classes: int
    load_s: float
    compute_s: float
    write_s: float
    recomputed_classes: int


def stored_model_meta(model: "LoadedModel", task: AdaptedTask) -> dict[str, Any]:
    """The metadata recorded with the predictions: the model's own, its backbone id
    (review reads cached embeddings by it) and what it adapted on."""
    meta = dict(model.meta)
    meta["backbone_id"] = model.backbone_id
    meta["adapted_on"] = {"examples": task.examples, "classes": task.class_ids, "fingerprint": task.fingerprint}
    return meta


def support_fingerprint(pairs: list[tuple[int, str]]) -> str:
    """Identifies a support set by (class id, image content hash), whatever the order."""
    h = hashlib.sha256()
    for class_id, content_hash in sorted(pairs):
        h.update(f"{class_id}:{content_hash}\n".encode())
    return h.hexdigest()[:24]


def write_arrays(project: "Project", model_id: int, image_ids: np.ndarray | list[int],
                 arrays: PredictionArrays, class_ids: list[int]) -> None:
    """Store predictions; an image whose probabilities are not finite numbers is marked
    unusable with the reason instead (no NaN ever reaches the store)."""
    ids = np.asarray(image_ids, dtype=np.int64)
    finite = np.isfinite(arrays.probs).all(axis=1)
    if not finite.all():
        project.mark_errors([(int(i), NON_FINITE) for i in ids[~finite]])
        ids, arrays = ids[finite], arrays.take(np.flatnonzero(finite))
    project.write_prediction_arrays(model_id, ids, class_ids, arrays.probs, scores=arrays.scores)
