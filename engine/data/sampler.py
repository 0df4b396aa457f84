"""N-way K-shot episodes drawn reproducibly from a :class:`ClassDataset`.

Episode ``i`` is a pure function of ``(seed, i)``: a run resumed at episode 5000
sees exactly the episodes an uninterrupted run would have seen, with no random
state to save in checkpoints.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from engine.data.class_dataset import ClassDataset
from engine.data.episodes import Episode
from engine.errors import EpisodeError

log = logging.getLogger(__name__)

_END = object()


def check_task_shape(way: int, shot: int, query: int, what: str = "episodes") -> None:
    """For training and evaluation, which score classifications: 2 classes or more (one is
    no choice), and at least one example and one query of each (the queries are what is
    scored; with none every figure is NaN)."""
    if way < 2 or shot < 1 or query < 1:
        raise EpisodeError(f"{what} need way >= 2, shot >= 1 and query >= 1 (got way {way}, shot {shot}, "
                           f"query {query}): one class is no choice, and the queries are what is scored")


class EpisodeSampler:
    """``sampler[i]`` is episode ``i``: ``way`` classes drawn without replacement, and
    ``shot + query`` distinct images from each; labels 0..way-1 follow the order the
    classes were drawn in, support and query are ordered class by class. With ``outside``
    > 0 each episode also carries that many images of classes outside it (``outside_x``,
    :meth:`outside_images`), for training or judging "none of these"."""

    def __init__(self, dataset: ClassDataset, way: int, shot: int, query: int, seed: int = 0, outside: int = 0):
        self.dataset = dataset
        self.way, self.shot, self.query, self.seed = int(way), int(shot), int(query), int(seed)
        self.outside = max(0, int(outside))
        self._check()
        self._sizes = np.asarray(dataset.class_sizes(), dtype=np.int64)

    def _check(self) -> None:
        if self.way < 1 or self.shot < 1 or self.query < 0:
            raise EpisodeError(f"an episode needs way >= 1, shot >= 1 and query >= 0; got way={self.way}, "
                               f"shot={self.shot}, query={self.query}")
        n_classes = len(self.dataset)
        if n_classes < self.way:
            rotated = getattr(self.dataset, "_rot", None) is not None
            how = f" ({n_classes // 4} characters, each in 4 rotations)" if rotated else ""
            raise EpisodeError(f"{self.way}-way episodes need at least {self.way} classes, but the dataset has "
                               f"{n_classes}{how}; lower the way to {n_classes} or add classes")
        need = self.shot + self.query
        small = [(c, s) for c, s in enumerate(self.dataset.class_sizes()) if s < need]
        if small:
            c, s = min(small, key=lambda cs: cs[1])
            more = f" ({len(small)} classes are that small)" if len(small) > 1 else ""
            raise EpisodeError(
                f"class '{self.dataset.class_names[c]}' has {s} images but shot + query = "
                f"{self.shot} + {self.query} = {need} are drawn from every class{more}; lower shot or query "
                f"so they sum to at most {s}, or add images to that class")

    def indices(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The classes (way,) and per-class image indices (way, shot+query) of episode ``i``."""
        if i < 0:
            raise IndexError(f"episode index must be >= 0, got {i}")
        # SeedSequence mixes (seed, i) into independent streams; adjacent i share nothing.
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed % 2**63, i])))
        classes = rng.choice(len(self._sizes), size=self.way, replace=False)
        n = self.shot + self.query
        idx = np.stack([rng.choice(int(self._sizes[c]), size=n, replace=False) for c in classes])
        return classes, idx

    def outside_images(self, i: int, classes: Iterable[int], count: int) -> Tensor:
        """``count`` images of classes not in episode ``i`` (its ``classes``), drawn from a
        stream of their own keyed by (seed, i): the episode's own draws are those of a
        sampler without them. Empty when every class is in the episode."""
        others = np.setdiff1d(np.arange(len(self._sizes)), np.asarray(list(classes)))
        if others.size == 0 or count <= 0:
            return torch.empty(0)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed % 2**63, i, 1])))
        picked = rng.choice(others, size=count, replace=True)
        idx = np.array([rng.integers(int(self._sizes[c])) for c in picked])[:, None]
        return self.dataset.gather(torch.from_numpy(picked), torch.from_numpy(idx))

    def __getitem__(self, i: int) -> Episode:
        classes, idx = self.indices(i)
        x = self.dataset.gather(torch.from_numpy(classes), torch.from_numpy(idx))
        x = x.view(self.way, self.shot + self.query, *x.shape[1:])
        labels = torch.arange(self.way)
        return Episode(
            support_x=x[:, :self.shot].reshape(-1, *x.shape[2:]),
            support_y=labels.repeat_interleave(self.shot),
            query_x=x[:, self.shot:].reshape(-1, *x.shape[2:]),
            query_y=labels.repeat_interleave(self.query),
            way=self.way, shot=self.shot, query=self.query,
            classes=[int(c) for c in classes],
            outside_x=self.outside_images(i, classes, self.outside) if self.outside else None,
        )

    def __iter__(self) -> Iterator[Episode]:
        return self.iter_from(0)

    def iter_from(self, start: int = 0, count: int | None = None, prefetch: int | None = None,
                  step: int = 1) -> Iterator[Episode]:
        """Episodes ``start, start+step, ...`` (``count`` of them, or without end); a
        data-parallel rank r of W reads ``step=W`` from ``start=r``.

        ``prefetch`` episodes are prepared ahead in a background thread so decoding
        overlaps training; by default 2 for lazy (decoding) datasets and 0 for
        preloaded ones, where gathering is too quick to be worth a thread.
        """
        if prefetch is None:
            prefetch = 2 if self.dataset.is_lazy else 0
        if step < 1:
            raise ValueError(f"step must be at least 1, got {step}")
        stop = None if count is None else start + max(0, count) * step
        if prefetch <= 0:
            i = start
            while stop is None or i < stop:
                yield self[i]
                i += step
            return
        yield from self._prefetched(start, stop, prefetch, step)

    def _prefetched(self, start: int, stop: int | None, depth: int, step: int) -> Iterator[Episode]:
        q: queue.Queue = queue.Queue(maxsize=depth)
        halt = threading.Event()

        def put(item) -> bool:
            while not halt.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            i = start
            try:
                while stop is None or i < stop:
                    if not put(self[i]):
                        return
                    i += step
                put(_END)
            except BaseException as e:  # handed to the consumer, who re-raises it
                put(e)

        worker = threading.Thread(target=produce, name="episode-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            halt.set()
            worker.join(timeout=10)
            if worker.is_alive():
                log.warning("episode prefetch thread still busy after stop; it will end on its own")
