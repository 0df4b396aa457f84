"""Episode sampling: determinism, labels, sampling without replacement, errors, prefetch;
and the two ClassDataset implementations it reads from."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.data.class_dataset import LazyClassDataset, TensorClassDataset
from engine.data.preprocessing import Preprocessing
from engine.data.sampler import EpisodeSampler
from engine.errors import EpisodeError

PREP = Preprocessing(size=(4, 4), channels=1)


def tagged_dataset(sizes: list[int]) -> TensorClassDataset:
    """Image j of class c has pixel (0,0) = c and (0,1) = j, so every read is traceable."""
    images, indices, row = [], [], 0
    for c, n in enumerate(sizes):
        for j in range(n):
            img = torch.zeros((1, 4, 4), dtype=torch.uint8)
            img[0, 0, 0], img[0, 0, 1] = c, j
            images.append(img)
        indices.append(list(range(row, row + n)))
        row += n
    return TensorClassDataset(torch.stack(images), indices, [f"class{c}" for c in range(len(sizes))], PREP)


def tags(x: torch.Tensor) -> list[tuple[int, int]]:
    """(class, image) tags of normalised images (mean 0, std 1, so pixel = value * 255)."""
    v = torch.round(x[:, 0, 0, :2] * 255).to(torch.long)
    return [(int(a), int(b)) for a, b in v]


def test_same_seed_same_episodes_different_seed_different():
    ds = tagged_dataset([10] * 12)
    a, b, c = (EpisodeSampler(ds, 5, 2, 3, seed=s) for s in (7, 7, 8))
    for i in (0, 1, 999):
        assert torch.equal(a[i].support_x, b[i].support_x) and torch.equal(a[i].query_x, b[i].query_x)
        assert a[i].classes == b[i].classes
    assert [a[i].classes for i in range(10)] != [c[i].classes for i in range(10)]
    assert len({tuple(a[i].classes) for i in range(10)}) > 1  # episodes differ from each other


def test_episode_depends_only_on_seed_and_index():
    ds = tagged_dataset([10] * 12)
    s = EpisodeSampler(ds, 5, 1, 2, seed=3)
    resumed = list(s.iter_from(40, 5))
    fresh = EpisodeSampler(ds, 5, 1, 2, seed=3)
    for k, ep in enumerate(resumed):
        assert tags(ep.support_x) == tags(fresh[40 + k].support_x)
    assert [tags(e.query_x) for e in s.iter_from(0, 3)] == [tags(fresh[i].query_x) for i in range(3)]


def test_labels_order_and_without_replacement():
    ds = tagged_dataset([8] * 6 + [12] * 4)
    s = EpisodeSampler(ds, way=5, shot=3, query=4, seed=1)
    for i in range(30):
        ep = s[i]
        assert ep.support_x.shape == (15, 1, 4, 4) and ep.query_x.shape == (20, 1, 4, 4)
        assert ep.support_y.tolist() == [k for k in range(5) for _ in range(3)]
        assert ep.query_y.tolist() == [k for k in range(5) for _ in range(4)]
        assert len(set(ep.classes)) == 5
        sup, qry = tags(ep.support_x), tags(ep.query_x)
        # label k is dataset class classes[k], and support comes class by class
        assert [c for c, _ in sup] == [ep.classes[k] for k in ep.support_y.tolist()]
        assert [c for c, _ in qry] == [ep.classes[k] for k in ep.query_y.tolist()]
        for cls in ep.classes:
            images = [j for c, j in sup + qry if c == cls]
            assert len(images) == 7 and len(set(images)) == 7  # no image twice in one episode


def test_all_classes_and_images_get_drawn():
    ds = tagged_dataset([6] * 8)
    s = EpisodeSampler(ds, 3, 1, 1, seed=0)
    seen = {t for i in range(200) for t in tags(s[i].support_x) + tags(s[i].query_x)}
    assert seen == {(c, j) for c in range(8) for j in range(6)}


def test_too_few_classes():
    with pytest.raises(EpisodeError, match=r"at least 5 classes.*has 3.*lower the way"):
        EpisodeSampler(tagged_dataset([10] * 3), 5, 1, 1)


def test_class_too_small_names_class_and_counts():
    ds = tagged_dataset([10, 10, 4, 10, 10])
    with pytest.raises(EpisodeError) as info:
        EpisodeSampler(ds, 3, 2, 5)
    msg = str(info.value)
    assert "class2" in msg and "has 4 images" in msg and "= 7" in msg and "lower shot or query" in msg
    EpisodeSampler(ds, 3, 2, 2)  # 4 images suffice for 2 + 2


def test_bad_way_shot_query():
    ds = tagged_dataset([10] * 5)
    for way, shot, query in ((0, 1, 1), (2, 0, 1), (2, 1, -1)):
        with pytest.raises(EpisodeError):
            EpisodeSampler(ds, way, shot, query)


def test_zero_query_episode():
    ep = EpisodeSampler(tagged_dataset([3] * 4), 2, 3, 0)[0]
    assert ep.query_x.shape == (0, 1, 4, 4) and ep.query_y.numel() == 0


def test_tensor_dataset_rotations_and_subset():
    base = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    ds = TensorClassDataset(base, [[0]] * 4, [f"r{k}" for k in range(4)], PREP, rotations=[0, 1, 2, 3])
    for k in range(4):
        assert torch.equal(ds.get_uint8(k, [0])[0], torch.rot90(base[0], k, dims=(-2, -1)))
    out = ds.gather_uint8(torch.tensor([3, 1, 0]), torch.tensor([[0], [0], [0]]))
    assert torch.equal(out[0], torch.rot90(base[0], 3, dims=(-2, -1))) and torch.equal(out[2], base[0])
    sub = ds.subset([2])
    assert sub.class_names == ["r2"] and torch.equal(sub.get_uint8(0, [0])[0], torch.rot90(base[0], 2, (-2, -1)))
    assert torch.equal(ds.images, base)  # rotating a read never changes the stored images


def test_out_of_range_reads_fail_instead_of_reading_a_neighbour():
    ds = tagged_dataset([3, 3])
    with pytest.raises(IndexError):
        ds.get(0, [3])
    with pytest.raises(IndexError):
        ds.get(2, [0])


def _write_class_pngs(root: Path, classes: int, per_class: int) -> list[list[Path]]:
    paths = []
    for c in range(classes):
        files = []
        for j in range(per_class):
            p = root / f"c{c}" / f"{j}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            arr = np.zeros((4, 4), dtype=np.uint8)
            arr[0, 0], arr[0, 1] = c, j
            Image.fromarray(arr).save(p)
            files.append(p)
        paths.append(files)
    return paths


def test_lazy_dataset_prefetch_matches_direct_reads(tmp_path):
    paths = _write_class_pngs(tmp_path, 6, 5)
    lazy = LazyClassDataset(paths, [f"class{c}" for c in range(6)], PREP)
    s = EpisodeSampler(lazy, 3, 2, 2, seed=5)
    prefetched = list(s.iter_from(10, 6))  # lazy datasets prefetch in a thread by default
    assert len(prefetched) == 6
    for k, ep in enumerate(prefetched):
        direct = s[10 + k]
        assert tags(ep.support_x) == tags(direct.support_x) and tags(ep.query_x) == tags(direct.query_x)
        assert all(c == ep.classes[lbl] for (c, _), lbl in zip(tags(ep.support_x), ep.support_y.tolist()))


def test_prefetch_thread_stops_when_consumer_stops(tmp_path):
    ds = tagged_dataset([5] * 5)
    s = EpisodeSampler(ds, 2, 1, 1)
    before = threading.active_count()
    it = s.iter_from(0, None, prefetch=2)
    next(it)
    it.close()
    assert threading.active_count() == before


def test_prefetch_reraises_errors_from_the_worker(tmp_path):
    paths = _write_class_pngs(tmp_path, 3, 2)
    lazy = LazyClassDataset(paths, ["a", "b", "c"], PREP, on_error="raise")
    for p in paths[1] + paths[0] + paths[2]:
        p.write_bytes(b"not a png")
    with pytest.raises(Exception, match="not an image"):
        list(EpisodeSampler(lazy, 3, 1, 1).iter_from(0, 3))


def test_lazy_dataset_skips_bad_images_and_reports_them(tmp_path):
    paths = _write_class_pngs(tmp_path, 2, 3)
    paths[0][1].write_bytes(b"")
    lazy = LazyClassDataset(paths, ["a", "b"], PREP)
    out = lazy.get_uint8(0, [0, 1, 2])
    assert out[:, 0, 0, 1].tolist() == [0, 2, 2]  # the bad image is replaced by the next good one
    assert len(lazy.skipped) == 1 and lazy.skipped[0][0] == str(paths[0][1]) and "empty" in lazy.skipped[0][1]
    lazy.get_uint8(0, [1])
    assert len(lazy.skipped) == 1  # reported once, not on every read
    for p in paths[1]:
        p.write_bytes(b"")
    with pytest.raises(EpisodeError, match="class 'b'"):
        lazy.get_uint8(1, [0])
