"""Checkpoints: tensors in safetensors, everything else in a JSON sidecar.

A checkpoint folder holds ``model.safetensors`` (the weights to use: the best
validated ones), ``model.json`` (what the weights are: method, backbone,
preprocessing, training config, metrics, project version) and, while training,
``resume.pt`` (last weights, optimiser and schedule). Nothing here ever
unpickles arbitrary objects: ``resume.pt`` is read with ``weights_only=True``
and anything that needs more is refused before any of it runs.
"""
from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.errors import CheckpointError, UnsafeCheckpointError

MAX_META_BYTES = 1 << 20  # a model.json is a few kB; a huge one is no model's
WEIGHTS = "model.safetensors"
META = "model.json"
RESUME = "resume.pt"
FORMAT = 1


def _atomic_write(path: Path, write) -> None:
    """Write through a temp file and rename, so a kill mid-save never leaves half a checkpoint."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(folder: str | Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    _atomic_write(folder / WEIGHTS, lambda p: save_file(tensors, p))
    meta = {"format": FORMAT, **meta}
    _atomic_write(folder / META, lambda p: Path(p).write_text(json.dumps(meta, indent=2) + "\n"))
    return folder


def read_meta(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    if folder.is_file():
        raise CheckpointError(f"{folder} is a file, not a model folder: give a folder made by 'fewshot train', a "
                              "bundled name, or an ONNX feature extractor (.onnx)")
    if not folder.is_dir():
        raise CheckpointError(f"model folder not found: {folder} (give a folder made by 'fewshot train' or a bundled name)")
    path = folder / META
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a model folder: it has no {META} (give a folder made by 'fewshot train')")
    meta = read_json_file(path)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is not a JSON object: it was not written by this program")
    for key in ("method", "backbone", "preprocessing"):
        if key not in meta:
            raise CheckpointError(f"{path} lacks '{key}': it was not written by this program")
    return meta


def read_json_file(path: Path) -> Any:
    """A JSON file from a model folder, refusing what no model writes: more than
    :data:`MAX_META_BYTES`, nesting deeper than Python can parse, NaN or infinite numbers."""
    def finite(text: str) -> float:
        value = float(text)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"number {text} is out of range")
        return value

    def refuse(name: str) -> float:
        raise ValueError(f"{name} is not a number a model file holds")

    try:
        if path.stat().st_size > MAX_META_BYTES:
            raise CheckpointError(f"{path} is {path.stat().st_size:,} bytes, far more than a model description; "
                                  "it is not a model file of this program")
        return json.loads(path.read_text(encoding="utf-8"), parse_float=finite, parse_constant=refuse)
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(f"cannot read {path}: it is nested too deeply to be a model description") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}; the model folder is damaged, train or copy it again") from None


def load_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    path = Path(folder) / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{Path(folder)} has no {WEIGHTS}; the model folder is incomplete")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read weights {path}: {e}; the file is damaged") from e


def save_resume(folder: str | Path, state: dict[str, Any]) -> None:
    path = Path(folder) / RESUME
    _atomic_write(path, lambda p: torch.save(state, p))


def safe_torch_load(path: str | Path) -> Any:
    """torch.load that refuses, before running any of it, a file that needs arbitrary unpickling."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"refused to load {path}: it asks to run code or build arbitrary objects when loaded, "
            "which a checkpoint never needs. Only load files you trust, made by 'fewshot train'."
        ) from e
    except (OSError, RuntimeError, EOFError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e


def load_resume(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / RESUME
    if not path.is_file():
        raise CheckpointError(f"cannot resume: {path} not found (resume needs the --out folder of an earlier run)")
    return safe_torch_load(path)
