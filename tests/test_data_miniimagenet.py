"""mini-ImageNet in both layouts, on generated images laid out with the real split files."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from data_fixtures import build_miniimagenet_fixture, class_color, read_split_rows
from engine.data.class_dataset import LazyClassDataset, TensorClassDataset
from engine.data.miniimagenet import IMAGENET_MEAN, IMAGENET_STD, load_miniimagenet, safe_unpickle
from engine.data.sampler import EpisodeSampler
from engine.errors import DatasetLayoutError, FewShotError


def expected_pixel(k: int) -> torch.Tensor:
    color = torch.tensor(class_color(k), dtype=torch.float32) / 255
    return (color - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)


@pytest.fixture(scope="module")
def images_root(tmp_path_factory):
    return build_miniimagenet_fixture(tmp_path_factory.mktemp("mini_images"), layout="images")


@pytest.fixture(scope="module")
def pickle_root(tmp_path_factory):
    return build_miniimagenet_fixture(tmp_path_factory.mktemp("mini_pickle"), layout="pickle")


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_images_layout(images_root, split):
    ds = load_miniimagenet(images_root, split)
    assert isinstance(ds, LazyClassDataset)
    rows = read_split_rows(split, 5, 6)
    assert ds.class_names == sorted({label for _, label in rows}) and len(ds) == 5
    assert ds.class_sizes() == [6] * 5
    x = ds.get(2, [0, 5])
    assert x.shape == (2, 3, 84, 84) and x.dtype == torch.float32
    # solid class colours through JPEG: within a few grey levels of the exact normalised value
    assert torch.allclose(x.mean(dim=(0, 2, 3)), expected_pixel(2), atol=0.06)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_pickle_layout(pickle_root, split):
    ds = load_miniimagenet(pickle_root, split)
    assert isinstance(ds, TensorClassDataset)
    assert ds.class_names == sorted({label for _, label in read_split_rows(split, 5, 6)})
    assert ds.class_sizes() == [6] * 5 and ds.images.shape == (30, 3, 84, 84)
    x = ds.get(4, range(6))
    assert torch.allclose(x[:, :, 10, 10], expected_pixel(4).expand(6, 3), atol=1e-5)


def test_both_layouts_hold_the_same_classes(images_root, pickle_root):
    a, b = load_miniimagenet(images_root, "val"), load_miniimagenet(pickle_root, "val")
    assert a.class_names == b.class_names
    assert torch.allclose(a.get(1, [0]).mean(dim=(2, 3)), b.get(1, [0]).mean(dim=(2, 3)), atol=0.06)


def test_pickle_resized_to_other_image_size(pickle_root):
    ds = load_miniimagenet(pickle_root, "test", image_size=32)
    assert ds.get(0, [0]).shape == (1, 3, 32, 32) and ds.preprocessing.size == (32, 32)


def test_episode_from_lazy_layout(images_root):
    ep = EpisodeSampler(load_miniimagenet(images_root, "train"), 5, 1, 5, seed=0)[0]
    assert ep.support_x.shape == (5, 3, 84, 84) and ep.query_x.shape == (25, 3, 84, 84)


def test_missing_images_folder(tmp_path):
    build_miniimagenet_fixture(tmp_path, splits=("val",), classes=2, per_class=2)
    (tmp_path / "images").rename(tmp_path / "pictures")
    with pytest.raises(DatasetLayoutError, match="images folder"):
        load_miniimagenet(tmp_path, "val")


def test_missing_some_images(tmp_path):
    build_miniimagenet_fixture(tmp_path, splits=("val",), classes=2, per_class=3)
    victim = sorted((tmp_path / "images").iterdir())[0]
    victim.unlink()
    with pytest.raises(DatasetLayoutError, match=rf"1 of the images.*{victim.name}"):
        load_miniimagenet(tmp_path, "val")


def test_missing_split_and_bad_csv(tmp_path):
    with pytest.raises(DatasetLayoutError, match="test.csv"):
        load_miniimagenet(tmp_path, "test")
    (tmp_path / "images").mkdir()
    (tmp_path / "test.csv").write_text("file,class\na.jpg,n1\n")
    with pytest.raises(DatasetLayoutError, match="filename,label"):
        load_miniimagenet(tmp_path, "test")
    (tmp_path / "test.csv").write_text("filename,label\n../../etc/passwd,n1\n")
    with pytest.raises(DatasetLayoutError, match="plain file name"):
        load_miniimagenet(tmp_path, "test")
    with pytest.raises(FewShotError, match="split"):
        load_miniimagenet(tmp_path, "validation")


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    payload = {"image_data": np.zeros((1, 84, 84, 3), np.uint8), "class_dict": {"n1": [0]},
               "extra": _RunsShell(marker)}
    (tmp_path / "mini-imagenet-cache-train.pkl").write_bytes(pickle.dumps(payload))
    with pytest.raises(DatasetLayoutError, match=r"refused.*(posix|os)\.system"):
        load_miniimagenet(tmp_path, "train")
    assert not marker.exists()


def test_pickle_with_a_class_object_is_refused(tmp_path):
    p = tmp_path / "mini-imagenet-cache-val.pkl"
    p.write_bytes(pickle.dumps({"image_data": np.zeros((1, 2, 2, 3), np.uint8),
                                "class_dict": {"n1": [0]}, "when": __import__("datetime").date(2020, 1, 1)}))
    with pytest.raises(DatasetLayoutError, match="datetime"):
        safe_unpickle(p)


def test_pickle_with_wrong_structure(tmp_path):
    p = tmp_path / "mini-imagenet-cache-test.pkl"
    p.write_bytes(pickle.dumps({"image_data": np.zeros((4, 84, 84), np.uint8), "class_dict": {"n1": [0]}}))
    with pytest.raises(DatasetLayoutError, match="image_data"):
        load_miniimagenet(tmp_path, "test")
    p.write_bytes(pickle.dumps({"image_data": np.zeros((2, 8, 8, 3), np.uint8), "class_dict": {"n1": [0, 5]}}))
    with pytest.raises(DatasetLayoutError, match="outside"):
        load_miniimagenet(tmp_path, "test")
    p.write_bytes(b"\x80\x04truncated")
    with pytest.raises(DatasetLayoutError, match="damaged"):
        load_miniimagenet(tmp_path, "test")


def test_python2_style_pickle_loads(tmp_path):
    # The original caches were written by Python 2 (protocol 2, str keys as bytes-like str).
    data = {"image_data": np.full((2, 84, 84, 3), 7, np.uint8), "class_dict": {"n01": [0, 1]}}
    (tmp_path / "mini-imagenet-cache-val.pkl").write_bytes(pickle.dumps(data, protocol=2))
    ds = load_miniimagenet(tmp_path, "val")
    assert ds.class_names == ["n01"] and int(ds.get_uint8(0, [1]).max()) == 7
