"""The particle methods (emaml, bmaml): SVGD's update against an explicit computation,
particles that stay distinct, and an ensemble whose uncertainty decomposes."""
from __future__ import annotations

import math

import pytest
import torch

from engine.errors import FewShotError
from engine.methods.bmaml import svgd_directions
from engine.methods.registry import build_method
from engine.models.conv4 import Conv4


def test_svgd_directions_match_the_formula_term_by_term():
    g = torch.Generator().manual_seed(0)
    flat, grads = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, 5, generator=g,
                                                                                  dtype=torch.float64)
    sq = torch.tensor([[float(((a - b) ** 2).sum()) for b in flat] for a in flat], dtype=torch.float64)
    h = torch.tensor([sq[i, j] for i in range(3) for j in range(3) if i != j]).median() / math.log(4)
    expected_true = torch.zeros_like(flat)
    for i in range(3):
        for j in range(3):
            k = torch.exp(-((flat[j] - flat[i]) ** 2).sum() / h)
            # k(theta_j, theta_i) grad_j, plus grad_{theta_j} k(theta_j, theta_i) = -2/h (theta_j - theta_i) k
            expected_true[i] += k * grads[j] - (2 / h) * (flat[j] - flat[i]) * k
    torch.testing.assert_close(svgd_directions(flat, grads), expected_true / 3)
    # Two particles at the same place feel no repulsion; with no gradient, apart ones move apart.
    apart = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    phi = svgd_directions(apart, torch.zeros_like(apart))
    assert phi[0, 0] < 0 < phi[1, 0]


def learner(name, **options):
    torch.manual_seed(0)
    return build_method(name, Conv4(in_channels=1, hidden=8), {"inner_steps": 1, "inner_lr": 0.1, "particles": 3,
                                                                **options})


def images(n, way, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.arange(n) % way


@pytest.mark.parametrize("name", ["emaml", "bmaml"])
def test_adapted_particles_are_distinct_and_their_disagreement_is_the_epistemic_part(name):
    model = learner(name)
    x, y = images(9, 3)
    task = model.adapt(x, y, 3)
    assert len(task.members) == 3
    a, b = task.members[0].weights, task.members[1].weights
    assert not torch.equal(a["encoder.0.0.weight"], b["encoder.0.0.weight"])
    p = task.predict(images(5, 3, seed=1)[0])
    torch.testing.assert_close(p.entropy, p.aleatoric + p.mutual_info, atol=1e-5, rtol=1e-4)
    assert (p.mutual_info > 0).all()
    module = task.as_module()
    q = images(4, 3, seed=2)[0]
    out = dict(zip(module.output_names, module(q)))
    torch.testing.assert_close(out["probs"], task.predict(q).probs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["mutual_info"], task.predict(q).mutual_info, atol=1e-5, rtol=1e-4)


def test_emaml_trains_each_particle_as_its_own_maml():
    model = learner("emaml")
    from engine.data.episodes import Episode
    x, y = images(12, 3)
    ep = Episode(x[:6], y[:6], x[6:], y[6:], 3, 2, 2, [0, 1, 2])
    loss, _ = model.meta_loss(ep)
    singles = []
    for m in range(3):
        with model.particle(m):
            trail, stats = model.inner_loop(ep.support_x, ep.support_y, 3, 1, True)
            singles.append(torch.nn.functional.cross_entropy(model.query_logits(trail[-1], stats[-1], ep.query_x),
                                                             ep.query_y))
    torch.testing.assert_close(loss, torch.stack(singles).mean())
    loss.backward()
    assert all(p.grad is not None for p in model.extra.values())


def test_options_a_particle_method_cannot_honour_are_refused():
    with pytest.raises(FewShotError, match="--learn-inner-lr"):
        learner("bmaml", learn_inner_lr=True)
    with pytest.raises(FewShotError, match="particles"):
        learner("emaml", particles=1)


def test_init_from_a_trained_model_starts_every_particle_near_its_backbone(omniglot_root, tmp_path):
    from engine.model_store import load_model
    from engine.training.config import TrainConfig
    from engine.training.trainer import Trainer
    cfg = TrainConfig(dataset="omniglot", data_root=str(omniglot_root), split="small1", out=str(tmp_path / "run"),
                      method="emaml", way=3, shot=1, query=2, episodes=1, seed=1, init_from="omniglot",
                      method_config={"inner_steps": 1, "particles": 2})
    trainer = Trainer(cfg)
    source = load_model("omniglot").learner.backbone.state_dict()
    copy = trainer.learner.particle_weights(1)["encoder.0.0.weight"]
    assert torch.allclose(copy, source["encoder.0.0.weight"], atol=0.05) and not torch.equal(
        copy, source["encoder.0.0.weight"])


def test_options_that_would_be_ignored_or_batch_dependent_are_refused():
    for name in ("emaml", "bmaml", "abml"):
        base = {"inner_steps": 1} if name == "abml" else {"inner_steps": 1, "particles": 2}
        for bad in ({"batch_norm": "transductive"}, {"multi_step_loss": True}):
            with pytest.raises(FewShotError, match="transductive"):
                build_method(name, Conv4(in_channels=1, hidden=8), {**base, **bad})
