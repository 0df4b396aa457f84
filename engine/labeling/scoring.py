"""Predictions for every cached embedding of a project, fast enough to rerun after each correction.

After the user adds one example, one prototype changes: the distances of all
images to every *other* class are the same as before. :class:`CachedScorer`
keeps each class's distances with the prototype they were computed from and
recomputes, in one matmul, only the classes whose prototype changed. The rest
(softmax, entropy, margin, OOD score) is a handful of passes over a
(classes x images) matrix, through the same functions ProtoHead predicts with
(engine.methods.prototypes).

The fast path covers ProtoNet heads (:class:`ProtoHead`). Any other head-only
predictor goes through its own ``predict_embeddings`` in chunks.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from engine.methods.base import Prediction, Predictor, margin_of
from engine.methods.protonet import ProtoHead
from engine.methods.prototypes import class_major_distance, proto_outputs

# Rows per predict_embeddings call on the generic path: bounds the (rows x classes)
# temporaries without paying per-call overhead.
GENERIC_CHUNK = 8192


@contextmanager
def one_thread() -> Iterator[None]:
    """Run PyTorch ops on the calling thread only, for the duration.

    A refresh is a few dozen small ops. Split over a thread pool, each op waits for
    its slowest thread, and a thread that another process preempted costs a whole
    scheduler slice: with another program busy, a 10 ms refresh took 60-200 ms on
    2 threads and stayed at 9-20 ms on one (benchmarks/bench_labeling.py).
    """
    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@dataclass
class PredictionArrays:
    """Predictions of ``n`` images over ``c`` classes, as arrays (row ``k`` is image ``k``):
    ``probs`` (n, c) float32 and one (n,) array per uncertainty score the method gives."""

    probs: np.ndarray
    scores: dict[str, np.ndarray]

    def __len__(self) -> int:
        return self.probs.shape[0]

    @property
    def entropy(self) -> np.ndarray | None:
        return self.scores.get("entropy")

    @property
    def margin(self) -> np.ndarray | None:
        return self.scores.get("margin")

    @property
    def ood_score(self) -> np.ndarray | None:
        return self.scores.get("ood_score")

    @property
    def mutual_info(self) -> np.ndarray | None:
        return self.scores.get("mutual_info")

    def take(self, rows: np.ndarray) -> "PredictionArrays":
        return PredictionArrays(self.probs[rows], {k: v[rows] for k, v in self.scores.items()})

    @classmethod
    def from_prediction(cls, p: Prediction) -> "PredictionArrays":
        return cls(p.probs.float().cpu().numpy(), {k: v.float().cpu().numpy() for k, v in p.scores.items()})

    @classmethod
    def empty(cls, classes: int, scores: tuple[str, ...]) -> "PredictionArrays":
        return cls(np.zeros((0, classes), dtype=np.float32), {k: np.zeros(0, dtype=np.float32) for k in scores})

    @classmethod
    def concat(cls, parts: list["PredictionArrays"]) -> "PredictionArrays":
        names = [k for k in parts[0].scores if all(k in p.scores for p in parts)]
        return cls(np.concatenate([p.probs for p in parts]),
                   {k: np.concatenate([p.scores[k] for p in parts]) for k in names})


class EmbeddingTable:
    """The cached embeddings of a project's usable images, in memory, row ``k`` = ``image_ids[k]``.

    Keeps the raw matrix and, per distance, the form the scorer multiplies with
    (unit rows for cosine; squared norms for Euclidean), computed once.
    """

    def __init__(self, image_ids: np.ndarray, hashes: list[str], matrix: Tensor):
        if matrix.ndim != 2 or matrix.shape[0] != len(image_ids):
            raise ValueError(f"{len(image_ids)} image ids for an embedding matrix shaped {tuple(matrix.shape)}")
        self.image_ids = np.asarray(image_ids, dtype=np.int64)
        self.hashes = list(hashes)
        self.matrix = matrix.float().contiguous()
        self._row_of_hash = {h: k for k, h in enumerate(self.hashes)}
        self._unit: Tensor | None = None
        self._sq_norms: Tensor | None = None

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]

    def rows_of(self, hashes: list[str]) -> list[int | None]:
        return [self._row_of_hash.get(h) for h in hashes]

    def unit(self) -> Tensor:
        if self._unit is None:
            self._unit = F.normalize(self.matrix, dim=1)
        return self._unit

    def sq_norms(self) -> Tensor:
        if self._sq_norms is None:
            self._sq_norms = (self.matrix * self.matrix).sum(1)
        return self._sq_norms


class CachedScorer:
    """Scores heads over one :class:`EmbeddingTable`, reusing distance rows of unchanged classes.

    Distances are kept class-major, (classes, images): every per-image reduction
    (max, sum, min) is then an element-wise pass down contiguous rows, which is
    vectorised across images; reducing the short rows of an (images, classes)
    matrix instead costs 10-100x more in PyTorch.
    """

    def __init__(self, table: EmbeddingTable):
        self.table = table
        self._distance: str | None = None
        # class id -> (prototype the row was computed from, distances of every image (n,))
        self._rows: dict[int, tuple[Tensor, Tensor]] = {}
        self.recomputed_classes = 0  # how many classes the last score() recomputed (tests, benchmarks)

    def score(self, head: Predictor, class_ids: list[int]) -> PredictionArrays:
        """Predictions of every table row; ``class_ids[k]`` is the class of the head's output ``k``."""
        if not isinstance(head, ProtoHead):
            return self._generic(head)
        if len(class_ids) != head.prototypes.shape[0]:
            raise ValueError(f"{len(class_ids)} class ids for a head with {head.prototypes.shape[0]} classes")
        with torch.inference_mode(), one_thread():
            d = self.distances(head, class_ids)
            if d.shape[1] == 0:
                return PredictionArrays.empty(len(class_ids), head.scores)
            # Classes along dim 0: every per-image reduction runs down contiguous rows.
            probs, entropy, ood = proto_outputs(d, head.temperature, float(head.spread), class_dim=0)
            margin = margin_of(probs, dim=0)
            return PredictionArrays(np.ascontiguousarray(probs.numpy().T),  # images x classes, as stored
                                    {"entropy": entropy.numpy(), "margin": margin.numpy(), "ood_score": ood.numpy()})

    def distances(self, head: ProtoHead, class_ids: list[int]) -> Tensor:
        """(classes, images) distances, recomputing only classes whose prototype changed."""
        if head.distance != self._distance:
            self._rows.clear()
            self._distance = head.distance
        protos = head.prototypes.detach().float().cpu()
        stale = [k for k, cid in enumerate(class_ids)
                 if cid not in self._rows or not torch.equal(self._rows[cid][0], protos[k])]
        self.recomputed_classes = len(stale)
        if stale:
            fresh = self._rows_for(protos[stale], head.distance)
            for j, k in enumerate(stale):
                self._rows[class_ids[k]] = (protos[k].clone(), fresh[j])
        keep = set(class_ids)
        for cid in [c for c in self._rows if c not in keep]:
            del self._rows[cid]  # deleted classes: free their rows
        if not class_ids:
            return torch.zeros((0, len(self.table)))
        return torch.stack([self._rows[cid][1] for cid in class_ids])

    def _rows_for(self, protos: Tensor, distance: str) -> Tensor:
        """(k, n) distances of ``protos`` (k, d) to every image: the one matmul of a refresh."""
        if distance == "euclidean":
            return class_major_distance(protos, self.table.matrix, distance, z_sq_norms=self.table.sq_norms())
        return class_major_distance(protos, self.table.matrix, distance, z_unit=self.table.unit())

    def _generic(self, head: Predictor) -> PredictionArrays:
        parts = []
        with torch.inference_mode():
            for start in range(0, len(self.table), GENERIC_CHUNK):
                parts.append(PredictionArrays.from_prediction(
                    head.predict_embeddings(self.table.matrix[start:start + GENERIC_CHUNK])))
        if not parts:
            return PredictionArrays.empty(head.class_count, head.scores)
        return PredictionArrays.concat(parts)

