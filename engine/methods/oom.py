"""Out of GPU memory: halve the batch and carry on, rather than losing a labeling run."""
from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor

log = logging.getLogger(__name__)


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def halving_on_oom(fn: Callable[[Tensor], Tensor], x: Tensor, min_batch: int = 1) -> Tensor:
    """``fn(x)``, or, when the device runs out of memory, ``fn`` over halves of ``x``
    (recursively) concatenated. Only for functions of each row alone."""
    try:
        return fn(x)
    except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
        if not is_oom(e) or x.shape[0] <= min_batch:
            raise
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    half = x.shape[0] // 2
    log.warning("out of memory on a batch of %d; trying two batches of %d", x.shape[0], half)
    return torch.cat([halving_on_oom(fn, x[:half], min_batch), halving_on_oom(fn, x[half:], min_batch)])
