"""Image decoding, dataset layouts and episode sampling (no Qt here).

The names below load on first use (PEP 562): ``engine.data.decode`` and
``engine.data.pixels`` need only Pillow and NumPy, and importing them must not
pull in torch (``fewshot predict`` runs on onnxruntime alone, and the app's
first window must not wait for torch).
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ClassDataset": "class_dataset", "LazyClassDataset": "class_dataset", "TensorClassDataset": "class_dataset",
    "decode_image": "decode", "to_mode": "decode",
    "Episode": "episodes",
    "IMAGE_EXTENSIONS": "decode", "find_class_images": "folder", "load_folder": "folder",
    "LakeRun": "lake_runs", "load_lake_runs": "lake_runs",
    "load_miniimagenet": "miniimagenet", "miniimagenet_preprocessing": "miniimagenet",
    "OmniglotArchive": "omniglot", "load_omniglot": "omniglot", "omniglot_preprocessing": "omniglot",
    "Preprocessing": "preprocessing",
    "EpisodeSampler": "sampler",
    "load_array": "pixels", "normalize_array": "pixels",
    "image_to_uint8": "transforms", "load_uint8": "transforms", "normalize": "transforms",
    "resize_uint8": "transforms",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.data' has no attribute '{name}'")
    return getattr(importlib.import_module(f"engine.data.{module}"), name)
