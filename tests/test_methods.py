"""The suite every registered method passes: a method gets it by being registered.

Run on a small Conv4 and random 28 px episodes: shapes and scores, probabilities that
sum to 1, meta-gradients, an outer step, seeded determinism, adaptation that leaves
the meta-parameters alone, the config round trip, cached embeddings for head-only
methods, and the exported module (ONNX, onnxruntime) agreeing with ``predict``. The
test-only example method of docs/ARCHITECTURE.md runs it too.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from example_method import SoftNeighbours

from engine.data.episodes import Episode
from engine.errors import FewShotError
from engine.methods import uncertainty
from engine.methods.registry import METHODS, build_method, register, unregister
from engine.models.conv4 import Conv4

NAMES = [*sorted(METHODS), SoftNeighbours.name]
WAY, SHOT, QUERY = 3, 2, 4


@pytest.fixture(scope="module", autouse=True)
def example_registered():
    register(SoftNeighbours)
    yield
    unregister(SoftNeighbours.name)


def episode(seed: int = 0) -> Episode:
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(WAY, 1, 28, 28, generator=g)
    def draw(n):
        y = torch.arange(WAY).repeat_interleave(n)
        return (centres[y] + 0.2 * torch.randn(len(y), 1, 28, 28, generator=g)).clamp(0, 1), y
    sx, sy = draw(SHOT)
    qx, qy = draw(QUERY)
    return Episode(sx, sy, qx, qy, WAY, SHOT, QUERY, list(range(WAY)))


def make(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_method(name, Conv4(in_channels=1, image_size=28), {}).eval()


@pytest.mark.parametrize("name", NAMES)
def test_predictions_have_the_declared_shapes_and_scores(name):
    learner = make(name)
    ep = episode()
    pred = learner.adapt(ep.support_x, ep.support_y, WAY).predict(ep.query_x)
    n = WAY * QUERY
    assert pred.probs.shape == (n, WAY)
    assert torch.allclose(pred.probs.sum(1), torch.ones(n), atol=1e-5)
    assert (pred.probs >= 0).all()
    assert set(pred.scores) == set(learner.scores)
    for required in uncertainty.REQUIRED:
        assert pred.scores[required].shape == (n,)
    assert uncertainty.check_provided(learner.scores, name)


@pytest.mark.parametrize("name", NAMES)
def test_meta_loss_backpropagates_and_an_outer_step_changes_the_weights(name):
    learner = make(name).train()
    loss, stats = learner.meta_loss(episode())
    assert torch.isfinite(loss) and {"loss", "acc"} <= set(stats)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.parameters())
    learner.zero_grad()
    before = copy.deepcopy(learner.state_dict())
    opt = torch.optim.SGD(learner.parameters(), lr=0.1)
    stats = learner.outer_step([episode(1), episode(2)], opt)
    assert 0 <= stats["acc"] <= 1
    assert any(not torch.equal(before[k], v) for k, v in learner.state_dict().items())


@pytest.mark.parametrize("name", NAMES)
def test_the_same_seed_gives_the_same_weights_and_predictions(name):
    ep = episode()
    a, b = make(name, seed=3), make(name, seed=3)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    pa = a.adapt(ep.support_x, ep.support_y, WAY).predict(ep.query_x)
    pb = b.adapt(ep.support_x, ep.support_y, WAY).predict(ep.query_x)
    assert torch.equal(pa.probs, pb.probs)


@pytest.mark.parametrize("name", NAMES)
def test_adapting_leaves_the_meta_parameters_unchanged(name):
    learner = make(name)
    before = copy.deepcopy(learner.state_dict())
    ep = episode()
    learner.adapt(ep.support_x, ep.support_y, WAY).predict(ep.query_x)
    for k, v in learner.state_dict().items():
        assert torch.equal(before[k], v), f"adapt changed {k}"


@pytest.mark.parametrize("name", NAMES)
def test_the_config_round_trips_and_unknown_options_are_refused(name):
    learner = make(name)
    cls = type(learner)
    again = cls.Config.from_dict(learner.saved_config().to_dict())
    assert again.to_dict() == learner.saved_config().to_dict()
    with pytest.raises(FewShotError, match="unknown method options"):
        cls.Config.from_dict({"no_such_option": 1})


@pytest.mark.parametrize("name", NAMES)
def test_head_only_methods_predict_the_same_from_cached_embeddings(name):
    learner = make(name)
    if learner.adapts_backbone:
        pytest.skip("adapts the backbone: no cached-embedding path")
    ep = episode()
    direct = learner.adapt(ep.support_x, ep.support_y, WAY).predict(ep.query_x)
    cached = learner.adapt_embeddings(learner.embed(ep.support_x), ep.support_y, WAY)
    via_cache = cached.predict_embeddings(learner.embed(ep.query_x))
    assert torch.allclose(direct.probs, via_cache.probs, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_the_exported_module_agrees_with_predict(name):
    import onnxruntime

    from engine.export.onnx_model import export_module
    learner = make(name)
    ep = episode()
    predictor = learner.adapt(ep.support_x, ep.support_y, WAY)
    module = predictor.as_module(learner.backbone)
    proto = export_module(module.eval(), ep.query_x[:2], "pixels")
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert names == list(module.output_names) and names[0] == "probs"
    assert set(names[1:]) <= set(uncertainty.ONNX_OUTPUTS)
    x = ep.query_x
    got = dict(zip(names, session.run(names, {"pixels": x.numpy()})))
    want = predictor.predict(x)
    assert np.abs(got["probs"] - want.probs.numpy()).max() < 1e-4
    for score in names[1:]:
        assert np.allclose(got[score], want.scores[score].numpy(), atol=1e-4, rtol=1e-4)
