"""The MAML family's math, not only its shapes: meta-gradients against computations
that share no code with engine.methods (an explicit autograd unrolling, and closed-form
softmax cross-entropy gradients in NumPy), Reptile's update by hand, the inner loop
leaving the meta-parameters alone, and resuming a run exactly."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.data.episodes import Episode
from engine.methods.registry import build_method
from engine.models.conv4 import Conv4
from engine.training.checkpoint import load_resume
from engine.training.config import TrainConfig
from engine.training.trainer import Trainer, train

D_IN, D, WAY = 4, 3, 2
ALPHA = 0.3


class Tiny(nn.Module):
    """z = x A^T: a backbone with one weight matrix and no batch norm."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(D_IN, D, bias=False)
        self.out_dim = D

    def forward(self, x):
        return self.lin(x)


def tiny_episode(seed=0, shot=2, query=3):
    g = torch.Generator().manual_seed(seed)
    sx, qx = torch.randn(WAY * shot, D_IN, generator=g), torch.randn(WAY * query, D_IN, generator=g)
    sy, qy = torch.arange(WAY).repeat_interleave(shot), torch.arange(WAY).repeat_interleave(query)
    return Episode(sx, sy, qx, qy, WAY, shot, query, list(range(WAY)))


def tiny(method, steps=2, **options):
    torch.manual_seed(0)
    learner = build_method(method, Tiny(), {"inner_steps": steps, "inner_lr": ALPHA, **options})
    with torch.no_grad():  # a head start that is not zero, so every term of the gradient is exercised
        if hasattr(learner, "head_weight"):
            learner.head_weight.copy_(torch.tensor([0.5, -0.2, 0.1]))
            learner.head_bias.fill_(0.05)
        learner.log_scale.fill_(0.2)
    return learner


def test_second_order_meta_gradients_match_an_explicit_unrolling():
    learner = tiny("maml", steps=2)
    ep = tiny_episode()
    loss, _ = learner.meta_loss(ep)
    loss.backward()

    # The same computation written out with plain tensors and torch.autograd.grad.
    A = learner.backbone.lin.weight.detach().clone().requires_grad_(True)
    h = learner.head_weight.detach().clone().requires_grad_(True)
    hb = learner.head_bias.detach().clone().requires_grad_(True)
    s = learner.log_scale.detach().clone().requires_grad_(True)
    W, b = h.unsqueeze(0).repeat(WAY, 1), hb.repeat(WAY)
    A2 = A
    for _ in range(2):
        inner = F.cross_entropy(ep.support_x @ A2.T @ W.T + b, ep.support_y)
        gA, gW, gb = torch.autograd.grad(inner, (A2, W, b), create_graph=True)
        A2, W, b = A2 - ALPHA * gA, W - ALPHA * gW, b - ALPHA * gb
    outer = F.cross_entropy((ep.query_x @ A2.T @ W.T + b) * s.exp(), ep.query_y)
    want = torch.autograd.grad(outer, (A, h, hb, s))
    got = (learner.backbone.lin.weight.grad, learner.head_weight.grad, learner.head_bias.grad, learner.log_scale.grad)
    assert torch.allclose(loss, outer, atol=1e-6)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-6), (g, w)


def _ce_grads(x, y, A, W, b, scale=1.0):
    """Closed-form gradients of mean softmax cross-entropy for logits = scale (x A^T W^T + b)."""
    z = x @ A.T
    logits = scale * (z @ W.T + b)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    G = scale * (p - np.eye(W.shape[0])[y]) / len(y)  # dL/d(pre-scale logits)
    return (G @ W).T @ x, G.T @ z, G.sum(0)


def test_first_order_gradients_equal_hand_computed_values():
    learner = tiny("maml", steps=2, first_order=True)
    ep = tiny_episode(1)
    learner.meta_loss(ep)[0].backward()

    A = learner.backbone.lin.weight.detach().numpy().astype(np.float64)
    W = np.tile(learner.head_weight.detach().numpy().astype(np.float64), (WAY, 1))
    b = np.full(WAY, float(learner.head_bias.detach()))
    sx, sy, qx, qy = (t.numpy() for t in (ep.support_x.double(), ep.support_y, ep.query_x.double(), ep.query_y))
    for _ in range(2):
        gA, gW, gb = _ce_grads(sx, sy, A, W, b)
        A, W, b = A - ALPHA * gA, W - ALPHA * gW, b - ALPHA * gb
    gA, gW, gb = _ce_grads(qx, qy, A, W, b, scale=float(np.exp(0.2)))
    # First order: the query gradient at the adapted weights is the meta-gradient; the head row
    # is repeated per class, so its gradient is the sum over the rows.
    assert np.allclose(learner.backbone.lin.weight.grad.numpy(), gA, atol=1e-5)
    assert np.allclose(learner.head_weight.grad.numpy(), gW.sum(0), atol=1e-5)
    assert np.allclose(float(learner.head_bias.grad), gb.sum(), atol=1e-5)


def test_reptile_moves_the_start_towards_the_task_weights_by_hand():
    learner = tiny("reptile", steps=3)
    eps = [tiny_episode(2), tiny_episode(3)]
    A0 = learner.backbone.lin.weight.detach().numpy().astype(np.float64)
    h0, hb0 = learner.head_weight.detach().numpy().astype(np.float64), float(learner.head_bias.detach())
    ends = []
    for ep in eps:
        x = torch.cat([ep.support_x, ep.query_x]).double().numpy()
        y = torch.cat([ep.support_y, ep.query_y]).numpy()
        A, W, b = A0.copy(), np.tile(h0, (WAY, 1)), np.full(WAY, hb0)
        for _ in range(3):
            gA, gW, gb = _ce_grads(x, y, A, W, b)
            A, W, b = A - ALPHA * gA, W - ALPHA * gW, b - ALPHA * gb
        ends.append((A, W.mean(0), b.mean()))
    epsilon = 0.5
    learner.outer_step(eps, torch.optim.SGD(learner.parameters(), lr=epsilon))
    want_A = A0 + epsilon * (np.mean([e[0] for e in ends], 0) - A0)
    want_h = h0 + epsilon * (np.mean([e[1] for e in ends], 0) - h0)
    want_hb = hb0 + epsilon * (np.mean([e[2] for e in ends]) - hb0)
    assert np.allclose(learner.backbone.lin.weight.detach().numpy(), want_A, atol=1e-5)
    assert np.allclose(learner.head_weight.detach().numpy(), want_h, atol=1e-5)
    assert np.isclose(float(learner.head_bias.detach()), want_hb, atol=1e-5)


def test_metasgd_learns_its_rates_and_anil_only_the_head_in_the_inner_loop():
    # Two steps: from a head whose rows are all alike, the first step moves only the head (the
    # logits do not depend on the features yet), so the backbone's rate needs a second.
    learner = tiny("metasgd", steps=2)
    learner.meta_loss(tiny_episode(4))[0].backward()
    assert all(r.grad is not None and r.grad.abs().sum() > 0 for r in learner.element_lrs)
    anil = tiny("anil", steps=2)
    ep = tiny_episode(5)
    z = anil.embed(ep.support_x)
    head = anil.adapt_embeddings(z, ep.support_y, WAY)
    # By hand: two steps on the head alone over fixed features.
    A = anil.backbone.lin.weight.detach().double().numpy()
    W, b = np.tile(anil.head_weight.detach().double().numpy(), (WAY, 1)), np.full(WAY, float(anil.head_bias.detach()))
    for _ in range(2):
        _, gW, gb = _ce_grads(ep.support_x.double().numpy(), ep.support_y.numpy(), A, W, b)
        W, b = W - ALPHA * gW, b - ALPHA * gb
    assert np.allclose(head.module.weight.numpy(), W, atol=1e-5) and np.allclose(head.module.bias.numpy(), b, atol=1e-5)


@pytest.mark.parametrize("name", ["maml", "metasgd", "reptile", "protomaml", "anil"])
def test_meta_loss_and_adapt_never_change_the_meta_parameters_or_statistics(name):
    torch.manual_seed(0)
    learner = build_method(name, Conv4(in_channels=1, image_size=28), {"inner_steps": 2}).train()
    g = torch.Generator().manual_seed(0)
    ep = Episode(torch.rand(6, 1, 28, 28, generator=g), torch.arange(3).repeat(2), torch.rand(6, 1, 28, 28, generator=g),
                 torch.arange(3).repeat(2), 3, 2, 2, [0, 1, 2])
    before = copy.deepcopy(learner.state_dict())
    learner.meta_loss(ep)
    for k, v in learner.state_dict().items():
        if "running" in k or k.endswith("num_batches_tracked"):
            continue  # a training pass tracks the start's statistics (tests/test_maml_options.py)
        assert torch.equal(before[k], v), f"{name} changed {k}"
    before = copy.deepcopy(learner.state_dict())
    learner.adapt(ep.support_x, ep.support_y, 3)
    for k, v in learner.state_dict().items():
        assert torch.equal(before[k], v), f"{name} changed {k} adapting"


def test_support_batch_norm_predicts_each_image_alone_and_transductive_does_not():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    sx, sy = torch.rand(6, 1, 28, 28, generator=g), torch.arange(3).repeat(2)
    qx = torch.rand(8, 1, 28, 28, generator=g)
    for mode, alone in (("support", True), ("running", True), ("transductive", False)):
        learner = build_method("maml", Conv4(in_channels=1, image_size=28), {"inner_steps": 2, "batch_norm": mode})
        with torch.no_grad():
            learner.head_weight.normal_()
        predictor = learner.adapt(sx, sy, 3)
        together = predictor.predict(qx).probs
        one = torch.cat([predictor.predict(qx[i:i + 1]).probs for i in range(len(qx))])
        assert torch.allclose(together, one, atol=1e-5) == alone, mode


@pytest.mark.parametrize("name", ["maml", "reptile"])
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(omniglot_root, tmp_path, name):
    def cfg(out, episodes):
        return TrainConfig(dataset="omniglot", data_root=str(omniglot_root), split="small1", out=str(out),
                           method=name, way=3, shot=1, query=2, episodes=episodes, meta_batch=2, seed=5,
                           method_config={"inner_steps": 2, "multi_step_loss": name == "maml", "multi_step_anneal": 3,
                                          "learn_inner_lr": name == "maml"}, lr_schedule="cosine", log_every=1)
    train(cfg(tmp_path / "straight", 4))
    holder = []
    stopper = Trainer(cfg(tmp_path / "split", 4), events=lambda e: e.get("episode") == 2 and holder[0].request_stop())
    holder.append(stopper)
    assert stopper.run()["event"] == "stopped"
    train(cfg(tmp_path / "split", 4), resume_from=tmp_path / "split")
    a, b = load_resume(tmp_path / "straight")["model"], load_resume(tmp_path / "split")["model"]
    assert int(a["outer_steps"]) == 4
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_the_logit_scale_learns_at_its_own_rate_even_when_fine_tuning_slowly(omniglot_root, tmp_path):
    """Calibration hangs on one number; at a fine-tuning rate of 1e-4, 5 outer steps of Adam
    could move it by at most 5e-4, so it has a rate of its own."""
    from engine.methods.calibration import SCALE_LR
    cfg = TrainConfig(dataset="omniglot", data_root=str(omniglot_root), split="small1", out=str(tmp_path / "run"),
                      method="anil", way=3, shot=1, query=2, episodes=5, lr=1e-4, seed=1, log_every=1)
    trainer = Trainer(cfg)
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [1e-4, SCALE_LR]
    trainer.run()
    assert abs(float(trainer.learner.log_scale.detach())) > 0.01


@pytest.mark.parametrize("steps", [1, 3])
def test_adapting_with_a_rate_that_diverges_keeps_the_last_finite_weights(steps):
    """Whichever step blows up, the last one included, predictions stay finite numbers."""
    torch.manual_seed(0)
    learner = build_method("maml", Conv4(in_channels=1, image_size=28), {"inner_steps": steps})
    learner.config.inner_lr = 1e30  # beyond what a config accepts: a model whose rate suits other examples
    with torch.no_grad():
        learner.head_weight.normal_()
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(6, 1, 28, 28, generator=g), torch.arange(3).repeat(2)
    probs = learner.adapt(x, y, 3).predict(x).probs
    assert torch.isfinite(probs).all()
