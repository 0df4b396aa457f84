"""A refresh hands over its predictions before writing them, and patching a record read
before the write gives exactly the record the store holds after it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from engine.labeling.fresh_predictions import FreshPredictions
from engine.labeling.labeler import Labeler
from engine.labeling.store import Project
from engine.model_store import load_model


def project_with_cached_embeddings(tmp_path: Path, images: int = 60, classes: int = 3) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for k in range(images):
        Image.new("RGB", (2, 2), (k, 7, 9)).save(folder / f"{k:03d}.png")
    model = load_model("omniglot")
    rng = np.random.default_rng(0)
    path = tmp_path / "p.fewshot"
    with Project.create(path) as p:
        p.add_images([folder])
        recs = list(p.iter_images())
        p.put_embeddings(model.backbone_id, [(r.hash, np.abs(rng.normal(size=64)).astype(np.float32)) for r in recs])
        for j in range(classes):
            p.add_examples(p.add_class(f"c{j}"), [recs[j].id])
        Labeler(p, model).refresh()
    return path


def test_patched_records_are_the_records_written(tmp_path):
    path = project_with_cached_embeddings(tmp_path)
    model = load_model("omniglot")
    with Project.open(path) as p:
        recs = list(p.iter_images())
        classes = [c.id for c in p.classes()]
        p.set_label(recs[10].id, classes[1])  # a person's label: it stays, the prediction under it moves
        p.set_label(recs[11].id, None)  # "none of these"
        p.add_examples(classes[2], [recs[12].id])  # a correction: a new example, every prediction moves
        p.mark_errors([(recs[13].id, "unreadable for the test")])
        before = {r.id: r for r in p.iter_images()}
        seen: list[FreshPredictions] = []

        def computed(fresh: FreshPredictions) -> None:
            # Handed over before the write: the store still holds the old predictions.
            assert p.image(recs[20].id) == before[recs[20].id]
            seen.append(fresh)
        Labeler(p, model).refresh(on_computed=computed)
        after = {r.id: r for r in p.iter_images()}
    (fresh,) = seen
    assert len(fresh) == len(recs) - 1  # every usable image
    changed = 0
    for image_id, old in before.items():
        assert fresh.patch(old) == after[image_id], f"image {image_id}"
        changed += old != after[image_id]
    assert changed > len(recs) // 2  # the refresh really moved predictions
    assert after[recs[10].id].label_class_id == classes[1] and after[recs[10].id].label_source == "human"
    assert fresh.patch(None) is None


def test_rows_that_are_not_finite_are_left_out():
    probs = np.array([[0.2, 0.8], [np.nan, 0.5], [0.6, 0.4]], dtype=np.float32)
    fresh = FreshPredictions.of(np.array([30, 10, 20]), probs, {"entropy": np.array([0.5, 0.1, 0.9])}, [4, 5])
    assert fresh.image_ids.tolist() == [20, 30]
    assert fresh.row(10) is None and fresh.row(20) == 0 and fresh.row(99) is None
    assert fresh.top.tolist() == [4, 5]
    assert fresh.scores["entropy"].tolist() == [0.9, 0.5]


def test_predictions_behind_their_examples_are_noticed(tmp_path):
    path = project_with_cached_embeddings(tmp_path)
    model = load_model("omniglot")
    with Project.open(path) as p:
        assert not Labeler(p, model).predictions_behind()
        recs = list(p.iter_images())
        p.add_examples(p.classes()[1].id, [recs[20].id])  # committed; the refresh after it never ran
        assert Labeler(p, model).predictions_behind()
        Labeler(p, model).refresh()
        assert not Labeler(p, model).predictions_behind()
        p.set_model("omniglot", {})  # predictions from elsewhere record no examples: nothing to compare
        assert not Labeler(p, model).predictions_behind()
