"""Any folder of class sub-folders as a dataset: ``root/<class>/**/<image>``.

Small sets are decoded once into memory (fast episodes); big ones stay on disk
and decode per episode. Unreadable images never stop a run: they are skipped,
logged, and listed in the dataset's ``skipped``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import torch

from engine.data.class_dataset import ClassDataset, LazyClassDataset, TensorClassDataset, decode_pool
from engine.data.decode import IMAGE_EXTENSIONS
from engine.data.preprocessing import Preprocessing
from engine.data.transforms import check_preprocessing, load_uint8
from engine.errors import DatasetLayoutError, ImageDecodeError

log = logging.getLogger(__name__)

MAX_PRELOAD_IMAGES = 20_000
MAX_PRELOAD_BYTES = 1 << 30


def is_image_file(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` at any depth, sorted; hidden files and folders are ignored."""
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [n for n in dirnames if not n.startswith(".")]
        files.extend(Path(dirpath) / f for f in filenames if is_image_file(f))
    return sorted(files)


def find_class_images(root: str | Path) -> tuple[list[str], list[list[Path]]]:
    """Class names (sub-folder names, sorted) and each class's image files, found
    recursively and sorted; hidden files and folders are ignored."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset folder {root} does not exist or is not a folder")
    class_dirs = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                        key=lambda p: p.name)
    if not class_dirs:
        raise DatasetLayoutError(f"{root} has no class sub-folders; put each class's images in its own "
                                 f"sub-folder, e.g. {root / 'cats' / 'img001.jpg'}")
    names, paths = [], []
    for d in class_dirs:
        names.append(d.name)
        paths.append(image_files(d))
    empty = [n for n, p in zip(names, paths) if not p]
    if empty:
        raise DatasetLayoutError(
            f"{len(empty)} class folder(s) in {root} hold no images ({', '.join(empty[:5])}"
            f"{', ...' if len(empty) > 5 else ''}); add images ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
            "or remove those folders")
    return names, paths


def load_folder(root: str | Path, prep: Preprocessing, *, max_preload_images: int = MAX_PRELOAD_IMAGES,
                max_preload_bytes: int = MAX_PRELOAD_BYTES,
                progress: Callable[[int, int], None] | None = None) -> ClassDataset:
    """A dataset of the class sub-folders of ``root``, decoded under ``prep``.

    Preloaded into memory when it has fewer than ``max_preload_images`` images and
    their decoded pixels fit in ``max_preload_bytes``; otherwise decoded on demand.
    ``progress(done, total)`` is called while preloading.
    """
    check_preprocessing(prep)
    names, paths = find_class_images(root)
    total = sum(len(p) for p in paths)
    h, w = prep.size
    if total < max_preload_images and total * prep.channels * h * w <= max_preload_bytes:
        return _preload(Path(root), names, paths, prep, progress)
    log.info("%s: %d images, too many to preload; decoding them on demand", root, total)
    return LazyClassDataset(paths, names, prep, on_error="skip")


def _preload(root: Path, names: list[str], paths: list[list[Path]], prep: Preprocessing,
             progress: Callable[[int, int], None] | None) -> TensorClassDataset:
    flat = [p for ps in paths for p in ps]

    def load(path: Path):
        try:
            return load_uint8(path, prep)
        except ImageDecodeError as e:
            return e

    results = []
    for done, r in enumerate(decode_pool().map(load, flat), start=1):
        results.append(r)
        if progress is not None and (done % 64 == 0 or done == len(flat)):
            progress(done, len(flat))
    skipped = [(e.path, e.reason) for e in results if isinstance(e, ImageDecodeError)]
    for path, reason in skipped:
        log.warning("skipping image %s: %s", path, reason)
    good: list = []
    class_rows: list[list[int]] = []
    results_iter = iter(results)
    for ps in paths:
        rows = []
        for _ in ps:
            r = next(results_iter)
            if not isinstance(r, ImageDecodeError):
                rows.append(len(good))
                good.append(r)
        class_rows.append(rows)
    dead = [(n, ps[0]) for n, ps, rows in zip(names, paths, class_rows) if not rows]
    if dead:
        reason = dict(skipped).get(str(dead[0][1]), "unreadable")
        raise DatasetLayoutError(f"no image in class folder(s) {', '.join(n for n, _ in dead[:5])} of {root} "
                                 f"can be decoded (e.g. {dead[0][1]}: {reason}); fix or remove those folders")
    h, w = prep.size
    images = torch.stack(good) if good else torch.empty((0, prep.channels, h, w), dtype=torch.uint8)
    return TensorClassDataset(images, class_rows, names, prep, skipped=skipped)
