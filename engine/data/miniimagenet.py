"""mini-ImageNet (Vinyals et al. 2016, split of Ravi & Larochelle 2017) in its two
common layouts:

(a) ``root/images/<filename>`` plus ``root/{train,val,test}.csv`` (``filename,label``):
    decoded on demand, a :class:`LazyClassDataset`;
(b) ``root/mini-imagenet-cache-{train,val,test}.pkl``: a pickled dict with
    ``image_data`` (uint8 N x 84 x 84 x 3) and ``class_dict`` ({wnid: [indices]}):
    preloaded, a :class:`TensorClassDataset`.

Pickles found on the internet are untrusted: they are read with an unpickler that
knows only the few numpy functions that rebuild arrays and refuses everything else.
"""
from __future__ import annotations

import codecs
import csv
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.data.class_dataset import ClassDataset, LazyClassDataset, TensorClassDataset
from engine.data.preprocessing import Preprocessing
from engine.data.transforms import check_preprocessing, resize_uint8
from engine.errors import DatasetLayoutError, FewShotError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def miniimagenet_preprocessing(image_size: int = 84) -> Preprocessing:
    return Preprocessing(size=(image_size, image_size), channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                         resize="stretch")


def pickle_path(root: str | Path, split: str) -> Path:
    return Path(root) / f"mini-imagenet-cache-{split}.pkl"


def load_miniimagenet(root: str | Path, split: str, image_size: int = 84, *, layout: str = "auto",
                      prep: Preprocessing | None = None) -> ClassDataset:
    """mini-ImageNet ``split`` (train, val or test); classes sorted by WordNet id.

    ``layout``: ``"images"`` (csv + images folder), ``"pickle"``, or ``"auto"`` (the
    pickle cache when present, since it loads without decoding 38,400 JPEGs).
    ``prep`` overrides :func:`miniimagenet_preprocessing` (then ``image_size`` is ignored).
    """
    if split not in SPLITS:
        raise FewShotError(f"unknown mini-ImageNet split '{split}'; choose one of {', '.join(SPLITS)}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"mini-ImageNet folder {root} does not exist")
    prep = prep or miniimagenet_preprocessing(image_size)
    check_preprocessing(prep)
    if layout == "auto":
        layout = "pickle" if pickle_path(root, split).is_file() else "images"
    if layout == "pickle":
        return _load_pickle(pickle_path(root, split), prep)
    if layout == "images":
        return _load_images(root, split, prep)
    raise FewShotError(f"unknown mini-ImageNet layout '{layout}'; use auto, images or pickle")


def _load_images(root: Path, split: str, prep: Preprocessing) -> LazyClassDataset:
    csv_path, images = root / f"{split}.csv", root / "images"
    if not csv_path.is_file():
        raise DatasetLayoutError(f"mini-ImageNet needs {csv_path} (the Ravi & Larochelle split file, "
                                 f"'filename,label' per line) or {pickle_path(root, split).name}; neither is in {root}")
    if not images.is_dir():
        raise DatasetLayoutError(f"mini-ImageNet images folder {images} is missing; put the image files named in "
                                 f"{csv_path.name} there (or use the {pickle_path(root, split).name} cache)")
    by_class = _read_split_csv(csv_path)
    present = {p.name for p in images.iterdir()}
    missing = [f for files in by_class.values() for f in files if f not in present]
    if missing:
        raise DatasetLayoutError(f"{len(missing)} of the images listed in {csv_path.name} are not in {images} "
                                 f"(e.g. {missing[0]}); copy the complete image set there")
    wnids = sorted(by_class)
    return LazyClassDataset([[images / f for f in by_class[w]] for w in wnids], wnids, prep)


def _read_split_csv(path: Path) -> dict[str, list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["filename", "label"]:
            raise DatasetLayoutError(f"{path} must start with the header 'filename,label', found {header}")
        by_class: dict[str, list[str]] = {}
        for n, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise DatasetLayoutError(f"{path} line {n}: expected 'filename,label', found {row}")
            name = row[0].strip()
            if Path(name).name != name:
                raise DatasetLayoutError(f"{path} line {n}: '{name}' must be a plain file name inside images/")
            by_class.setdefault(row[1].strip(), []).append(name)
    if not by_class:
        raise DatasetLayoutError(f"{path} lists no images")
    return by_class


class _RefusedGlobal(pickle.UnpicklingError):
    """The stream asked for a function or class outside the allow-list."""


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals numpy arrays are rebuilt from; anything else (os.system,
    builtins.eval, any class) is refused before it can run."""

    def find_class(self, module: str, name: str) -> Any:
        obj = _ALLOWED_GLOBALS.get((module, name))
        if obj is None:
            raise _RefusedGlobal(f"the file asks for {module}.{name}, which a data file never needs")
        return obj


def _numpy_globals() -> dict[tuple[str, str], Any]:
    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed core to _core
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how protocol-2 pickles from Python 2 spell bytes
    }
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        allowed[(f"{mod}.multiarray", "scalar")] = core.multiarray.scalar
        allowed[(f"{mod}.numeric", "_frombuffer")] = core.numeric._frombuffer
    return allowed


_ALLOWED_GLOBALS = _numpy_globals()


def safe_unpickle(path: Path) -> Any:
    """Unpickle a file that may only hold plain containers and numpy arrays."""
    try:
        with open(path, "rb") as fh:
            # latin1 lets Python 2 pickles (how the original caches were made) load as str/bytes
            return _ArrayOnlyUnpickler(fh, encoding="latin1").load()
    except _RefusedGlobal as e:
        raise DatasetLayoutError(f"refused to load {path}: {e}. It is not a plain mini-ImageNet cache; "
                                 "delete it and use the csv + images layout or a trusted cache") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, OSError, MemoryError) as e:
        raise DatasetLayoutError(f"cannot read {path} ({type(e).__name__}: {e}); the file is damaged, "
                                 "download or build it again") from None


def _load_pickle(path: Path, prep: Preprocessing) -> TensorClassDataset:
    data = safe_unpickle(path)
    if not isinstance(data, dict) or "image_data" not in data or "class_dict" not in data:
        raise DatasetLayoutError(f"{path} must hold a dict with 'image_data' and 'class_dict'; "
                                 f"found {type(data).__name__}")
    arr, class_dict = data["image_data"], data["class_dict"]
    if not (isinstance(arr, np.ndarray) and arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[3] == 3):
        raise DatasetLayoutError(f"{path}: 'image_data' must be uint8 N x H x W x 3, found "
                                 f"{getattr(arr, 'dtype', type(arr).__name__)} {getattr(arr, 'shape', '')}")
    if not isinstance(class_dict, dict) or not class_dict:
        raise DatasetLayoutError(f"{path}: 'class_dict' must map each WordNet id to a list of image indices")
    classes: dict[str, list[int]] = {}
    for wnid, indices in class_dict.items():
        name = wnid.decode() if isinstance(wnid, bytes) else str(wnid)
        try:
            ix = [int(i) for i in indices]
        except (TypeError, ValueError):
            raise DatasetLayoutError(f"{path}: class '{name}' does not list integer image indices") from None
        if not ix or min(ix) < 0 or max(ix) >= arr.shape[0]:
            raise DatasetLayoutError(f"{path}: class '{name}' lists no images or indices outside 0..{arr.shape[0] - 1}")
        classes[name] = ix
    images = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)
    images = resize_uint8(images, prep)  # also the copy that makes (N, C, H, W) contiguous
    wnids = sorted(classes)
    log.info("mini-ImageNet %s: %d images in %d classes from %s", path.name, images.shape[0], len(wnids), path)
    return TensorClassDataset(images, [classes[w] for w in wnids], wnids, prep)
