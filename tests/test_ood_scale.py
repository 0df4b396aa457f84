"""The OOD score's unit (engine.methods.prototypes.ood_scale): a typical member of a
class scores about 1, so the "unusual" flag (2, engine.methods.uncertainty) means "twice
as far from its class as the class's own images" at any number of examples per class."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.data.sampler import EpisodeSampler
from engine.methods.prototypes import (ONE_SHOT_TYPICAL, ood_scale, pairwise_distance, prototype_scale,
                                       prototypes_of, support_spread)
from engine.methods.uncertainty import BY_NAME
from engine.model_store import load_model
from engine.training.datasets import open_dataset


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_one_shot_unit_is_the_measured_fraction_of_the_median_prototype_distance(distance):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 16, generator=g, dtype=torch.float64)
    y = torch.arange(6)
    protos = prototypes_of(z, y, 6)
    assert float(ood_scale(z, y, protos, distance)) == pytest.approx(
        ONE_SHOT_TYPICAL[distance] * prototype_scale(protos, distance))
    # Scaling the features leaves every score unchanged (squared distances scale by s^2).
    s = 7.0
    a = pairwise_distance(z, protos, distance) / ood_scale(z, y, protos, distance)
    b = pairwise_distance(s * z, s * protos, distance) / ood_scale(s * z, y, s * protos, distance)
    assert torch.allclose(a, b)


def test_with_two_examples_somewhere_the_unit_is_the_measured_scatter():
    z = torch.randn(7, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 2, 3, 4, 5])
    protos = prototypes_of(z, y, 6)
    assert torch.equal(ood_scale(z, y, protos, "euclidean"), support_spread(z, y, protos, "euclidean"))
    single = torch.tensor([0])
    assert torch.equal(ood_scale(z[:1], single, z[:1], "cosine"), support_spread(z[:1], single, z[:1], "cosine"))


@pytest.mark.parametrize("way", [5, 20])
def test_one_shot_omniglot_queries_of_the_episode_score_about_one(omniglot_root, way):
    """New alphabets (the evaluation split), one example per class: the old unit (a
    fraction of the closest prototype pair) put the median own query at 1.8 (5-way) and
    3.1 (20-way) and flagged 43% and 81% of them as unusual."""
    model = load_model("omniglot")
    data = open_dataset("omniglot", str(omniglot_root), "evaluation", model.preprocessing)
    head = model.learner
    scores = []
    with torch.inference_mode():
        for ep in EpisodeSampler(data, way, 1, 5, seed=11).iter_from(0, 12):
            task = head.adapt(ep.support_x, ep.support_y, way)
            scores.append(task.predict(ep.query_x).scores["ood_score"].numpy())
    scores = np.concatenate(scores)
    assert 0.7 < np.median(scores) < 1.5
    assert (scores > BY_NAME["ood_score"].flag).mean() < 0.2
