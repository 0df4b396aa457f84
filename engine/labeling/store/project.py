"""The project: one object composed of the store's parts, each in its own module."""
from __future__ import annotations

from engine.labeling.store.base import ProjectBase
from engine.labeling.store.classes import ClassesPart
from engine.labeling.store.embeddings import EmbeddingsPart
from engine.labeling.store.images import ImagesPart
from engine.labeling.store.labels import LabelsPart
from engine.labeling.store.predictions import PredictionsPart
from engine.labeling.store.queries import QueriesPart
from engine.labeling.store.removal import RemovalPart


class Project(ClassesPart, ImagesPart, LabelsPart, RemovalPart, PredictionsPart, EmbeddingsPart, QueriesPart,
              ProjectBase):
    """An open labeling project. Use :meth:`create` or :meth:`open`, and close it
    (or use it as a context manager) to let another process open it."""
