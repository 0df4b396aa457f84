"""An N-way K-shot Q-query episode."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Episode:
    """Support and query images of one task; labels are 0..way-1 in class order.

    Images are float tensors (n, C, H, W) already normalised for the backbone.
    ``classes`` are the dataset's class indices behind labels 0..way-1. ``outside_x``:
    images of classes outside the episode (EpisodeSampler's ``outside``), or None.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    way: int
    shot: int
    query: int
    classes: list[int]
    outside_x: Tensor | None = None

    def to(self, device) -> "Episode":
        return Episode(
            self.support_x.to(device, non_blocking=True),
            self.support_y.to(device, non_blocking=True),
            self.query_x.to(device, non_blocking=True),
            self.query_y.to(device, non_blocking=True),
            self.way, self.shot, self.query, self.classes,
            None if self.outside_x is None else self.outside_x.to(device, non_blocking=True),
        )
