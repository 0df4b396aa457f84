"""What every backbone runner shares: the protocol the embedder drives, and batch sizing.

A runner takes uint8 batches (N, C, H, W) and returns float32 CPU embeddings, so the
embedding cache never knows which one filled it. Two exist: :mod:`torch_runner`
(PyTorch, any device) and :mod:`onnx_runner` (onnxruntime on the CPU, the backbone
exported once per set of weights); :mod:`choice` picks the faster for a model.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from engine.data.preprocessing import Preprocessing

if TYPE_CHECKING:
    from engine.model_store import LoadedModel

# Starting batch sizes by input size; halved on out-of-memory. On CPU bigger
# batches stop paying off early (the arithmetic is already vectorised inside an
# image); on a GPU they are what fills the device.
SMALL_INPUT_PIXELS = 64 * 64 * 3
CPU_BATCH = {"small": 256, "large": 32}
GPU_BATCH = {"small": 1024, "large": 128}


class Runner(Protocol):
    """How ``embed_items`` drives a backbone: called on a uint8 batch; ``batch_size``
    (sub-batches per forward), ``device``, ``backend`` (its name), ``prefers_streams``
    (a stream per core beats its own threading), and CPU accounting (``cpu_s`` and
    ``images``, under ``count_lock``) that run plans are measured with."""

    backend: str
    prefers_streams: bool
    batch_size: int
    device: torch.device
    cpu_s: float
    images: int
    count_lock: threading.Lock

    def get_threads(self) -> int: ...

    def set_threads(self, n: int) -> None: ...

    def __call__(self, pixels: Tensor) -> Tensor: ...


def model_device(model: "LoadedModel") -> torch.device:
    param = next(model.learner.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def default_batch_size(prep: Preprocessing, device: torch.device) -> int:
    h, w = prep.size
    size = "small" if h * w * prep.channels <= SMALL_INPUT_PIXELS else "large"
    return (GPU_BATCH if device.type == "cuda" else CPU_BATCH)[size]
