"""MAML++'s per-step batch norm, Reptile's logit scale and refused options, and
adapting to a user's examples when the device runs out of memory."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.errors import FewShotError
from engine.methods import adaptation
from engine.methods.registry import build_method
from engine.models.conv4 import Conv4
from engine.training.config import TrainConfig
from engine.training.trainer import Trainer


def conv4_learner(method="maml", **options):
    torch.manual_seed(0)
    return build_method(method, Conv4(in_channels=1, hidden=8), {"inner_steps": 2, "inner_lr": 0.1, **options})


def images(n, way, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.arange(n) % way


def test_per_step_batch_norm_learns_one_weight_and_bias_per_step_that_the_inner_loop_leaves_alone():
    learner = conv4_learner(per_step_bn=True)
    names = learner.adapted_names()
    assert not any(n in names for n in learner._bn_affine), "per-step BN weights must not be adapted"
    assert len(learner.step_bn) == len(learner._bn_affine) == 8  # Conv4: four batch norms, weight and bias
    x, y = images(12, 3)
    from engine.data.episodes import Episode
    ep = Episode(x[:6], y[:6], x[6:], y[6:], 3, 2, 2, [0, 1, 2])
    loss, _ = learner.meta_loss(ep)
    loss.backward()
    for key, table in learner.step_bn.items():
        assert table.shape[0] == 3  # steps 0, 1 and 2
        assert table.grad is not None
        # Every step's row shapes the query loss (the last directly, the others through the inner steps).
        assert (table.grad.abs().sum(dim=1) > 0).all(), key
    # The backbone's own BN affine weights are replaced by the per-step ones, so they learn nothing.
    bn_weight = dict(learner.backbone.named_parameters())[next(iter(learner._bn_affine))]
    assert bn_weight.grad is None


def test_per_step_batch_norm_is_used_when_adapting_and_in_the_baked_export():
    learner = conv4_learner(per_step_bn=True, test_inner_steps=4)
    with torch.no_grad():
        for table in learner.step_bn.values():
            table.add_(torch.randn_like(table) * 0.3)
    x, y = images(9, 3)
    predictor = learner.adapt(x, y, 3)
    # Every layer uses the row of the step adapting ended at (the guard may stop it early).
    rows = {name: [k for k in range(3) if torch.equal(predictor.weights[name], learner.step_bn[key][k])]
            for name, key in learner._bn_affine.items()}
    assert len({tuple(r) for r in rows.values()}) == 1 and len(next(iter(rows.values()))) == 1
    # Four steps were asked for and two trained: steps past those use the last row.
    late = learner.with_step_bn(learner.net.backbone_weights(), 4)
    assert all(torch.equal(late[n], learner.step_bn[k][-1]) for n, k in learner._bn_affine.items())
    module = predictor.as_module()
    q = images(5, 3, seed=1)[0]
    torch.testing.assert_close(module(q)[0], predictor.predict(q).probs, atol=1e-5, rtol=1e-5)


def test_reptile_learns_its_logit_scale_and_refuses_what_needs_a_meta_gradient(omniglot_root, tmp_path):
    with pytest.raises(FewShotError, match="--multi-step-loss"):
        conv4_learner("reptile", multi_step_loss=True)
    with pytest.raises(FewShotError, match="--per-step-bn"):
        conv4_learner("reptile", per_step_bn=True)
    with pytest.raises(FewShotError, match="--per-step-bn"):
        conv4_learner("anil", per_step_bn=True)
    cfg = TrainConfig(dataset="omniglot", data_root=str(omniglot_root), split="small1", out=str(tmp_path / "run"),
                      method="reptile", way=3, shot=1, query=2, episodes=4, seed=1, log_every=1,
                      method_config={"inner_steps": 1})
    trainer = Trainer(cfg)
    trainer.run()
    assert abs(float(trainer.learner.log_scale.detach())) > 1e-3


def _out_of_memory_above(learner, monkeypatch, limit):
    real = learner.support_embed
    seen = []

    def embed(weights, x):
        seen.append(x.shape[0])
        if x.shape[0] > limit:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(weights, x)
    monkeypatch.setattr(learner, "support_embed", embed)
    return seen


@pytest.mark.parametrize("method", ["maml", "protomaml"])
def test_adapting_out_of_memory_halves_the_examples_and_gives_the_same_task_with_running_stats(
        monkeypatch, method):
    learner = conv4_learner(method, batch_norm="running")
    x, y = images(20, 4)
    q = images(6, 4, seed=2)[0]
    whole = learner.adapt(x, y, 4).predict(q).probs
    learner = conv4_learner(method, batch_norm="running")
    seen = _out_of_memory_above(learner, monkeypatch, limit=5)
    chunked = learner.adapt(x, y, 4).predict(q).probs
    assert seen[:2] == [20, 10] and set(seen[2:]) == {5}  # the whole set, half of it, then quarters
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-4)


def test_adapting_out_of_memory_with_support_statistics_pools_them_over_the_chunks(monkeypatch):
    learner = conv4_learner("maml")
    x, y = images(16, 4)
    whole = learner.adapt(x, y, 4)
    seen = _out_of_memory_above(learner, monkeypatch, limit=8)
    chunked = learner.adapt(x, y, 4)
    assert 8 in seen and 16 in seen
    # Pooled statistics of the first layer (its input is the pixels, the same in any chunking) are exact.
    first = next(k for k in whole.stats if k.endswith("running_mean"))
    torch.testing.assert_close(chunked.stats[first], whole.stats[first], atol=1e-5, rtol=1e-4)
    var = first[:-len("running_mean")] + "running_var"
    torch.testing.assert_close(chunked.stats[var], whole.stats[var], atol=1e-5, rtol=1e-4)
    q = images(6, 4, seed=2)[0]
    p = chunked.predict(q).probs
    assert torch.isfinite(p).all() and torch.allclose(p.sum(1), torch.ones(6))


def test_an_error_that_is_not_out_of_memory_is_not_retried(monkeypatch):
    learner = conv4_learner("maml")
    x, y = images(8, 2)

    def broken(weights, x):
        raise RuntimeError("shape mismatch")
    monkeypatch.setattr(learner, "support_embed", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        adaptation.adapt_weights(learner, x, y, 2, 2)


def test_a_guarded_step_never_fits_the_examples_worse():
    learner = conv4_learner("maml", inner_lr=50.0, test_inner_steps=3)  # a rate that overshoots
    x, y = images(9, 3)
    with torch.no_grad():
        start = learner.start_weights(x, y, 3)
        z, _ = learner.support_embed(start, x)
        before = float(F.cross_entropy(learner.net.head(start, z), y))
    predictor = learner.adapt(x, y, 3)
    with torch.no_grad():
        z, _ = learner.support_embed(predictor.weights, x)
        after = float(F.cross_entropy(learner.net.head(predictor.weights, z), y))
    assert after <= before


def test_a_transductive_model_labels_each_image_alone():
    learner = conv4_learner("maml", batch_norm="transductive")
    x, y = images(9, 3)
    task = learner.adapt(x, y, 3)
    q = images(6, 3, seed=3)[0]
    batch = task.predict(q).probs
    assert not torch.allclose(batch[:1], task.predict(q[:1]).probs, atol=1e-4)  # transductive: batch-dependent
    labeling = task.non_transductive()
    torch.testing.assert_close(labeling.predict(q).probs[:1], labeling.predict(q[:1]).probs, atol=1e-5, rtol=1e-4)


def test_meta_training_keeps_the_running_statistics_at_the_starts_so_cached_embeddings_are_normalized():
    learner = conv4_learner("maml").train()
    x, y = images(12, 3)
    x = x * 3 + 2  # inputs far from mean 0, variance 1
    from engine.data.episodes import Episode
    ep = Episode(x[:6], y[:6], x[6:], y[6:], 3, 2, 2, [0, 1, 2])
    first = next(k for k in learner.net.running_stats() if k.endswith("running_mean"))
    before = learner.net.running_stats()[first].clone()
    for _ in range(30):
        learner.meta_loss(ep)
    after = learner.net.running_stats()[first]
    assert not torch.allclose(before, after)
    _, support_stats = learner.support_embed(learner.net.backbone_weights(), x[:6])
    torch.testing.assert_close(after, support_stats[first], atol=0.1, rtol=0.05)
    frozen = conv4_learner("maml", batch_norm="running").train()
    frozen.meta_loss(ep)
    assert torch.equal(frozen.net.running_stats()[first], before)


def test_batch_norm_folded_into_its_convolution_is_the_same_function_with_the_same_gradients():
    from engine.methods.inner_loop import FunctionalNet
    torch.manual_seed(0)
    backbone = Conv4(in_channels=1, hidden=8)
    with torch.no_grad():
        for m in backbone.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.normal_(), m.bias.normal_(), m.running_mean.normal_(), m.running_var.uniform_(0.5, 2)
    folded, plain = FunctionalNet(backbone), FunctionalNet(backbone, fold_bn=False)
    assert folded.folded is not None and plain.folded is None
    weights, stats = folded.backbone_weights(), folded.running_stats()
    x = images(7, 1)[0]
    a, b = folded.embed(weights, x, stats), plain.embed(weights, x, stats)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a, backbone.eval()(x), atol=1e-5, rtol=1e-5)
    for ga, gb in zip(torch.autograd.grad(a.square().sum(), list(weights.values())),
                      torch.autograd.grad(b.square().sum(), list(weights.values()))):
        torch.testing.assert_close(ga, gb, atol=1e-4, rtol=1e-4)


def test_a_backbone_whose_batch_norm_follows_no_convolution_is_not_folded():
    from engine.methods.bn_folding import FoldedTwin
    odd = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    assert FoldedTwin.build(odd) is None
    no_bn = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())
    assert FoldedTwin.build(no_bn) is None
