"""Batch norm on given statistics folded into the convolution before it.

With fixed statistics (a query normalized by the support set's, or by stored running
ones), ``BN(conv(x; W, b))`` is the per-channel affine map
``conv(x; W * s, (b - mean) * s + beta)`` with ``s = gamma / sqrt(var + eps)``: the
same function, with no normalization pass over the activations and none in the
backward, where it cost 17% of a MAML meta-iteration (docs/PERFORMANCE.md). Most of a
meta-iteration's images are queries, so this is where the time is.

A twin of the backbone with its batch norms replaced by ``nn.Identity`` is built once
(a structure to ``functional_call``, holding no weights that are used); the folded
weights are recomputed from the fast weights at every call, so gradients reach the
convolution's and the batch norm's weights through them. Backbones where some batch norm
does not directly follow a convolution in a ``Sequential`` are not folded.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.func import functional_call

Weights = dict[str, Tensor]


class FoldedTwin:
    """``embed(weights, buffers, x)``: the backbone in eval mode with every batch norm
    folded into its convolution; None from :meth:`build` when the backbone does not fit."""

    def __init__(self, twin: nn.Module, pairs: dict[str, tuple[str, float]]):
        self.twin = twin
        self.pairs = pairs  # conv name -> (its batch norm's name, eps)
        # Every tensor the twin holds must come from the call: its own copies are stale.
        self.needs = {n for n, _ in twin.named_parameters()} | {n for n, _ in twin.named_buffers()}

    @classmethod
    def build(cls, backbone: nn.Module) -> "FoldedTwin | None":
        pairs: dict[str, tuple[str, float]] = {}
        norms = [n for n, m in backbone.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for parent_name, parent in backbone.named_modules():
            if not isinstance(parent, nn.Sequential):
                continue
            children = list(parent.named_children())
            for (cname, conv), (bname, bn) in zip(children, children[1:]):
                if (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.affine
                        and conv.out_channels == bn.num_features):
                    prefix = f"{parent_name}." if parent_name else ""
                    pairs[prefix + cname] = (prefix + bname, float(bn.eps))
        if not pairs or len(pairs) != len(norms):
            return None
        twin = copy.deepcopy(backbone)
        for conv_name, (bn_name, _) in pairs.items():
            parent_name, _, child = bn_name.rpartition(".")
            parent = twin.get_submodule(parent_name) if parent_name else twin
            setattr(parent, child, nn.Identity())
            conv = twin.get_submodule(conv_name)
            if conv.bias is None:
                conv.bias = nn.Parameter(torch.zeros(conv.out_channels))
        twin.eval()
        for p in twin.parameters():
            p.requires_grad_(False)
        return cls(twin, pairs)

    def fold(self, weights: Weights, stats: Weights) -> Weights:
        out = {k: v for k, v in weights.items() if not k.startswith("head.")}
        for conv_name, (bn_name, eps) in self.pairs.items():
            gamma, beta = out.pop(f"{bn_name}.weight"), out.pop(f"{bn_name}.bias")
            mean, var = stats[f"{bn_name}.running_mean"], stats[f"{bn_name}.running_var"]
            s = gamma * torch.rsqrt(var + eps)
            w = out[f"{conv_name}.weight"]
            b = out.get(f"{conv_name}.bias")
            out[f"{conv_name}.weight"] = w * s.reshape(-1, *([1] * (w.dim() - 1)))
            out[f"{conv_name}.bias"] = (b - mean) * s + beta if b is not None else beta - mean * s
        return out

    def embed(self, weights: Weights, stats: Weights, x: Tensor) -> Tensor | None:
        """The features, or None when ``weights`` do not cover the twin (then do not fold)."""
        folded = self.fold(weights, stats)
        if not self.needs <= folded.keys():
            return None
        return functional_call(self.twin, {k: folded[k] for k in self.needs}, (x,))
