"""The fast 2x2 max pool (engine/models/fast_pool.py) is F.max_pool2d exactly: values,
first-maximum gradients on ties, odd sizes, second order, and the plain op in exports."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.models import fast_pool
from engine.models.fast_pool import max_pool2


@pytest.mark.parametrize("shape", [(6, 64, 28, 28), (6, 64, 15, 13), (3, 2, 7, 5)])
def test_values_and_gradients_are_max_pool2d_s_ties_included(shape, monkeypatch):
    monkeypatch.setattr(fast_pool, "MIN_ELEMENTS", 0)  # the fast path even for the small shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g).round()  # integers: many windows with two equal maxima
    x[0, 0] = 0.0
    ours, ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, expected = max_pool2(ours), F.max_pool2d(ref, 2)
    assert torch.equal(out, expected) and out.is_contiguous()
    w = torch.randn(expected.shape, generator=g)
    (out * w).sum().backward()
    (expected * w).sum().backward()
    assert torch.equal(ours.grad, ref.grad)
    with torch.no_grad():
        assert torch.equal(max_pool2(x), F.max_pool2d(x, 2))


def test_second_order_gradients_exist(monkeypatch):
    monkeypatch.setattr(fast_pool, "MIN_ELEMENTS", 0)
    x = torch.randn(2, 3, 6, 5, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(max_pool2, (x,))
    assert torch.autograd.gradgradcheck(max_pool2, (x,))


def test_a_traced_graph_gets_the_plain_max_pool(monkeypatch):
    monkeypatch.setattr(fast_pool, "MIN_ELEMENTS", 0)
    traced = torch.jit.trace(fast_pool.MaxPool2(), torch.randn(2, 4, 8, 8))
    graph = str(traced.graph)
    assert "aten::max_pool2d" in graph and "PythonOp" not in graph and "contiguous" not in graph
