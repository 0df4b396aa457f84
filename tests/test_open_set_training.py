"""Meta-training for "none of these": episodes that carry images of classes outside them
(EpisodeSampler's ``outside``) and ProtoNet's open-set ranking term (``open_set_weight``)."""
from __future__ import annotations

import pytest
import torch

from engine.data.sampler import EpisodeSampler
from engine.errors import FewShotError
from engine.methods.protonet import ProtoNet, open_set_ranking
from engine.model_store import load_model
from engine.training.checkpoint import read_meta
from engine.training.datasets import open_dataset
from engine.training.trainer import Trainer
from test_training import small_config


def test_outside_images_come_from_other_classes_and_leave_the_episode_as_it_was(omniglot_root):
    prep = load_model("omniglot").preprocessing
    data = open_dataset("omniglot", str(omniglot_root), "small1", prep)
    plain, more = EpisodeSampler(data, 5, 1, 2, seed=4), EpisodeSampler(data, 5, 1, 2, seed=4, outside=10)
    a, b = plain[7], more[7]
    assert a.outside_x is None and b.outside_x.shape == (10, *a.query_x.shape[1:])
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert torch.equal(b.outside_x, more.outside_images(7, b.classes, 10))  # a function of (seed, episode)
    own = {float(v) for c in b.classes for v in data.get(c, range(data.class_sizes()[c])).flatten(1).sum(1)}
    assert not any(float(v) in own for v in b.outside_x.flatten(1).sum(1))
    assert b.to("cpu").outside_x is not None


def test_the_ranking_term_is_small_when_outside_images_are_far_and_large_when_they_are_close():
    protos = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    own = protos + 0.1
    far, near = torch.tensor([[20.0, 20.0], [-20.0, 5.0]]), torch.tensor([[0.05, 0.0], [4.0, 0.05]])
    from engine.methods.prototypes import pairwise_distance
    def term(outside):
        z = torch.cat([own, outside])
        return float(open_set_ranking(pairwise_distance(z, protos, "euclidean"), 3, protos, "euclidean"))
    assert term(far) < 1e-6
    assert term(near) > 0.5


def test_training_with_the_term_draws_outside_images_and_records_the_weight(omniglot_root, tmp_path):
    cfg = small_config(omniglot_root, tmp_path / "run", episodes=4, val_every=0, val_split=None,
                       method_config={"open_set_weight": 2.0})
    trainer = Trainer(cfg)
    assert trainer.sampler.outside == cfg.way * cfg.query
    ep = trainer.sampler[0]
    loss, stats = trainer.learner.meta_loss(ep)
    # "loss" is the queries' cross-entropy (what the curves show); the term comes on top, weighted.
    assert stats["open_set"] > 0 and loss.item() == pytest.approx(stats["loss"] + 2.0 * stats["open_set"])
    loss.backward()  # the term reaches the backbone
    assert all(p.grad is not None for p in trainer.learner.backbone.parameters())
    trainer.run()
    assert read_meta(tmp_path / "run")["method_config"]["open_set_weight"] == 2.0
    plain = Trainer(small_config(omniglot_root, tmp_path / "plain", episodes=1, val_split=None))
    assert plain.sampler.outside == 0 and plain.sampler[0].outside_x is None


def test_a_negative_weight_is_refused():
    with pytest.raises(FewShotError, match="open_set_weight"):
        ProtoNet(torch.nn.Flatten(), open_set_weight=-1.0)


def test_with_the_term_the_temperature_is_learned_at_a_rate_that_can_move_it():
    """The term spreads classes apart; a temperature fixed at the start was overconfident
    (20-way ECE 0.051), and one learned at a fine-tuning rate of 1e-4 barely moves."""
    from engine.methods.calibration import SCALE_LR
    head = ProtoNet(torch.nn.Flatten(), open_set_weight=1.0)
    assert head.learn_temperature
    groups = head.optimizer_groups(1e-4)
    assert [g["lr"] for g in groups] == [1e-4, SCALE_LR] and groups[1]["params"] == [head.log_temperature]
    assert not ProtoNet(torch.nn.Flatten()).learn_temperature  # euclidean without the term: as Snell et al.
    assert not ProtoNet(torch.nn.Flatten(), open_set_weight=1.0, learn_temperature=False).learn_temperature
