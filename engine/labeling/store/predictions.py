"""The model's predictions: the models they came from, full probability vectors, and the
uncertainty scores of engine.methods.uncertainty, one column each."""
from __future__ import annotations

import itertools
import json
import math
import sys
import time
from typing import Any, Sequence

import numpy as np

from engine.errors import ProjectError
from engine.labeling.records import PredictionRow
from engine.labeling.store.base import locked
from engine.labeling.store.status import SUMMARY_COLUMNS, status_sql
from engine.methods import uncertainty


class PredictionsPart:
    @locked
    def set_model(self, spec: str, meta: dict, make_current: bool = True) -> int:
        """Record the model that labels now and (unless ``make_current`` is False) make it
        current. The same (spec, meta) as a model recorded before gives that model's id
        back, so a labeling run that was interrupted can resume (see
        :meth:`predicted_image_ids`)."""
        try:
            meta_json = json.dumps(meta, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError) as e:
            raise ProjectError(f"model metadata must be plain JSON data ({e})") from None
        with self._tx():
            row = self._conn.execute("SELECT id FROM models WHERE spec = ? AND meta = ?", (spec, meta_json)).fetchone()
            if row is not None:
                model_id = row[0]
            else:
                model_id = int(self._conn.execute("INSERT INTO models(spec, meta, created) VALUES (?, ?, ?)",
                                                  (spec, meta_json, time.time())).lastrowid)
            if make_current:
                self._conn.execute("INSERT INTO settings(key, value) VALUES ('current_model', ?) "
                                   "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (str(model_id),))
        return model_id

    @locked
    def current_model(self) -> tuple[int, str, dict] | None:
        row = self._conn.execute("SELECT m.id, m.spec, m.meta FROM settings s JOIN models m "
                                 "ON m.id = CAST(s.value AS INTEGER) WHERE s.key = 'current_model'").fetchone()
        return (row[0], row[1], json.loads(row[2])) if row else None

    @locked
    def write_predictions(self, model_id: int, rows: Sequence[PredictionRow]) -> None:
        """Store one batch of predictions in one transaction. Rows for images marked as
        errors meanwhile are dropped; class ids must all exist (a class deleted since
        the model adapted raises: adapt again)."""
        if not rows:
            return
        now = time.time()
        with self._tx(durable=False):
            self._require_model(model_id)
            existing = {r[0] for r in self._conn.execute("SELECT id FROM classes")}
            usable = self._usable_ids([r.image_id for r in rows])
            preds, model_labels, summaries = [], [], []
            for r in rows:
                if r.image_id not in usable:
                    continue
                probs = np.asarray(r.probs, dtype=np.float32).reshape(-1)
                class_ids = np.asarray(r.class_ids, dtype=np.int64).reshape(-1)
                if probs.size == 0 or probs.shape != class_ids.shape:
                    raise ValueError(f"image {r.image_id}: {probs.size} probabilities for {class_ids.size} class ids")
                _check_classes(set(class_ids.tolist()), existing)
                k = int(probs.argmax())
                cls, conf = int(class_ids[k]), float(probs[k])
                given = r.scores
                metrics = tuple(_opt(given.get(name)) for name in uncertainty.NAMES)
                preds.append((r.image_id, model_id, cls, probs.tobytes(), class_ids.tobytes(), conf, *metrics, now))
                model_labels.append((r.image_id, cls, now))
                summaries.append((cls, conf, *metrics, cls, r.image_id))
            self._store_predictions(preds, model_labels, summaries)

    @locked
    def write_prediction_arrays(self, model_id: int, image_ids: np.ndarray, class_ids: Sequence[int],
                                probs: np.ndarray, entropy: np.ndarray | None = None,
                                margin: np.ndarray | None = None, mutual_info: np.ndarray | None = None,
                                ood_score: np.ndarray | None = None, *,
                                scores: dict[str, np.ndarray] | None = None) -> None:
        """:meth:`write_predictions` for predictions that share one class list (a whole
        run of one adapted task): the same rows, built with array operations. Refreshing
        10,000 predictions spent a third of its time building rows one by one.

        The scores are one array each, by name (``scores``, or the four named
        arguments); a score not given is stored as missing."""
        named = {"entropy": entropy, "margin": margin, "mutual_info": mutual_info, "ood_score": ood_score}
        given = {**{k: v for k, v in named.items() if v is not None}, **(scores or {})}
        unknown = set(given) - set(uncertainty.NAMES)
        if unknown:
            raise ValueError(f"unknown scores {sorted(unknown)}")
        ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            return
        probs = np.ascontiguousarray(probs, dtype=np.float32)
        cids = np.asarray(class_ids, dtype=np.int64).reshape(-1)
        if probs.shape != (ids.size, cids.size) or cids.size == 0:
            raise ValueError(f"probabilities shaped {probs.shape} for {ids.size} images and {cids.size} class ids")
        now = time.time()
        with self._tx(durable=False):
            self._require_model(model_id)
            _check_classes(set(cids.tolist()), {r[0] for r in self._conn.execute("SELECT id FROM classes")})
            usable = self._usable_ids(ids.tolist())
            keep = np.fromiter((i in usable for i in ids.tolist()), dtype=bool, count=ids.size)
            ids, probs = ids[keep], probs[keep]
            top = probs.argmax(axis=1)
            cls = cids[top].tolist()
            conf = probs[np.arange(len(top)), top].tolist()
            metrics = [_opt_array(np.asarray(given[name]).reshape(-1)[keep] if name in given else None, ids.size)
                       for name in uncertainty.NAMES]
            cids_blob = cids.tobytes()
            id_list = ids.tolist()
            blobs = [row.tobytes() for row in probs]
            per_image = list(zip(*metrics)) if metrics else [()] * len(id_list)
            preds = [(i, model_id, c, b, cids_blob, f, *m, now)
                     for i, c, b, f, m in zip(id_list, cls, blobs, conf, per_image)]
            model_labels = [(i, c, now) for i, c in zip(id_list, cls)]
            summaries = [(c, f, *m, c, i) for i, c, f, m in zip(id_list, cls, conf, per_image)]
            self._store_predictions(preds, model_labels, summaries)

    def _require_model(self, model_id: int) -> None:
        if self._conn.execute("SELECT 1 FROM models WHERE id = ?", (model_id,)).fetchone() is None:
            raise ProjectError(f"no model with id {model_id} in this project; call set_model first")

    def _store_predictions(self, preds: list[tuple], model_labels: list[tuple], summaries: list[tuple]) -> None:
        """The three writes behind every batch of predictions (inside the caller's transaction).
        ``preds``: (image, model, class, probs, class ids, confidence, *scores, time);
        ``summaries``: (class, confidence, *scores, class, image)."""
        self._touch(s[-1] for s in summaries)
        cols = ", ".join(SUMMARY_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in SUMMARY_COLUMNS)
        marks = ", ".join("?" * (6 + len(SUMMARY_COLUMNS)))
        self._conn.executemany(
            f"INSERT INTO predictions(image_id, model_id, class_id, probs, class_ids, {cols}, time) "
            f"VALUES ({marks}) ON CONFLICT(image_id) DO UPDATE SET model_id = excluded.model_id, "
            f"class_id = excluded.class_id, probs = excluded.probs, class_ids = excluded.class_ids, {updates}, "
            "time = excluded.time", preds)
        # Most rows of a refresh keep their class: for those only the uncertainty columns
        # change, which no SQLite index covers. Rewriting the class and status columns
        # too (indexed three times) tripled the cost of a 10,000-image refresh.
        same = self._unchanged_class(summaries)
        width = len(SUMMARY_COLUMNS)
        moved = [r for r in summaries if r[-1] not in same]
        kept = [r[1:1 + width] + r[-1:] for r in summaries if r[-1] in same]
        # The model's label never replaces a human one.
        self._conn.executemany(
            "INSERT INTO labels(image_id, class_id, source, time) VALUES (?, ?, 'model', ?) "
            "ON CONFLICT(image_id) DO UPDATE SET class_id = excluded.class_id, time = excluded.time "
            "WHERE labels.source = 'model'", [m for m in model_labels if m[0] not in same])
        # The update _refresh makes, from what this path knows: the image is usable and now has a prediction.
        status = status_sql(error="error", human="label_source = 'human'", predicted="1")
        assign = ", ".join(f"{c} = ?" for c in SUMMARY_COLUMNS)
        self._conn.executemany(
            f"UPDATE images SET predicted_class_id = ?, {assign}, "
            "label_class_id = CASE WHEN label_source = 'human' THEN label_class_id ELSE ? END, "
            f"status = {status}, "
            "label_source = CASE WHEN label_source = 'human' THEN 'human' ELSE 'model' END "
            "WHERE id = ?", moved)
        self._conn.executemany(f"UPDATE images SET {assign} WHERE id = ?", kept)

    def _unchanged_class(self, summaries: list[tuple]) -> set[int]:
        """Images of ``summaries`` (rows ``(class, ..., image id)``) whose predicted class,
        label and status the new prediction leaves as they are."""
        new_class = {r[-1]: r[0] for r in summaries}
        if len(new_class) > 2000:
            rows = self._conn.execute("SELECT id, predicted_class_id, label_source, label_class_id, status "
                                      "FROM images WHERE predicted_class_id IS NOT NULL")
        else:
            ids = list(new_class)
            rows = itertools.chain.from_iterable(
                self._conn.execute("SELECT id, predicted_class_id, label_source, label_class_id, status FROM images "
                                   f"WHERE id IN ({','.join('?' * len(part))})", part)
                for part in (ids[k:k + 900] for k in range(0, len(ids), 900)))
        return {i for i, predicted, source, label, status in rows
                if new_class.get(i, -1) == predicted
                and (source == "human" or (source == "model" and label == predicted and status == "predicted"))}

    @locked
    def predicted_image_ids(self, model_id: int) -> set[int]:
        """Images whose current prediction comes from ``model_id`` (done, when resuming)."""
        return {r[0] for r in self._conn.execute("SELECT image_id FROM predictions WHERE model_id = ?", (model_id,))}

    @locked
    def clear_predictions(self) -> None:
        """Forget every prediction (human labels and examples stay)."""
        with self._tx():
            self._conn.execute("DELETE FROM predictions")
            self._refresh(None)



def _check_classes(named: set[int], existing: set[int]) -> None:
    unknown = named - existing
    if unknown:
        raise ProjectError(f"predictions name classes that are no longer in the project "
                           f"(ids {sorted(unknown)}); adapt the model again and relabel")


def _opt(value: Any) -> float | None:
    """A metric as stored: NaN becomes NULL (SQLite's own rule) and infinities the largest
    finite float, so that they sort where they belong and +inf never reads as missing."""
    if value is None:
        return None
    value = float(value)
    return max(min(value, sys.float_info.max), -sys.float_info.max) if not math.isnan(value) else None


def _opt_array(values: np.ndarray | None, n: int) -> list[float | None]:
    """:func:`_opt` over an array: NaN as None, infinities clipped to the largest float."""
    if values is None:
        return [None] * n
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    arr = np.clip(arr, -sys.float_info.max, sys.float_info.max)  # keeps NaN
    out = arr.tolist()
    if np.isnan(arr).any():
        out = [None if v != v else v for v in out]
    return out


