"""The order in which to show predictions to a reviewer.

- ``uncertain``: least sure first, by predictive entropy (the total uncertainty, as the
  grid's "Most uncertain first" sorts); or margin (top-1 minus top-2) or mutual
  information, on request.
- ``outliers``: highest OOD score first: images that look like none of the classes.
- ``informative``: uncertain in the sense a new example would fix (mutual information,
  BALD, where the predictions carry it; else entropy) *and* different from each other. Ten copies of the
  same confusing photo teach the model once; a greedy pick that discounts each
  candidate's uncertainty by its cosine similarity (in the backbone's embedding
  space) to the images already picked spreads the top of the list over distinct
  cases (the diversity step of batch active learning, as in Kirsch et al.'s
  BatchBALD and core-set selection).

Only images with a prediction and no human label are reviewed: confirmed images
are done, images with errors have nothing to review, unlabeled ones no score yet.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from engine.errors import FewShotError
from engine.labeling.schema import SORT_COLUMNS

if TYPE_CHECKING:
    from engine.labeling.records import ImageRecord
    from engine.labeling.store import Project

MODES = ("uncertain", "outliers", "informative")
MEASURES = ("auto", "entropy", "margin", "mutual_info")
PAGE = 2000  # records per store query while walking a sort order

# Informative mode: how many of the most uncertain images compete for the
# diverse head of the list, and how long that head is when no limit is given.
POOL_FACTOR = 5
MIN_POOL = 500
DIVERSE_HEAD = 100
# An image as similar as a near-copy (cosine 1) to one already picked loses a whole
# unit of uncertainty (uncertainty is scaled to 0..1), i.e. falls behind every image
# that is not a near-copy of something picked.
SIMILARITY_PENALTY = 1.0


def review_order(project: "Project", mode: str, *, measure: str = "auto", limit: int | None = None) -> list[int]:
    """Image ids to review, first to last. ``limit`` keeps only the first so many."""
    if mode not in MODES:
        raise FewShotError(f"unknown review order {mode!r}; use one of {', '.join(MODES)}")
    if measure not in MEASURES:
        raise FewShotError(f"unknown uncertainty measure {measure!r}; use one of {', '.join(MEASURES)}")
    if limit is not None and limit < 0:
        raise FewShotError(f"limit must be 0 or more (got {limit})")
    if mode == "outliers":
        return [r.id for r in _walk(project, "ood", descending=True, limit=limit)]
    sort, descending = _uncertainty_sort(project, measure, epistemic=mode == "informative")
    if mode == "uncertain":
        return [r.id for r in _walk(project, sort, descending, limit)]
    return _informative(project, sort, descending, limit)


def _uncertainty_sort(project: "Project", measure: str, epistemic: bool) -> tuple[str, bool]:
    """(store sort key, descending) for the most uncertain first; ``auto`` is entropy, or
    with ``epistemic`` mutual information where the predictions carry it."""
    if measure == "auto" and epistemic:
        top = project.query(status="predicted", sort="mutual_info", descending=True, limit=1)
        measure = "mutual_info" if top and top[0].mutual_info is not None else "entropy"
    if measure == "margin":
        return "margin", False  # a small gap between the two best classes is the unsure case
    if measure == "mutual_info":
        return "mutual_info", True
    return "entropy", True


def _walk(project: "Project", sort: str, descending: bool, limit: int | None) -> list["ImageRecord"]:
    """Predicted images in the store's sort order; those without a value for the key are left out."""
    out: list[ImageRecord] = []
    key = SORT_COLUMNS[sort]
    offset = 0
    while limit is None or len(out) < limit:
        size = PAGE if limit is None else min(PAGE, limit - len(out))
        page = project.query(status="predicted", sort=sort, descending=descending, offset=offset, limit=size)
        offset += len(page)
        valued = [r for r in page if (r.confidence if key == "confidence" else r.scores.get(key)) is not None]
        out += valued
        if len(page) < size or len(valued) < len(page):  # the store puts missing values last
            break
    return out


def uncertainty_of(records: list["ImageRecord"], sort: str) -> np.ndarray:
    """Each record's uncertainty on a 0..1 scale (1 = as unsure as it gets)."""
    if sort == "margin":
        return np.array([1.0 - float(r.margin) for r in records])
    if sort == "mutual_info":
        values = np.array([float(r.mutual_info) for r in records])
        top = values.max(initial=0.0)
        return values / top if top > 0 else values
    # Entropy over the probabilities the record carries; log(C) is its maximum.
    out = np.empty(len(records))
    for k, r in enumerate(records):
        c = len(r.probs) if r.probs else 1
        out[k] = float(r.entropy) / math.log(c) if c > 1 else 0.0
    return out


def _informative(project: "Project", sort: str, descending: bool, limit: int | None) -> list[int]:
    head = DIVERSE_HEAD if limit is None else limit
    pool = _walk(project, sort, descending, max(MIN_POOL, POOL_FACTOR * head))
    if not pool:
        return []
    vectors = _unit_embeddings(project, pool)
    picked = greedy_diverse(uncertainty_of(pool, sort), vectors, min(head, len(pool)))
    order = [pool[k].id for k in picked]
    if limit is not None:
        return order
    chosen = set(order)
    rest = [r.id for r in pool if r.id not in chosen]
    tail = [r.id for r in _walk(project, sort, descending, None)[len(pool):]]
    return order + rest + tail


def greedy_diverse(uncertainty: np.ndarray, unit_vectors: np.ndarray | None, count: int) -> list[int]:
    """Indices of ``count`` picks: each the highest ``uncertainty - penalty * max cosine
    similarity to the picks so far``. Without vectors, plain uncertainty order."""
    n = len(uncertainty)
    count = min(count, n)
    if unit_vectors is None:
        return list(np.argsort(-uncertainty, kind="stable")[:count])
    closest = np.zeros(n)  # max similarity to any pick so far (0 before the first)
    taken = np.zeros(n, dtype=bool)
    picks: list[int] = []
    for _ in range(count):
        score = uncertainty - SIMILARITY_PENALTY * closest
        score[taken] = -np.inf
        k = int(np.argmax(score))
        picks.append(k)
        taken[k] = True
        np.maximum(closest, np.clip(unit_vectors @ unit_vectors[k], 0.0, None), out=closest)
    return picks


def _unit_embeddings(project: "Project", records: list["ImageRecord"]) -> np.ndarray | None:
    """Centred, unit-length cached embeddings of ``records`` under the current model's
    backbone, or None when some are not cached (then diversity cannot be judged).

    Centring on the pool's mean matters for backbones whose features are all
    non-negative (ReLU then pooling, as Conv4): raw cosines are then high for any
    pair, while centred ones are near 0 for unrelated images and near 1 for copies."""
    current = project.current_model()
    if current is None:
        return None
    _, spec, meta = current
    backbone_id = meta.get("backbone_id") or f"{meta.get('backbone')}:{spec}"
    hashes = [str(r.hash) for r in records]
    found, matrix = project.get_embeddings(backbone_id, hashes)
    if len(found) != len(set(hashes)):
        return None
    row = {h: k for k, h in enumerate(found)}
    vectors = matrix[[row[h] for h in hashes]].astype(np.float64)
    vectors -= vectors.mean(axis=0)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)
