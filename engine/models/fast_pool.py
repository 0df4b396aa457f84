"""2x2 max pooling, stride 2, through PyTorch's channels-last CPU kernel.

PyTorch's CPU ``max_pool2d`` is slow on contiguous (NCHW) activations: on 75x64x28x28
floats (a MAML query batch) it took 9.6 ms, the channels-last kernel 0.7 ms plus 1.5 ms
to change the layout, and pooling was a quarter of a meta-iteration's time
(docs/PERFORMANCE.md). Its backward is the other way round (the NCHW kernel is the fast
one), so the forward pools in channels-last and the backward runs the NCHW kernel with
the same indices (an index is a position in the H x W plane, whatever the layout).
Values, indices and gradients are exactly ``F.max_pool2d``'s (tests compare them, ties
included); the backward is an autograd op, so second-order MAML differentiates through it.

Small tensors, CUDA, exports (``torch.export``, ONNX: the graph gets ONNX's MaxPool)
and compiled graphs use ``F.max_pool2d`` itself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CL = torch.channels_last
MIN_ELEMENTS = 1 << 16  # below this the layout changes cost more than they save


class _MaxPool2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        out, indices = F.max_pool2d(x.contiguous(memory_format=CL), 2, return_indices=True)
        indices = indices.contiguous()
        ctx.save_for_backward(x, indices)
        return out.contiguous()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        x, indices = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(grad.contiguous(), x, [2, 2], [2, 2], [0, 0],
                                                               [1, 1], False, indices)


def max_pool2(x: Tensor) -> Tensor:
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return F.max_pool2d(x, 2)  # an export or a compiled graph: the plain op, no shape-dependent branch
    if x.dim() != 4 or x.device.type != "cpu" or x.numel() < MIN_ELEMENTS or not x.is_contiguous():
        return F.max_pool2d(x, 2)
    if not (torch.is_grad_enabled() and x.requires_grad):
        return F.max_pool2d(x.contiguous(memory_format=CL), 2).contiguous()
    return _MaxPool2.apply(x)


class MaxPool2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)`` with the kernel choice above (the same module type for
    anything that inspects a network; no parameters, so saved weights are unchanged)."""

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: Tensor) -> Tensor:
        return max_pool2(x)
