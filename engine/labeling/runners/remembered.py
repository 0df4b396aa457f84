"""The measured choice between PyTorch and onnxruntime, kept on disk beside the export.

Measuring which backend runs a backbone faster costs a few forward passes of
each (2.3 s for Lite0 here): a `fewshot label` process paid it on every start,
half the time of labeling 200 photos. The answer depends on the machine, the
libraries and the batch, not on the process, so it is stored in
``<export>.choice.json`` under a key naming all of them, and measured again
only when one of them changes. A damaged or foreign file is ignored and rewritten.
"""
from __future__ import annotations

import logging
import os
import platform
import time
from functools import lru_cache
from pathlib import Path

from engine.json_file import read_json_dict, write_json_atomic

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def machine_fingerprint() -> str:
    """CPU model, core counts and the runtimes' versions: what the speeds depend on."""
    import onnxruntime
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}|{os.cpu_count()} cpus|{cores} usable|torch {torch.__version__}|onnxruntime {onnxruntime.__version__}"


def choice_file(export: Path) -> Path:
    return export.with_name(export.stem + ".choice.json")


def recall(export: Path, key: str) -> str | None:
    """The backend stored for ``key`` (threads and batch) on this machine, or None."""
    entry = read_json_dict(choice_file(export)).get(f"{machine_fingerprint()}|{key}")
    backend = entry.get("backend") if isinstance(entry, dict) else None
    return backend if backend in ("torch", "onnxruntime") else None


def remember(export: Path, key: str, backend: str, speeds: dict[str, float]) -> None:
    """Store a measured choice; a failure to write only costs measuring again next time."""
    path = choice_file(export)
    data = read_json_dict(path)
    data[f"{machine_fingerprint()}|{key}"] = {"backend": backend, "images_per_s": speeds, "measured_at": time.time()}
    try:
        write_json_atomic(path, data)
    except OSError as e:
        log.warning("could not store the backend choice in %s (%s)", path, e)
