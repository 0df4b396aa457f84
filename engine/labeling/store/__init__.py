"""The labeling project: one SQLite file (layout and reasons in ``schema.py``).

The store is split by concern, each part a mixin of :class:`Project`:

- ``base``: the connection, the process lock, transactions (every user action is
  one durable transaction committed before the call returns);
- ``classes``: names, colours, order;
- ``images``: scanning files into records, marking unreadable ones;
- ``labels``: human labels, examples, undo/redo and each image's label history,
  and the recomputation of an image's summary;
- ``predictions``: models and their predictions with every uncertainty score;
- ``embeddings``: the embedding cache;
- ``queries``: pages, counts and iteration for the grid and the exporters;
- ``status``: the one rule for an image's status, and the record columns.

The public API is :class:`Project` (and ``SUFFIX``, ``PALETTE``).
"""
from engine.labeling.store.base import SUFFIX
from engine.labeling.store.classes import PALETTE
from engine.labeling.store.project import Project

__all__ = ["PALETTE", "SUFFIX", "Project"]
