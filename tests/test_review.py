"""Review orders: most uncertain, likely outliers, most informative (not near-duplicates)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import FewShotError
from engine.labeling.records import PredictionRow
from engine.labeling.review import greedy_diverse, review_order
from engine.labeling.store import Project

N = 60
DUPLICATES = range(10)  # images 0..9: copies of one confusing picture, the most uncertain of all
BACKBONE = "test-backbone"


def _probs(u: float) -> np.ndarray:
    """A 3-class probability vector whose uncertainty grows with u in [0, 1] (margin 1 - u)."""
    top = 1.0 - (2.0 / 3.0) * u
    return np.array([top, (1.0 - top) / 2, (1.0 - top) / 2], dtype=np.float32)


def _entropy(p: np.ndarray) -> float:
    return float(-(p * np.log(p)).sum())


@pytest.fixture
def project(tmp_path) -> tuple[Project, list[int], dict[int, float]]:
    """N tiny images with designed embeddings and predictions; returns (project, ids, uncertainty)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(N):  # distinct contents: the store keeps one record per content hash
        Image.new("RGB", (4, 4), (k, 255 - k, (7 * k) % 256)).save(folder / f"img{k:02d}.png")
    p = Project.create(tmp_path / "r.fewshot")
    classes = [p.add_class(name) for name in ("a", "b", "c")]
    p.add_images([folder])
    by_name = {Path(r.path).name: r for r in p.iter_images()}
    recs = [by_name[f"img{k:02d}.png"] for k in range(N)]
    ids = [r.id for r in recs]

    base = rng.normal(size=64)
    vectors = rng.normal(size=(N, 64))
    uncertainty = {}
    rows = []
    for k, rec in enumerate(recs):
        if k in DUPLICATES:
            vectors[k] = base + 0.01 * rng.normal(size=64)
            u = 0.99 - 0.001 * k
        else:
            u = 0.5 + 0.4 * rng.random()
        uncertainty[rec.id] = u
        probs = _probs(u)
        top2 = np.sort(probs)[::-1]
        rows.append(PredictionRow(rec.id, probs, classes, _entropy(probs), float(top2[0] - top2[1]),
                                  None, ood_score=float(k)))
    model_id = p.set_model("test", {"backbone_id": BACKBONE})
    p.write_predictions(model_id, rows)
    p.put_embeddings(BACKBONE, [(r.hash, vectors[k].astype(np.float32)) for k, r in enumerate(recs)])
    yield p, ids, uncertainty
    p.close()


def test_uncertain_puts_the_highest_entropy_first_and_skips_confirmed_and_bad(project):
    p, ids, u = project
    p.set_label(ids[0], p.classes()[0].id)  # confirmed: reviewed already
    p.mark_errors([(ids[1], "the file is truncated")])
    order = review_order(p, "uncertain")
    assert ids[0] not in order and ids[1] not in order
    assert len(order) == N - 2
    assert order == sorted(order, key=lambda i: -u[i])
    assert review_order(p, "uncertain", limit=5) == order[:5]


def test_margin_orders_the_smallest_gap_first(project):
    p, ids, u = project
    order = review_order(p, "uncertain", measure="margin")
    margins = [p.image(i).margin for i in order]
    assert margins == sorted(margins)
    assert order[:10] == [ids[k] for k in DUPLICATES]


def test_mutual_information_is_used_where_the_method_gives_it(project):
    """"Most informative first" is BALD where the predictions carry mutual information;
    "Most uncertain first" stays the total uncertainty, as the grid's sort of that name."""
    p, ids, _ = project
    model_id = p.current_model()[0]
    rows = [PredictionRow(i, _probs(0.5), [c.id for c in p.classes()], float((3 * k) % 5), 0.1,
                          mutual_info=float(k % 7), ood_score=0.0) for k, i in enumerate(ids)]
    p.write_predictions(model_id, rows)
    informative = review_order(p, "informative")
    assert p.image(informative[0]).mutual_info == 6.0
    uncertain = review_order(p, "uncertain")
    entropy = [p.image(i).entropy for i in uncertain]
    assert entropy == sorted(entropy, reverse=True) and entropy[0] == 4.0
    assert p.image(uncertain[0]).mutual_info != 6.0  # the two orders differ here
    mi = [p.image(i).mutual_info for i in review_order(p, "uncertain", measure="mutual_info")]
    assert mi == sorted(mi, reverse=True)


def test_outliers_put_the_highest_ood_score_first(project):
    p, ids, _ = project
    assert review_order(p, "outliers", limit=3) == [ids[N - 1], ids[N - 2], ids[N - 3]]


def test_informative_top_20_holds_no_near_duplicates(project):
    p, ids, u = project
    uncertain = review_order(p, "uncertain", limit=20)
    dup_ids = {ids[k] for k in DUPLICATES}
    assert len(dup_ids & set(uncertain)) == 10  # by uncertainty alone the copies fill the top

    informative = review_order(p, "informative", limit=20)
    assert len(informative) == 20 and len(set(informative)) == 20
    assert len(dup_ids & set(informative)) == 1
    assert informative[0] == uncertain[0]  # the single most uncertain image still leads

    everything = review_order(p, "informative")
    assert sorted(everything) == sorted(ids)  # the full order keeps every reviewable image once
    assert everything[:20] == informative


def test_greedy_diverse_without_vectors_is_plain_uncertainty_order():
    assert greedy_diverse(np.array([0.1, 0.9, 0.5]), None, 3) == [1, 2, 0]
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert greedy_diverse(np.array([0.9, 0.8, 0.3]), vectors, 2) == [0, 2]


def test_unknown_mode_or_measure_is_a_user_error(project):
    p, _, _ = project
    with pytest.raises(FewShotError, match="review order"):
        review_order(p, "random")
    with pytest.raises(FewShotError, match="measure"):
        review_order(p, "uncertain", measure="variance")

