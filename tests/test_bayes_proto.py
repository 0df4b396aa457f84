"""bayes-proto (engine/methods/bayes_proto.py): seeded by its examples, its uncertainty
decomposes (total = aleatoric + epistemic), epistemic is high far from the examples and
falls with more examples, and the posterior is the conjugate one."""
from __future__ import annotations

import torch

from engine.methods.bayes_proto import BayesProto, BayesProtoConfig


def head(**options):
    return BayesProto(torch.nn.Identity(), BayesProtoConfig(**options))


def clusters(shot, dim=16, seed=0, way=3):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(way, dim, generator=g) * 3
    y = torch.arange(way).repeat_interleave(shot)
    return centres[y] + torch.randn(len(y), dim, generator=g), y, centres


def test_the_same_examples_in_another_order_give_the_same_predictions():
    z, y, centres = clusters(shot=3)
    q = torch.randn(7, 16)
    a = head().adapt_embeddings(z, y, 3).predict_embeddings(q)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))
    b = head().adapt_embeddings(z[perm], y[perm], 3).predict_embeddings(q)
    torch.testing.assert_close(a.probs, b.probs, atol=1e-6, rtol=1e-5)
    for name in ("mutual_info", "aleatoric", "entropy"):
        torch.testing.assert_close(a.scores[name], b.scores[name], atol=1e-6, rtol=1e-5)


def test_total_uncertainty_is_aleatoric_plus_epistemic_and_each_is_non_negative():
    z, y, _ = clusters(shot=2)
    p = head().adapt_embeddings(z, y, 3).predict_embeddings(torch.randn(50, 16) * 4)
    assert (p.mutual_info >= 0).all() and (p.aleatoric >= 0).all()
    torch.testing.assert_close(p.entropy, p.aleatoric + p.mutual_info, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(p.probs.sum(1), torch.ones(50))


def test_epistemic_uncertainty_falls_with_more_examples_where_aleatoric_does_not():
    """Between two classes, how uncertain the boundary is (epistemic) shrinks as the classes
    get examples; that the image sits between them (aleatoric) does not. At a class's
    centre both are small. (Far from every class is ood_score's job: docs/RESULTS.md.)"""
    for seed in range(3):
        _, _, centres = clusters(shot=1, seed=seed)
        q = torch.stack([(centres[0] + centres[1]) / 2, centres[2]])
        few = head().adapt_embeddings(*clusters(shot=1, seed=seed)[:2], 3).predict_embeddings(q)
        many = head().adapt_embeddings(*clusters(shot=8, seed=seed)[:2], 3).predict_embeddings(q)
        assert many.mutual_info[0] < few.mutual_info[0]
        assert many.aleatoric[0] > 0.9 * few.aleatoric[0] > 0.4
        assert few.mutual_info[1] < 0.2 * few.mutual_info[0] and few.aleatoric[1] < 0.2 * few.aleatoric[0]


def test_the_posterior_mean_of_a_class_shrinks_towards_the_centre_by_kappa0():
    z, y, _ = clusters(shot=1)
    learner = head(kappa0=1.0)
    post = learner.posterior(z, y, 3, 1.0, torch.Generator().manual_seed(0))
    centre = z.mean(0)
    torch.testing.assert_close(post.means + post.centre, (centre + z) / 2, atol=1e-5, rtol=1e-5)
    assert post.xi.shape == (32, 3) and torch.equal(post.xi[:16], -post.xi[16:])
