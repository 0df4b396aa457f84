"""A folder of class sub-folders as a dataset: discovery, preload vs lazy, bad files."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from engine.data.class_dataset import LazyClassDataset, TensorClassDataset
from engine.data.folder import find_class_images, load_folder
from engine.data.preprocessing import Preprocessing
from engine.data.sampler import EpisodeSampler
from engine.errors import DatasetLayoutError

PREP = Preprocessing(size=(16, 16), channels=3, mean=(0.5,), std=(0.5,), resize="shorter_side_center_crop")


def make_tree(root: Path) -> Path:
    """cats: 3 images (one nested, one upper-case .JPG); dogs: 4 (a .Png and a truncated one)."""
    (root / "cats" / "indoor").mkdir(parents=True)
    (root / "dogs").mkdir(parents=True)
    Image.new("RGB", (30, 20), (255, 0, 0)).save(root / "cats" / "a.jpg")
    Image.new("RGB", (20, 30), (255, 0, 0)).save(root / "cats" / "B.JPG")
    Image.new("RGB", (24, 24), (255, 0, 0)).save(root / "cats" / "indoor" / "c.png")
    for k in range(3):
        Image.new("RGB", (24, 24), (0, 0, 255)).save(root / "dogs" / f"d{k}.Png")
    data = (root / "cats" / "a.jpg").read_bytes()
    (root / "dogs" / "broken.jpg").write_bytes(data[: len(data) // 2])
    (root / "dogs" / "notes.txt").write_text("not an image, and not named like one")
    (root / "dogs" / ".hidden.png").write_bytes(b"")
    (root / ".thumbnails").mkdir()
    Image.new("RGB", (8, 8)).save(root / ".thumbnails" / "t.png")
    return root


def test_find_class_images(tmp_path):
    names, paths = find_class_images(make_tree(tmp_path))
    assert names == ["cats", "dogs"]
    assert [p.name for p in paths[0]] == ["B.JPG", "a.jpg", "c.png"]
    assert sorted(p.name for p in paths[1]) == ["broken.jpg", "d0.Png", "d1.Png", "d2.Png"]


def test_small_folder_is_preloaded_and_bad_file_skipped(tmp_path, caplog):
    root = make_tree(tmp_path)
    with caplog.at_level(logging.WARNING):
        ds = load_folder(root, PREP)
    assert isinstance(ds, TensorClassDataset)
    assert ds.class_names == ["cats", "dogs"] and ds.class_sizes() == [3, 3]
    assert len(ds.skipped) == 1 and ds.skipped[0][0].endswith("broken.jpg") and "truncated" in ds.skipped[0][1]
    assert "broken.jpg" in caplog.text
    x = ds.get(0, [0, 1, 2])
    assert x.shape == (3, 3, 16, 16)
    assert torch.allclose(x[:, 0], torch.tensor(1.0), atol=0.02) and torch.allclose(x[:, 2], torch.tensor(-1.0), atol=0.02)
    assert torch.allclose(ds.get(1, [0])[:, 2], torch.tensor(1.0), atol=0.02)


def test_big_folder_is_lazy_and_skips_bad_files_while_training(tmp_path):
    root = make_tree(tmp_path)
    ds = load_folder(root, PREP, max_preload_images=2)
    assert isinstance(ds, LazyClassDataset) and ds.class_sizes() == [3, 4]
    sampler = EpisodeSampler(ds, 2, 2, 1, seed=0)
    for ep in sampler.iter_from(0, 8):  # every dog image gets drawn: the broken one must not stop this
        assert ep.support_x.shape == (4, 3, 16, 16)
    assert [Path(p).name for p, _ in ds.skipped] == ["broken.jpg"]


def test_preload_also_limited_by_memory(tmp_path):
    ds = load_folder(make_tree(tmp_path), PREP, max_preload_bytes=16 * 16 * 3 * 2)
    assert isinstance(ds, LazyClassDataset)


def test_progress_is_reported(tmp_path):
    calls = []
    load_folder(make_tree(tmp_path), PREP, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (7, 7)


def test_no_class_subfolders(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "loose.png")
    with pytest.raises(DatasetLayoutError, match="no class sub-folders"):
        load_folder(tmp_path, PREP)
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        load_folder(tmp_path / "missing", PREP)


def test_class_without_images(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "birds").mkdir()
    (tmp_path / "birds" / "readme.txt").write_text("todo")
    with pytest.raises(DatasetLayoutError, match="birds"):
        load_folder(tmp_path, PREP)


def test_class_whose_images_are_all_broken(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "fish").mkdir()
    (tmp_path / "fish" / "x.jpg").write_text("<html>nope</html>")
    with pytest.raises(DatasetLayoutError, match="fish.*x.jpg.*not an image"):
        load_folder(tmp_path, PREP)


def test_gray_preprocessing_from_colour_files(tmp_path):
    prep = Preprocessing(size=(8, 8), channels=1, invert=True)
    ds = load_folder(make_tree(tmp_path), prep)
    x = ds.get_uint8(0, [0])
    assert x.shape == (1, 1, 8, 8) and int(x[0, 0, 4, 4]) == 255 - 76  # inverted luma of red
