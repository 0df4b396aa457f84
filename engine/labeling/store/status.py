"""The one rule for an image's status, and the columns of its prediction summary.

An image is ``error`` when its file is unusable, else ``confirmed`` when a person
labelled it, else ``predicted`` when the model has, else ``unlabeled``. The rule is
SQL, written once here; the full recomputation (``LabelsPart._refresh``) and the hot
path that stores a batch of predictions (``PredictionsPart._store_predictions``)
both use it, each with the facts it has at hand.
"""
from __future__ import annotations

from engine.labeling.schema import METRIC_COLUMNS
from engine.methods import uncertainty

#: The prediction summary the ``images`` table copies from ``predictions`` (sorts and
#: filters read it there): the top probability and every registered score.
SUMMARY_COLUMNS: tuple[str, ...] = METRIC_COLUMNS


def status_sql(*, error: str, human: str, predicted: str) -> str:
    """A CASE expression for the status; each argument is an SQL expression: ``error``
    the error text (NULL when usable), ``human`` true when a person labelled the image,
    ``predicted`` true when it has a prediction."""
    return (f"CASE WHEN {error} IS NOT NULL THEN 'error' WHEN {human} THEN 'confirmed' "
            f"WHEN {predicted} THEN 'predicted' ELSE 'unlabeled' END")

#: The ``images`` columns an :class:`~engine.labeling.records.ImageRecord` is read from, in order.
IMAGE_COLUMNS = ("id, path, hash, width, height, status, error, label_class_id, label_source, predicted_class_id, "
                 + ", ".join(SUMMARY_COLUMNS))
_FIXED = 11  # columns before the scores: id ... confidence


def record_of(row: tuple, probs: dict[int, float] | None):
    """An ImageRecord from a row of :data:`IMAGE_COLUMNS`."""
    from engine.labeling.records import ImageRecord
    return ImageRecord(*row[:_FIXED], scores=dict(zip(uncertainty.NAMES, row[_FIXED:])), probs=probs)
