"""VERSA (engine/methods/versa.py): its start is a prototype classifier, it is seeded by its
examples, its uncertainty decomposes, and meta-training sees varying example counts."""
from __future__ import annotations

import torch

from engine.data.episodes import Episode
from engine.methods.versa import Versa, VersaConfig


class Flat(torch.nn.Module):
    out_dim = 8

    def forward(self, x):
        return x.flatten(1)


def data(shot, seed=0, way=3):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(way, 8, generator=g) * 2
    y = torch.arange(way).repeat_interleave(shot)
    return centres[y] + 0.5 * torch.randn(len(y), 8, generator=g), y, centres


def test_untrained_it_classifies_like_protonet_at_temperature_one():
    torch.manual_seed(0)
    learner = Versa(Flat(), VersaConfig())
    z, y, centres = data(shot=2)
    q = centres + 0.3 * torch.randn(3, 8)
    p = learner.adapt_embeddings(z, y, 3).predict_embeddings(q)
    protos = torch.stack([z[y == k].mean(0) for k in range(3)])
    expected = torch.softmax(-torch.cdist(q, protos) ** 2, dim=1)
    torch.testing.assert_close(p.probs, expected, atol=2e-2, rtol=0)  # the small start variance blurs a little
    assert torch.equal(p.labels, torch.arange(3))


def test_same_examples_any_order_same_predictions_and_entropy_decomposes():
    torch.manual_seed(0)
    learner = Versa(Flat(), VersaConfig())
    with torch.no_grad():
        learner.amortizer.log_var.bias.fill_(0.0)  # wide posteriors: the draws disagree
    z, y, _ = data(shot=3)
    q = torch.randn(20, 8) * 2
    a = learner.adapt_embeddings(z, y, 3).predict_embeddings(q)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(2))
    b = learner.adapt_embeddings(z[perm], y[perm], 3).predict_embeddings(q)
    torch.testing.assert_close(a.probs, b.probs)
    torch.testing.assert_close(a.entropy, a.aleatoric + a.mutual_info, atol=1e-5, rtol=1e-4)
    assert (a.mutual_info > 1e-3).any() and (a.mutual_info >= 0).all()


def test_meta_training_keeps_between_one_and_shot_examples_per_class(monkeypatch):
    torch.manual_seed(0)
    learner = Versa(Flat(), VersaConfig())
    z, y, _ = data(shot=5)
    q, qy, _ = data(shot=2, seed=1)
    seen = []
    real = learner.posterior
    monkeypatch.setattr(learner, "posterior", lambda sz, sy, n: seen.append(torch.bincount(sy, minlength=n))
                        or real(sz, sy, n))
    ep = Episode(z.view(15, 1, 8), y, q.view(6, 1, 8), qy, 3, 5, 2, [0, 1, 2])
    for _ in range(20):
        loss, _ = learner.meta_loss(ep)
    counts = torch.stack(seen)
    assert counts.min() >= 1 and counts.max() <= 5 and len(set(counts.flatten().tolist())) > 2
    loss.backward()
    assert learner.amortizer.log_var.weight.grad is not None
