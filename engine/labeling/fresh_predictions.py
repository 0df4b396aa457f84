"""Predictions a refresh has computed but not yet written, as the store will hold them.

After a correction, computing every prediction again takes milliseconds; writing them
takes 13-16 ms per 1,000 images (an index-heavy UPDATE per row), which is most of
what a person waited for before the grid showed anything. The app shows these at once
instead: :meth:`FreshPredictions.patch` turns a record read from the store into the
record the store will hand out once the write lands. The write follows in the same
job; the person's own label was committed before the refresh began, so a crash loses
only predictions, which opening the project computes again.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass

import numpy as np

from engine.labeling.records import ImageRecord
from engine.methods import uncertainty


@dataclass(frozen=True)
class FreshPredictions:
    """Row ``k`` is image ``image_ids[k]`` (sorted): its probabilities over ``class_ids``,
    its top class and confidence, and one array per uncertainty score the method gives."""

    image_ids: np.ndarray
    class_ids: tuple[int, ...]
    probs: np.ndarray
    top: np.ndarray
    confidence: np.ndarray
    scores: dict[str, np.ndarray]

    @classmethod
    def of(cls, image_ids: np.ndarray, probs: np.ndarray, scores: dict[str, np.ndarray],
           class_ids: list[int]) -> "FreshPredictions":
        """From a refresh's arrays; images whose probabilities are not finite are left out (the
        write marks them unusable)."""
        ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
        probs = np.asarray(probs, dtype=np.float32)
        keep = np.isfinite(probs).all(axis=1)
        order = np.argsort(ids[keep], kind="stable")
        ids, probs = ids[keep][order], probs[keep][order]
        best = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
        return cls(ids, tuple(int(c) for c in class_ids), probs, np.asarray(class_ids, dtype=np.int64)[best],
                   probs[np.arange(len(best)), best],
                   {k: np.asarray(v).reshape(-1)[keep][order] for k, v in scores.items()})

    def __len__(self) -> int:
        return len(self.image_ids)

    def row(self, image_id: int) -> int | None:
        k = int(np.searchsorted(self.image_ids, image_id))
        return k if k < len(self.image_ids) and self.image_ids[k] == image_id else None

    def patch(self, rec: ImageRecord | None) -> ImageRecord | None:
        """``rec`` with this refresh's prediction: the model's label follows it unless a person
        labeled the image; an image the store holds as unusable stays as it is."""
        if rec is None or rec.error is not None:
            return rec
        k = self.row(rec.id)
        if k is None:
            return rec
        predicted = int(self.top[k])
        human = rec.label_source == "human"
        return dataclasses.replace(
            rec, predicted_class_id=predicted, confidence=float(self.confidence[k]),
            scores={name: _stored(self.scores[name][k]) if name in self.scores else None
                    for name in uncertainty.NAMES},
            probs={c: float(p) for c, p in zip(self.class_ids, self.probs[k].tolist())},
            label_class_id=rec.label_class_id if human else predicted,
            label_source="human" if human else "model",
            status="confirmed" if human else "predicted")


def _stored(value: float) -> float | None:
    """A score as the store keeps it: NaN as missing, infinities as the largest float."""
    value = float(value)
    if math.isnan(value):
        return None
    return max(min(value, sys.float_info.max), -sys.float_info.max)
