"""ProtoNet on embeddings we control: probabilities, distances, uncertainty, OOD score."""
import math

import pytest
import torch
from torch import nn

from engine.data.episodes import Episode
from engine.errors import FewShotError
from engine.methods.protonet import ProtoNet, pairwise_distance, prototypes_of


def clusters(n_classes=4, per_class=5, dim=8, spread=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, dim, generator=g) * 3
    y = torch.arange(n_classes).repeat_interleave(per_class)
    x = centres[y] + spread * torch.randn(len(y), dim, generator=g)
    return x, y, centres


def test_pairwise_distance_matches_cdist():
    a, b = torch.randn(7, 5), torch.randn(3, 5)
    assert torch.allclose(pairwise_distance(a, b, "euclidean"), torch.cdist(a, b) ** 2, atol=1e-5)
    cos = torch.nn.functional.cosine_similarity(a[:, None], b[None], dim=2)
    assert torch.allclose(pairwise_distance(a, b, "cosine"), 1 - cos, atol=1e-6)


def test_prototypes_are_class_means():
    x, y, _ = clusters()
    protos = prototypes_of(x, y, 4)
    for c in range(4):
        assert torch.allclose(protos[c], x[y == c].mean(0))


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_predictions_on_separated_clusters(distance):
    x, y, centres = clusters()
    net = ProtoNet(nn.Identity(), distance=distance)
    head = net.adapt(x, y)
    queries = centres + 0.1 * torch.randn_like(centres)
    pred = head.predict(queries)
    assert pred.probs.shape == (4, 4)
    assert torch.allclose(pred.probs.sum(1), torch.ones(4), atol=1e-6)
    assert torch.equal(pred.labels, torch.arange(4))
    expected_entropy = -torch.special.xlogy(pred.probs, pred.probs).sum(1)
    assert torch.allclose(pred.entropy, expected_entropy, atol=1e-5)
    assert pred.mutual_info is None


def test_entropy_is_high_between_classes_and_low_at_centres():
    x, y, centres = clusters(n_classes=2, spread=0.3)
    head = ProtoNet(nn.Identity()).adapt(x, y)
    midpoint = head.prototypes.mean(0)  # equidistant from both prototypes
    pred = head.predict(torch.stack([head.prototypes[0], midpoint]))
    assert pred.entropy[1] > 0.6 > pred.entropy[0]
    assert pred.entropy[1] <= math.log(2) + 1e-6
    assert pred.margin[1] < 0.1 < pred.margin[0]


@pytest.mark.parametrize("shot", [1, 5])
def test_ood_score_flags_points_far_from_every_class(shot):
    x, y, centres = clusters(n_classes=3, per_class=shot, spread=0.2, dim=16, seed=1)
    head = ProtoNet(nn.Identity()).adapt(x, y)
    inliers = centres + 0.2 * torch.randn(3, 16)
    outlier = torch.full((1, 16), 40.0)
    score = head.predict(torch.cat([inliers, outlier])).ood_score
    assert score[-1] > 10 * score[:3].max()
    if shot > 1:  # with a measured spread, a class member scores about 1
        assert score[:3].max() < 3


def test_adapt_embeddings_matches_adapt():
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(12, 6))
    x, y, _ = clusters(dim=12)
    net = ProtoNet(backbone)
    q = torch.randn(5, 12)
    via_images = net.adapt(x, y).predict(q)
    via_cache = net.adapt_embeddings(backbone(x).detach(), y).predict_embeddings(backbone(q).detach())
    assert torch.allclose(via_images.probs, via_cache.probs, atol=1e-6)
    assert torch.allclose(via_images.ood_score, via_cache.ood_score, atol=1e-5)


def test_meta_loss_trains_a_linear_embedding():
    torch.manual_seed(0)
    backbone = nn.Linear(10, 4)
    net = ProtoNet(backbone)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    x, y, _ = clusters(n_classes=5, per_class=10, dim=10, spread=1.0, seed=3)
    idx_s = torch.cat([torch.nonzero(y == c).squeeze(1)[:5] for c in range(5)])
    idx_q = torch.cat([torch.nonzero(y == c).squeeze(1)[5:] for c in range(5)])
    ep = Episode(x[idx_s], y[idx_s], x[idx_q], y[idx_q], 5, 5, 5, list(range(5)))
    first, _ = net.meta_loss(ep)
    for _ in range(50):
        loss, stats = net.meta_loss(ep)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first.item() / 2
    assert 0 <= stats["acc"] <= 1


def test_errors_name_the_problem():
    net = ProtoNet(nn.Identity())
    with pytest.raises(FewShotError, match="no examples"):
        net.adapt_embeddings(torch.empty(0, 4), torch.empty(0, dtype=torch.long), n_classes=2)
    with pytest.raises(FewShotError, match=r"classes \[1\] have no examples"):
        net.adapt_embeddings(torch.randn(2, 4), torch.tensor([0, 2]), n_classes=3)
    with pytest.raises(FewShotError, match="unknown distance"):
        ProtoNet(nn.Identity(), distance="manhattan")
