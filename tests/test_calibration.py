"""Calibrated probabilities: the per-task temperature, its sources, and the metrics that measure it."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from engine.methods.calibration import KAPPA, choose_temperature, prototype_scale
from engine.methods.protonet import ProtoNet
from engine.training.metrics import CalibrationTally, ece_of


def gaussian_task(way: int, shot: int, queries: int, dim: int = 32, sigma: float = 1.0, separation: float = 0.5,
                  seed: int = 0):
    """Isotropic Gaussian classes: support, labels, queries, labels."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(way, dim, generator=g) * separation
    ys = torch.arange(way).repeat_interleave(shot)
    yq = torch.arange(way).repeat_interleave(queries)
    xs = means[ys] + sigma * torch.randn(len(ys), dim, generator=g)
    xq = means[yq] + sigma * torch.randn(len(yq), dim, generator=g)
    return xs, ys, xq, yq


def tally(learner: ProtoNet, way: int, shot: int, episodes: int = 60, **task) -> CalibrationTally:
    t = CalibrationTally()
    for e in range(episodes):
        xs, ys, xq, yq = gaussian_task(way, shot, 20, seed=e, **task)
        t.add(learner.adapt_embeddings(xs, ys, way).predict_embeddings(xq).probs.numpy(), yq.numpy())
    return t


def test_fitted_temperature_makes_an_over_or_under_confident_head_calibrated():
    """Gaussian classes (about 78% accuracy): a fixed T 20x too low or 10x too high is badly
    calibrated; the per-task fit, starting from that T as from a bad default, is not."""
    for wrong in (0.02, 3.0):
        fixed = ProtoNet(nn.Identity(), temperature=wrong, calibrate=False)
        fitted = ProtoNet(nn.Identity(), temperature=wrong, calibrate=True)
        before, after = tally(fixed, 5, 5).ece()[0], tally(fitted, 5, 5).ece()[0]
        assert before > 0.2 and after < 0.07 and after < before / 3, (wrong, before, after)
    # The fitted temperatures sit near the best fixed one for these tasks (least log-loss).
    grid = [0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5]
    best = min(grid, key=lambda t: tally(ProtoNet(nn.Identity(), temperature=t, calibrate=False), 5, 5).summary()["nll"])
    fitted = ProtoNet(nn.Identity(), temperature=1.0)
    temps = [fitted.adapt_embeddings(*gaussian_task(5, 5, 1, seed=s)[:2], 5).temperature for s in range(20)]
    assert best / 1.4 < float(np.median(temps)) < best * 1.4, (best, np.median(temps))


def test_the_temperature_says_where_it_came_from():
    xs, ys, _, _ = gaussian_task(4, 3, 1)
    assert choose_temperature(xs, ys, 4, "euclidean", learned=0.5).source == "fitted"
    one_shot = choose_temperature(xs[::3], ys[::3], 4, "euclidean", learned=0.5)
    assert (one_shot.source, one_shot.value) == ("learned", 0.5)
    rule = choose_temperature(xs[::3], ys[::3], 4, "cosine", learned=None)
    assert rule.source == "rule"
    assert rule.value == pytest.approx(KAPPA / prototype_scale(xs[::3], "cosine"))
    assert choose_temperature(xs, ys, 4, "euclidean", learned=0.5, fit=False).source == "learned"
    assert choose_temperature(xs[:3], ys[:3], 1, "euclidean", learned=None).source == "single"
    fitted = choose_temperature(xs, ys, 4, "euclidean", learned=0.5)
    assert fitted.held_out == 12 and "12 held-out examples" in fitted.describe()  # 3 folds x 4 classes


def test_the_scale_rule_does_not_depend_on_the_features_scale():
    xs, ys, xq, _ = gaussian_task(5, 1, 4)
    head = ProtoNet(nn.Identity(), distance="cosine", learn_temperature=False)
    small = head.adapt_embeddings(xs, ys, 5).predict_embeddings(xq).probs
    big = head.adapt_embeddings(xs * 1000, ys, 5).predict_embeddings(xq * 1000).probs
    assert torch.allclose(small, big, atol=1e-5)
    euclid = ProtoNet(nn.Identity(), distance="euclidean", learn_temperature=False)
    a = euclid.adapt_embeddings(xs, ys, 5).predict_embeddings(xq).probs
    b = euclid.adapt_embeddings(xs * 7, ys, 5).predict_embeddings(xq * 7).probs
    assert torch.allclose(a, b, atol=1e-5)


def test_the_fit_is_deterministic_and_does_not_change_the_prediction():
    xs, ys, xq, _ = gaussian_task(6, 4, 5)
    fixed = ProtoNet(nn.Identity(), temperature=1.0, calibrate=False).adapt_embeddings(xs, ys, 6)
    a = ProtoNet(nn.Identity(), temperature=1.0).adapt_embeddings(xs, ys, 6)
    b = ProtoNet(nn.Identity(), temperature=1.0).adapt_embeddings(xs.clone(), ys.clone(), 6)
    assert a.temperature == b.temperature != fixed.temperature
    assert torch.equal(a.predict_embeddings(xq).labels, fixed.predict_embeddings(xq).labels)


def test_a_learned_temperature_is_trained_and_kept_in_the_config():
    from engine.data.episodes import Episode
    torch.manual_seed(0)
    net = ProtoNet(nn.Linear(8, 8), distance="cosine")
    assert net.learn_temperature and net.learned_temperature() == pytest.approx(10.0)
    xs, ys, xq, yq = gaussian_task(3, 2, 4, dim=8)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(20):
        net.outer_step([Episode(xs, ys, xq, yq, 3, 2, 4, [0, 1, 2])], opt)
    learned = net.learned_temperature()
    assert learned != pytest.approx(10.0)
    saved = net.saved_config()
    assert saved.temperature == pytest.approx(learned) and saved.learn_temperature is True
    assert ProtoNet(nn.Identity(), distance="cosine", learn_temperature=False).learned_temperature() is None


def test_ece_nll_and_brier_on_hand_made_predictions():
    # Two queries right at 0.9 and 0.6, one wrong at 0.8: bins 13, 9, 12 (15 bins).
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    labels = np.array([0, 0, 0])
    t = CalibrationTally()
    t.add(probs, labels)
    s = t.summary()
    assert s["accuracy"] == pytest.approx(2 / 3)
    assert s["ece"] == pytest.approx((0.1 + 0.4 + 0.8) / 3)
    assert s["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.6) + math.log(0.2)) / 3)
    assert s["brier"] == pytest.approx(((0.01 + 0.01) + (0.16 + 0.16) + (0.64 + 0.64)) / 3)
    assert ece_of(probs.max(1), probs.argmax(1) == labels) == pytest.approx(s["ece"])


def test_perfectly_calibrated_predictions_have_an_ece_near_zero_with_a_ci():
    rng = np.random.default_rng(0)
    t = CalibrationTally()
    for _ in range(200):
        conf = rng.uniform(0.5, 1.0, 50)
        right = rng.uniform(size=50) < conf
        probs = np.stack([conf, 1 - conf], axis=1)
        t.add(probs, np.where(right, 0, 1))
    ece, ci = t.ece()
    assert ece < 0.02 and 0 < ci < 0.02
