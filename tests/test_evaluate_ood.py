"""Out-of-episode detection in `fewshot evaluate` (engine/training/ood.py, evaluate.py)
and the reliability diagram."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from engine.cli import main
from engine.data.sampler import EpisodeSampler
from engine.model_store import load_model
from engine.training.datasets import open_dataset
from engine.training.ood import auroc


def test_auroc_is_the_share_of_outside_inside_pairs_ranked_right_with_ties_half():
    rng = np.random.default_rng(0)
    inside, outside = rng.integers(0, 5, 40).astype(float), rng.integers(2, 8, 30).astype(float)
    pairs = [(o > i) + 0.5 * (o == i) for o in outside for i in inside]
    assert abs(auroc(inside, outside) - np.mean(pairs)) < 1e-12
    assert auroc(np.zeros(3), np.ones(3)) == 1.0 and auroc(np.ones(3), np.ones(3)) == 0.5


def test_outside_queries_come_from_classes_outside_the_episode(omniglot_root):
    model = load_model("omniglot")
    data = open_dataset("omniglot", str(omniglot_root), "small1", model.preprocessing)
    sampler = EpisodeSampler(data, 5, 1, 2, seed=3)
    ep = sampler[4]
    x = sampler.outside_images(4, ep.classes, 10)
    assert x.shape == (10, *ep.query_x.shape[1:])
    again = sampler.outside_images(4, ep.classes, 10)
    assert np.array_equal(x.numpy(), again.numpy())  # a pure function of (seed, episode)
    # Not one of them is an image of the episode's classes.
    own = {tuple(data.get(c, range(data.class_sizes()[c])).flatten(1).sum(1).tolist()) for c in ep.classes}
    own_sums = {s for sums in own for s in sums}
    assert not any(float(v) in own_sums for v in x.flatten(1).sum(1).tolist())


def test_evaluate_reports_an_auroc_for_every_score_and_draws_the_diagram(omniglot_root, tmp_path, capsys):
    plot = tmp_path / "reliability.png"
    code = main(["evaluate", "--model", "omniglot", "--method", "bayes-proto", "--dataset", "omniglot",
                 "--data-root", str(omniglot_root), "--split", "small1", "--way", "5", "--shot", "1", "--query", "3",
                 "--episodes", "12", "--reliability-plot", str(plot), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)
    assert result["method"] == "bayes-proto"
    assert set(result["ood_auroc"]) == {"entropy", "margin", "ood_score", "mutual_info", "aleatoric", "confidence"}
    assert all(0.5 < v["auroc"] <= 1 for v in result["ood_auroc"].values())
    with Image.open(plot) as img:
        assert img.format == "PNG" and img.size[0] > 500
    # The file is never replaced.
    code = main(["evaluate", "--model", "omniglot", "--dataset", "omniglot", "--data-root", str(omniglot_root),
                 "--split", "small1", "--episodes", "2", "--reliability-plot", str(plot)])
    assert code == 2 and "already exists" in capsys.readouterr().err
