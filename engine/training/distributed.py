"""Data-parallel meta-training on ``torch.distributed`` (started by torchrun).

Each rank meta-learns on its own share of every outer step's episodes, and the
gradients are averaged across ranks before the optimizer steps, so W ranks with
a meta-batch of B each take the same step as one process with a meta-batch of
W*B. Methods run their inner loops through ``torch.func`` on weights they pass
explicitly, which DistributedDataParallel's module hooks never see, so the
averaging is one all-reduce over the flattened gradients, issued where every
method already ends its step: ``optimizer.step()``. A stop requested on any
rank rides in the same all-reduce, so all ranks stop after the same step.
"""
from __future__ import annotations

import datetime
import logging
import os

import torch
import torch.distributed as dist

from engine.errors import FewShotError

log = logging.getLogger(__name__)


def launched_world_size() -> int:
    """The number of processes torchrun started (1 without torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


class Group:
    """This process's place in the run: rank, world size, and the collectives the trainer needs."""

    def __init__(self, rank: int = 0, world_size: int = 1):
        self.rank, self.world_size = rank, world_size

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def join(cls, device: torch.device) -> "Group":
        """Join the process group torchrun set up in the environment, or a group of one."""
        if launched_world_size() == 1:
            return cls()
        if not dist.is_available():
            raise FewShotError("this PyTorch build has no torch.distributed; run without torchrun")
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            try:
                # A rank waiting on a crashed peer gives up instead of hanging forever.
                dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
            except (RuntimeError, ValueError) as e:
                raise FewShotError(f"cannot join the torchrun process group ({e}); check --nnodes, "
                                   "--rdzv-endpoint and that every machine can reach it") from e
        return cls(dist.get_rank(), dist.get_world_size())

    def average_gradients(self, params: list[torch.Tensor], stop: bool) -> bool:
        """Average ``params``' gradients over ranks in one all-reduce; returns whether any rank
        asked to stop. A parameter no rank gave a gradient keeps ``grad=None`` (Adam skips it)."""
        if self.world_size == 1:
            return stop
        ref = params[0]
        has = torch.tensor([p.grad is not None for p in params], dtype=ref.dtype, device=ref.device)
        flat = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), dtype=ref.dtype,
                                                                            device=ref.device) for p in params]
        buffer = torch.cat(flat + [has, torch.tensor([float(stop)], dtype=ref.dtype, device=ref.device)])
        dist.all_reduce(buffer)
        n = len(params)
        counts, stops = buffer[-n - 1:-1], buffer[-1]
        offset = 0
        for p, count in zip(params, counts.tolist()):
            size = p.numel()
            if count > 0:
                p.grad = (buffer[offset:offset + size] / self.world_size).view_as(p).to(p.dtype)
            offset += size
        return bool(stops > 0)

    def average_buffers(self, module: torch.nn.Module) -> None:
        """Batch-norm running statistics differ per rank (each saw its own episodes): save their mean."""
        if self.world_size == 1:
            return
        for b in module.buffers():
            if b.is_floating_point():
                dist.all_reduce(b)
                b /= self.world_size

    def any(self, flag: bool, device: torch.device) -> bool:
        if self.world_size == 1:
            return flag
        t = torch.tensor([float(flag)], device=device)
        dist.all_reduce(t)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


class AveragingOptimizer:
    """The run's optimizer, whose ``step`` first averages gradients across ranks.

    Handed to ``MetaLearner.outer_step``; everything else is the wrapped optimizer's."""

    def __init__(self, optimizer: torch.optim.Optimizer, group: Group, stop_requested):
        self._optimizer, self._group, self._stop_requested = optimizer, group, stop_requested
        self.stop_everywhere = False

    def step(self, closure=None):
        params = [p for g in self._optimizer.param_groups for p in g["params"]]
        self.stop_everywhere = self._group.average_gradients(params, self._stop_requested())
        return self._optimizer.step(closure)

    def __getattr__(self, name):
        return getattr(self._optimizer, name)
