"""ABML (engine/methods/abml.py): its KL is the Gaussians' KL, its inner loop is stable
with the default prior, and its draws are seeded by the examples."""
from __future__ import annotations

import torch
from torch.distributions import Normal, kl_divergence

from engine.methods.abml import kl_gaussians
from engine.methods.registry import build_method
from engine.models.conv4 import Conv4


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, mu0 = torch.randn(7, generator=g), torch.randn(7, generator=g)
    ls, ls0 = torch.randn(7, generator=g) * 0.3, torch.randn(7, generator=g) * 0.3
    expected = kl_divergence(Normal(mu, ls.exp()), Normal(mu0, ls0.exp())).sum()
    torch.testing.assert_close(kl_gaussians(mu, ls, mu0, ls0), expected)


def test_same_examples_in_another_order_give_the_same_draws_and_the_entropy_decomposes():
    torch.manual_seed(0)
    learner = build_method("abml", Conv4(in_channels=1, hidden=8), {"inner_steps": 3, "inner_lr": 0.1})
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(9, 1, 28, 28, generator=g), torch.arange(9) % 3
    q = torch.randn(5, 1, 28, 28, generator=g)
    a = learner.adapt(x, y, 3).predict(q)
    perm = torch.randperm(9, generator=g)
    b = learner.adapt(x[perm], y[perm], 3).predict(q)
    torch.testing.assert_close(a.probs, b.probs, atol=1e-5, rtol=1e-4)
    assert torch.isfinite(a.probs).all()
    torch.testing.assert_close(a.entropy, a.aleatoric + a.mutual_info, atol=1e-5, rtol=1e-4)
    assert (a.mutual_info > 0).all()


def test_many_inner_steps_at_the_default_rate_do_not_diverge():
    torch.manual_seed(0)
    learner = build_method("abml", Conv4(in_channels=1, hidden=8), {"inner_steps": 20})
    x, y = torch.rand(6, 1, 28, 28), torch.arange(6) % 3
    q = learner.posterior(x, y, 3, 20, second_order=False)
    assert all(torch.isfinite(v).all() for v in q.values())
