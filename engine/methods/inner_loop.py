"""The inner loop the MAML family shares, written on ``torch.func.functional_call``.

A network is a backbone plus a linear head, evaluated on a dict of *fast weights*
(name -> tensor) instead of its own parameters, so adapting a task never copies or
mutates a module: the meta-parameters stay as they are, and second-order
meta-gradients flow through the fast weights by ordinary autograd.

Batch norm. The support set is normalized with its own batch statistics (as every
MAML implementation does). Queries are normalized with the *support set's*
statistics under the same fast weights (``support`` mode, the default): each query
is then predicted alone, so a prediction never depends on which other images share
its batch, which a labeling tool needs. ``running`` mode uses the backbone's stored
running statistics for everything, in training too (frozen, as for a backbone
started from a trained model's: each image is then normalized alone, support
included). ``transductive`` mode normalizes the query
batch with its own statistics, as the MAML paper's code does (for comparison with
published figures only).
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from engine.methods.bn_folding import FoldedTwin

Weights = dict[str, Tensor]
BN_MODES = ("support", "running", "transductive")


def batch_norms(module: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    return {name: m for name, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


@contextmanager
def training_mode(module: nn.Module, mode: bool) -> Iterator[None]:
    """``module`` in train (``True``) or eval mode for the block, restored after."""
    modes = [(m, m.training) for m in module.modules()]
    module.train(mode)
    try:
        yield
    finally:
        for m, was in modes:
            m.training = was


class StatsRecorder:
    """Records the batch statistics each batch-norm layer normalizes with in a forward
    pass (forward pre-hooks, so it works inside ``functional_call``).

    Computing a mean and a variance of every layer's input again cost 9% of a MAML
    meta-iteration. Batch norm computes them anyway, and with momentum 1 it writes
    them into the running buffers it is given (the unbiased variance): so while
    recording, the momentum is 1, the hook only counts each layer's values per channel,
    and :meth:`FunctionalNet.embed_recording` reads the statistics back from its scratch
    buffers. A layer that keeps no running statistics is measured by the hook."""

    def __init__(self, module: nn.Module):
        self.norms = batch_norms(module)
        self.counts: dict[str, int] = {}
        self.stats: Weights = {}
        self._active = False
        self._handles = [m.register_forward_pre_hook(self._hook(name)) for name, m in self.norms.items()]

    def _hook(self, name: str) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            if not self._active:
                return
            x = args[0]
            self.counts[name] = x.numel() // x.shape[1]
            if not module.track_running_stats:
                x = x.detach()
                dims = [0, *range(2, x.dim())]
                self.stats[f"{name}.running_mean"] = x.mean(dim=dims)
                self.stats[f"{name}.running_var"] = x.var(dim=dims, unbiased=False)
        return hook

    @contextmanager
    def recording(self) -> Iterator[Weights]:
        self.counts, self.stats = {}, {}
        momenta = {name: m.momentum for name, m in self.norms.items()}
        self._active = True
        try:
            for m in self.norms.values():
                m.momentum = 1.0
            yield self.stats
        finally:
            self._active = False
            for name, m in self.norms.items():
                m.momentum = momenta[name]

    def read_back(self, buffers: Weights) -> Weights:
        """The statistics of the recorded pass, from the running buffers it updated."""
        for name, n in self.counts.items():
            key = f"{name}.running_mean"
            if key in self.stats or key not in buffers:
                continue
            self.stats[key] = buffers[key]
            self.stats[f"{name}.running_var"] = buffers[f"{name}.running_var"] * ((n - 1) / n)
        return dict(self.stats)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


class FunctionalNet:
    """A backbone evaluated on fast weights; the head is ``z @ W.T + b`` with ``W``, ``b``
    in the same dict (``head.weight``, ``head.bias``), sized for the task's classes."""

    def __init__(self, backbone: nn.Module, fold_bn: bool = True):
        self.backbone = backbone
        self.folded = FoldedTwin.build(backbone) if fold_bn else None
        self.recorder = StatsRecorder(backbone)
        self._scratch: Weights | None = None

    def backbone_weights(self) -> Weights:
        return dict(self.backbone.named_parameters())

    def running_stats(self) -> Weights:
        return {k: v for k, v in self.backbone.named_buffers() if k.endswith(("running_mean", "running_var"))}

    def scratch_buffers(self) -> Weights:
        """Copies of the backbone's buffers for train-mode passes to update, so that
        adapting never changes the module's own running statistics."""
        return {k: v.clone() for k, v in self.backbone.named_buffers()}

    def embed(self, weights: Weights, x: Tensor, stats: Weights | None = None) -> Tensor:
        """Features under ``weights``: with ``stats`` None, batch-norm uses the batch's own
        statistics; else the given ones (eval mode), each image alone."""
        own = {k: v for k, v in weights.items() if not k.startswith("head.")}
        if stats is None:
            with training_mode(self.backbone, True):
                return functional_call(self.backbone, (own, self.scratch_buffers()), (x,))
        buffers = {**dict(self.backbone.named_buffers()), **stats}
        if self.folded is not None:
            z = self.folded.embed({**buffers, **own}, buffers, x)
            if z is not None:
                return z
        with training_mode(self.backbone, False):
            return functional_call(self.backbone, (own, buffers), (x,))

    def embed_recording(self, weights: Weights, x: Tensor) -> tuple[Tensor, Weights]:
        """Batch-statistics features of ``x`` and the statistics they were normalized with."""
        own = {k: v for k, v in weights.items() if not k.startswith("head.")}
        buffers = self.scratch_buffers()
        with self.recorder.recording(), training_mode(self.backbone, True):
            z = functional_call(self.backbone, (own, buffers), (x,))
        return z, self.recorder.read_back(buffers)

    @staticmethod
    def head(weights: Weights, z: Tensor) -> Tensor:
        return F.linear(z, weights["head.weight"], weights["head.bias"])


def inner_grads(loss: Tensor, weights: Weights, names: list[str], second_order: bool) -> list[Tensor]:
    """d loss / d weights[name] for ``names``; kept in the graph for second order."""
    grads = torch.autograd.grad(loss, [weights[n] for n in names], create_graph=second_order,
                                allow_unused=True)
    return [torch.zeros_like(weights[n]) if g is None else g for n, g in zip(names, grads)]


def sgd_step(weights: Weights, names: list[str], grads: list[Tensor], rates: list[Tensor | float]) -> Weights:
    """One inner step: ``w - rate * grad`` for each adapted name (``rate`` a number, a
    learned scalar or a learned per-element tensor), the other weights as they are."""
    new = dict(weights)
    for n, g, r in zip(names, grads, rates):
        new[n] = weights[n] - r * g
    return new


def detached_copy(weights: Weights, names: list[str]) -> Weights:
    """For first-order steps: the adapted weights as leaves of their own, so the
    gradient of the inner loss does not build a graph through the meta-parameters."""
    return {k: (v.detach().requires_grad_(True) if k in names else v) for k, v in weights.items()}
