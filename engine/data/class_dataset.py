"""Datasets seen as classes of images: what episodic training and evaluation need.

Class ``c`` holds ``class_size(c)`` images addressed ``0..class_size(c)-1``.
Implementations return uint8 pixels (``gather_uint8``) and the base class
normalises them with the dataset's :class:`Preprocessing`.
"""
from __future__ import annotations

import logging
import os
import threading
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from engine.data.preprocessing import Preprocessing
from engine.data.transforms import check_preprocessing, load_uint8, normalize
from engine.errors import EpisodeError, ImageDecodeError

log = logging.getLogger(__name__)


class ClassDataset(ABC):
    """Images grouped by class. ``skipped`` lists (path, reason) of images that could
    not be decoded and were left out; ``is_lazy`` says whether reads decode files."""

    class_names: list[str]
    preprocessing: Preprocessing
    skipped: list[tuple[str, str]]
    is_lazy: bool = False

    def __len__(self) -> int:
        return len(self.class_names)

    @abstractmethod
    def class_size(self, c: int) -> int:
        """Number of images in class ``c``."""

    def class_sizes(self) -> list[int]:
        return [self.class_size(c) for c in range(len(self))]

    @abstractmethod
    def gather_uint8(self, classes: Tensor, idx: Tensor) -> Tensor:
        """uint8 (K*n, C, H, W) for images ``idx[k, j]`` of class ``classes[k]``, class-major.

        ``classes`` is a long tensor (K,), ``idx`` a long tensor (K, n)."""

    @abstractmethod
    def subset(self, classes: Sequence[int]) -> "ClassDataset":
        """A dataset of only these classes (in this order), sharing the stored images."""

    def gather(self, classes: Tensor, idx: Tensor) -> Tensor:
        """Like :meth:`gather_uint8`, normalised to float32 for the model."""
        return normalize(self.gather_uint8(classes, idx), self.preprocessing)

    def get_uint8(self, c: int, idx: Sequence[int]) -> Tensor:
        return self.gather_uint8(torch.tensor([c]), torch.as_tensor(list(idx), dtype=torch.long).view(1, -1))

    def get(self, c: int, idx: Sequence[int]) -> Tensor:
        """Normalised float (n, C, H, W) images ``idx`` of class ``c``."""
        return normalize(self.get_uint8(c, idx), self.preprocessing)

    def _check_request(self, classes: Tensor, idx: Tensor, sizes: Tensor) -> None:
        if classes.ndim != 1 or idx.ndim != 2 or idx.shape[0] != classes.shape[0]:
            raise ValueError(f"classes must be (K,) and idx (K, n); got {tuple(classes.shape)} and {tuple(idx.shape)}")
        if classes.numel() and (classes.min() < 0 or classes.max() >= len(self)):
            raise IndexError(f"class index out of range 0..{len(self) - 1}")
        if idx.numel() and ((idx < 0).any() or (idx >= sizes[classes].unsqueeze(1)).any()):
            raise IndexError("image index out of range for its class")


def _rotate_per_row(x: Tensor, k: Tensor) -> Tensor:
    """Rotate row i of x by k[i] quarter turns counter-clockwise (as PIL's rotate).

    At most three rot90 calls, one per distinct non-zero k, never one per image."""
    for quarter in (1, 2, 3):
        mask = k == quarter
        if bool(mask.any()):
            x[mask] = torch.rot90(x[mask], quarter, dims=(-2, -1))
    return x


def _check_rotations(rotations: Sequence[int] | None, n: int, size: tuple[int, int]) -> Tensor | None:
    if rotations is None:
        return None
    rot = torch.as_tensor(list(rotations), dtype=torch.long)
    if rot.shape != (n,):
        raise ValueError(f"need one rotation per class ({n}), got {tuple(rot.shape)}")
    if rot.numel() and (rot.min() < 0 or rot.max() > 3):
        raise ValueError("rotations are quarter turns 0..3")
    if bool((rot % 2 == 1).any()) and size[0] != size[1]:
        raise ValueError(f"quarter-turn rotations need square images, not {size}")
    return rot if bool(rot.any()) else None


class TensorClassDataset(ClassDataset):
    """All images preloaded as one uint8 tensor (M, C, H, W); classes index into it.

    Several classes may share images (e.g. Omniglot rotations: each image is stored
    once, and ``rotations[c]`` quarter turns are applied when class ``c`` is read).
    """

    def __init__(self, images: Tensor, class_indices: Sequence[Sequence[int] | Tensor],
                 class_names: Sequence[str], preprocessing: Preprocessing,
                 rotations: Sequence[int] | None = None, skipped: list[tuple[str, str]] | None = None):
        check_preprocessing(preprocessing)
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (M, C, H, W), got {images.dtype} {tuple(images.shape)}")
        expected = (preprocessing.channels, *preprocessing.size)
        if tuple(images.shape[1:]) != expected:
            raise ValueError(f"images are {tuple(images.shape[1:])} but preprocessing says {expected}")
        if len(class_indices) != len(class_names):
            raise ValueError(f"{len(class_indices)} index lists for {len(class_names)} class names")
        self.images = images
        self.class_names = list(class_names)
        self.preprocessing = preprocessing
        self.skipped = list(skipped or [])
        parts = [torch.as_tensor(ix, dtype=torch.long).reshape(-1) for ix in class_indices]
        self._sizes = torch.tensor([len(p) for p in parts], dtype=torch.long)
        self._offsets = torch.zeros(len(parts) + 1, dtype=torch.long)
        torch.cumsum(self._sizes, 0, out=self._offsets[1:])
        self._flat = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
        if self._flat.numel() and (self._flat.min() < 0 or self._flat.max() >= images.shape[0]):
            raise ValueError("class indices point outside the image tensor")
        self._rot = _check_rotations(rotations, len(parts), preprocessing.size)

    def class_size(self, c: int) -> int:
        return int(self._sizes[c])

    def class_sizes(self) -> list[int]:
        return self._sizes.tolist()

    def class_indices(self, c: int) -> Tensor:
        """Rows of :attr:`images` that make up class ``c``."""
        return self._flat[self._offsets[c]:self._offsets[c + 1]]

    def rotation(self, c: int) -> int:
        return 0 if self._rot is None else int(self._rot[c])

    def gather_uint8(self, classes: Tensor, idx: Tensor) -> Tensor:
        classes = torch.as_tensor(classes, dtype=torch.long)
        idx = torch.as_tensor(idx, dtype=torch.long)
        self._check_request(classes, idx, self._sizes)
        rows = self._flat[(self._offsets[classes].unsqueeze(1) + idx).reshape(-1)]
        out = self.images[rows]  # the one gather of the whole request
        if self._rot is not None:
            out = _rotate_per_row(out, self._rot[classes].repeat_interleave(idx.shape[1]))
        return out

    def subset(self, classes: Sequence[int]) -> "TensorClassDataset":
        cs = list(classes)
        return TensorClassDataset(
            self.images, [self.class_indices(c) for c in cs], [self.class_names[c] for c in cs],
            self.preprocessing, rotations=None if self._rot is None else [int(self._rot[c]) for c in cs],
            skipped=self.skipped)


_POOL_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None


def decode_pool() -> ThreadPoolExecutor:
    """One shared pool for decoding: Pillow releases the GIL while it inflates and
    resizes, so threads overlap on big images without process start-up costs."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2), thread_name_prefix="decode")
        return _POOL


class LazyClassDataset(ClassDataset):
    """Images stay on disk and are decoded when read (in :func:`decode_pool`).

    With ``on_error="skip"`` an image that fails to decode is recorded in
    :attr:`skipped`, never tried again, and replaced by the next good image of the
    same class, so one bad file cannot stop a long training run.
    """

    is_lazy = True

    def __init__(self, paths: Sequence[Sequence[str | Path]], class_names: Sequence[str],
                 preprocessing: Preprocessing, rotations: Sequence[int] | None = None,
                 on_error: str = "skip"):
        check_preprocessing(preprocessing)
        if len(paths) != len(class_names):
            raise ValueError(f"{len(paths)} path lists for {len(class_names)} class names")
        if on_error not in ("skip", "raise"):
            raise ValueError("on_error is 'skip' or 'raise'")
        self.paths = [[Path(p) for p in ps] for ps in paths]
        self.class_names = list(class_names)
        self.preprocessing = preprocessing
        self.on_error = on_error
        self.skipped = []
        self._sizes = torch.tensor([len(p) for p in self.paths], dtype=torch.long)
        self._rot = _check_rotations(rotations, len(self.paths), preprocessing.size)
        self._bad: set[Path] = set()
        self._lock = threading.Lock()

    def class_size(self, c: int) -> int:
        return len(self.paths[c])

    def gather_uint8(self, classes: Tensor, idx: Tensor) -> Tensor:
        classes = torch.as_tensor(classes, dtype=torch.long)
        idx = torch.as_tensor(idx, dtype=torch.long)
        self._check_request(classes, idx, self._sizes)
        wanted = [(c, i) for c, row in zip(classes.tolist(), idx.tolist()) for i in row]
        if not wanted:
            h, w = self.preprocessing.size
            return torch.empty((0, self.preprocessing.channels, h, w), dtype=torch.uint8)
        futures = [decode_pool().submit(self._try_load, self.paths[c][i]) for c, i in wanted]
        images = []
        for (c, i), fut in zip(wanted, futures):
            img = fut.result()
            if img is None:
                img = self._replacement(c, i)
            images.append(img)
        out = torch.stack(images)
        if self._rot is not None:
            out = _rotate_per_row(out, self._rot[classes].repeat_interleave(idx.shape[1]))
        return out

    def subset(self, classes: Sequence[int]) -> "LazyClassDataset":
        cs = list(classes)
        sub = LazyClassDataset([self.paths[c] for c in cs], [self.class_names[c] for c in cs],
                               self.preprocessing,
                               rotations=None if self._rot is None else [int(self._rot[c]) for c in cs],
                               on_error=self.on_error)
        sub.skipped, sub._bad, sub._lock = self.skipped, self._bad, self._lock  # one record of bad files
        return sub

    def _try_load(self, path: Path) -> Tensor | None:
        with self._lock:
            if path in self._bad:
                return None
        try:
            return load_uint8(path, self.preprocessing)
        except ImageDecodeError as e:
            if self.on_error == "raise":
                raise
            with self._lock:
                if path not in self._bad:
                    self._bad.add(path)
                    self.skipped.append((str(path), e.reason))
                    log.warning("skipping image %s: %s", path, e.reason)
            return None

    def _replacement(self, c: int, i: int) -> Tensor:
        n = len(self.paths[c])
        for step in range(1, n):
            img = self._try_load(self.paths[c][(i + step) % n])
            if img is not None:
                return img
        raise EpisodeError(f"no image of class '{self.class_names[c]}' can be decoded "
                           f"(first failure: {self.paths[c][0]}); fix or remove that class folder")
