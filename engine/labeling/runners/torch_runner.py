"""The backbone in PyTorch: normalise, forward, float32 CPU embeddings; halves its batch on out-of-memory."""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from engine.data.transforms import normalize
from engine.labeling.runners.base import default_batch_size, model_device

if TYPE_CHECKING:
    from engine.model_store import LoadedModel

log = logging.getLogger(__name__)


def is_out_of_memory(e: BaseException) -> bool:
    if isinstance(e, torch.OutOfMemoryError):
        return True
    # The CPU allocator and MPS report exhaustion as a plain RuntimeError.
    text = str(e)
    return isinstance(e, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())


class TorchRunner:
    """Runs the model's backbone on uint8 batches: normalise, forward, float32 CPU embeddings.

    Sub-batches of ``batch_size`` go through the backbone; on out-of-memory the
    size is halved and the failed sub-batch retried, and the smaller size is kept.
    """

    def __init__(self, model: "LoadedModel", batch_size: int | None = None, channels_last: bool | None = None):
        self.model = model
        self.prep = model.preprocessing
        self.device = model_device(model)
        self.batch_size = batch_size or default_batch_size(self.prep, self.device)
        # channels_last lets oneDNN skip layout reorders around every conv: 2.2x for
        # Conv4 and 1.3x for Lite0 on CPU (docs/PERFORMANCE.md). GPUs choose their own.
        self.channels_last = self.device.type == "cpu" if channels_last is None else channels_last
        self.cpu_s = 0.0
        self.images = 0
        self.count_lock = threading.Lock()  # forward streams add to the two counts at once
        if self.channels_last:
            model.learner.to(memory_format=torch.channels_last)

    backend = "torch"
    prefers_streams = False  # PyTorch's own threads beat streams when decoding is cheap (docs/PERFORMANCE.md)

    def get_threads(self) -> int:
        return torch.get_num_threads()

    def set_threads(self, n: int) -> None:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)

    def _forward(self, pixels: Tensor) -> Tensor:
        x = normalize(pixels.to(self.device, non_blocking=True), self.prep)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model.learner.embed(x).float()

    @torch.inference_mode()
    def __call__(self, pixels: Tensor) -> Tensor:
        cpu0 = time.thread_time()
        threads = torch.get_num_threads()
        try:
            return self._run(pixels)
        finally:
            # PyTorch splits each op evenly over its threads, so this thread's CPU time
            # times their number estimates the whole cost.
            cpu = (time.thread_time() - cpu0) * (threads if self.device.type == "cpu" else 1)
            with self.count_lock:
                self.cpu_s += cpu
                self.images += pixels.shape[0]

    def _run(self, pixels: Tensor) -> Tensor:
        out: list[Tensor] = []
        start = 0
        while start < pixels.shape[0]:
            size = self.batch_size
            try:
                out.append(self._forward(pixels[start:start + size]).cpu())
                start += size
                continue
            except Exception as e:
                if not is_out_of_memory(e) or size == 1:
                    raise
            # Outside the except block: the exception's traceback holds the failed
            # batch's tensors until then, and the cache cannot release them before.
            self.batch_size = size // 2
            log.warning("out of memory with batch size %d on %s; retrying with %d", size, self.device,
                        self.batch_size)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        if not out:
            return torch.empty((0, 0), dtype=torch.float32)
        return out[0] if len(out) == 1 else torch.cat(out)
