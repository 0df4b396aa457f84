"""Omniglot loaders on the real archives in ../shared (zip and extracted), the cache,
the Vinyals splits and rotations."""
from __future__ import annotations

import shutil
import time
import zipfile

import pytest
import torch

from data_fixtures import OMNIGLOT_ROOT, require_shared
from engine.data.cache import TensorCache
from engine.data.omniglot import OmniglotArchive, load_omniglot, omniglot_preprocessing
from engine.data.sampler import EpisodeSampler
from engine.errors import DatasetLayoutError, FewShotError


@pytest.fixture(scope="module")
def root():
    return require_shared(OMNIGLOT_ROOT / "images_background.zip").parent


@pytest.fixture(scope="module")
def tiny_root(root, tmp_path_factory):
    """An images_background_small2.zip holding one alphabet (Greek, 24 characters):
    the cache tests decode it several times, so it is kept small."""
    out = tmp_path_factory.mktemp("tiny_omniglot")
    with zipfile.ZipFile(root / "images_background_small2.zip") as src, \
            zipfile.ZipFile(out / "images_background_small2.zip", "w") as dst:
        for name in src.namelist():
            if "/Greek/" in name and name.endswith(".png"):
                dst.writestr(name, src.read(name))
    return out


# The big sets go through the app's normal cache (user cache dir or $FEWSHOT_CACHE_DIR):
# the first run decodes 32,460 images once, later runs read them back in a moment.
@pytest.fixture(scope="module")
def background(root):
    return load_omniglot(root, "background")


@pytest.mark.parametrize("split,classes", [("background", 964), ("evaluation", 659),
                                           ("vinyals-train", 4112), ("vinyals-val", 688),
                                           ("vinyals-trainval", 4800), ("vinyals-test", 1692)])
def test_class_counts(root, split, classes):
    ds = load_omniglot(root, split)
    assert len(ds) == classes
    assert set(ds.class_sizes()) == {20}
    assert ds.preprocessing == omniglot_preprocessing(28)


def test_images_shape_and_range(background):
    x = background.get(0, range(20))
    assert x.shape == (20, 1, 28, 28) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # inverted: strokes are bright on a black background, which covers most of the image
    assert 0.02 < float(x.mean()) < 0.4
    assert background.class_names[0] == "Alphabet_of_the_Magi/character01"
    assert background.images.shape == (19280, 1, 28, 28)


def test_vinyals_rotations_share_images(root):
    ds = load_omniglot(root, "vinyals-test")
    assert ds.class_names[:4] == [f"Gurmukhi/character42/rot{d:03d}" for d in (0, 90, 180, 270)]
    assert ds.images.shape[0] == 1692 // 4 * 20  # each character stored once
    upright = ds.get_uint8(0, [3])
    for k in (1, 2, 3):
        assert torch.equal(ds.get_uint8(k, [3]), torch.rot90(upright, k, dims=(-2, -1)))
    train = load_omniglot(root, "vinyals-train")
    test_chars = {n.rsplit("/", 1)[0] for n in ds.class_names}
    assert not test_chars & {n.rsplit("/", 1)[0] for n in train.class_names}


def test_rotation_augmentation_adds_three_classes_per_character(root, background):
    ds = load_omniglot(root, "background", rotations=True)
    assert len(ds) == 4 * 964 and torch.equal(ds.images, background.images)  # no copies per rotation
    assert ds.class_names[5] == "Alphabet_of_the_Magi/character02/rot090"
    assert torch.equal(ds.get_uint8(6, [0]), torch.rot90(background.get_uint8(1, [0]), 2, dims=(-2, -1)))


def test_zip_and_extracted_folder_give_the_same_tensors(root, tmp_path):
    with zipfile.ZipFile(root / "images_background_small1.zip") as zf:
        zf.extractall(tmp_path / "extracted")
    from_zip = load_omniglot(root, "small1", cache_dir=tmp_path / "c1")
    from_dir = load_omniglot(tmp_path / "extracted", "small1", cache_dir=tmp_path / "c2")
    assert not OmniglotArchive.open(tmp_path / "extracted", "images_background_small1").is_zip
    assert from_zip.class_names == from_dir.class_names and len(from_zip) == 136
    assert torch.equal(from_zip.images, from_dir.images)


def test_cache_hit_is_fast_identical_and_corrupt_cache_is_rebuilt(tiny_root, tmp_path):
    started = time.perf_counter()
    cold = load_omniglot(tiny_root, "small2", cache_dir=tmp_path)
    cold_s = time.perf_counter() - started
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1
    started = time.perf_counter()
    warm = load_omniglot(tiny_root, "small2", cache_dir=tmp_path)
    warm_s = time.perf_counter() - started
    assert torch.equal(cold.images, warm.images) and cold.class_names == warm.class_names
    assert warm_s < 1.0 and warm_s < cold_s
    files[0].write_bytes(b"garbage, not a torch file")
    rebuilt = load_omniglot(tiny_root, "small2", cache_dir=tmp_path)
    assert torch.equal(rebuilt.images, cold.images)
    assert TensorCache(tmp_path).load(files[0].stem, lambda d: True) is not None  # rewritten, valid again


def test_cache_with_wrong_content_is_rebuilt(tiny_root, tmp_path):
    cold = load_omniglot(tiny_root, "small2", cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.pt")
    torch.save({"version": 1, "images": torch.zeros(3, 1, 28, 28, dtype=torch.uint8),
                "characters": ["a"], "offsets": torch.tensor([0, 1])}, entry)
    again = load_omniglot(tiny_root, "small2", cache_dir=tmp_path)
    assert torch.equal(again.images, cold.images)


def test_cache_key_follows_image_size(tiny_root, tmp_path):
    ds = load_omniglot(tiny_root, "small2", image_size=20, cache_dir=tmp_path)
    assert ds.get(0, [0]).shape == (1, 1, 20, 20) and len(ds) == 24
    load_omniglot(tiny_root, "small2", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_episodes_from_real_omniglot(background):
    ep = EpisodeSampler(background, 20, 1, 5, seed=0)[0]
    assert ep.support_x.shape == (20, 1, 28, 28) and ep.query_x.shape == (100, 1, 28, 28)


def test_missing_archive_and_wrong_layout(root, tmp_path):
    with pytest.raises(DatasetLayoutError, match="images_evaluation.zip"):
        load_omniglot(tmp_path, "evaluation")
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        load_omniglot(tmp_path / "nowhere", "background")
    (tmp_path / "images_background").mkdir()
    (tmp_path / "images_background" / "readme.txt").write_text("hi")
    with pytest.raises(DatasetLayoutError, match="Alphabet"):
        load_omniglot(tmp_path, "background")
    (tmp_path / "images_evaluation.zip").write_bytes(b"not a zip")
    with pytest.raises(DatasetLayoutError, match="not a readable zip"):
        load_omniglot(tmp_path, "evaluation")


def test_vinyals_split_file_missing_or_bad(root, tmp_path):
    for name in ("images_background.zip", "images_evaluation.zip"):
        (tmp_path / name).symlink_to(root / name)
    with pytest.raises(DatasetLayoutError, match="vinyals"):
        load_omniglot(tmp_path, "vinyals-test")
    (tmp_path / "splits" / "vinyals").mkdir(parents=True)
    (tmp_path / "splits" / "vinyals" / "test.txt").write_text("Gurmukhi/character42/rot045\n")
    with pytest.raises(DatasetLayoutError, match="line 1"):
        load_omniglot(tmp_path, "vinyals-test")
    (tmp_path / "splits" / "vinyals" / "test.txt").write_text("Klingon/character01/rot000\n")
    with pytest.raises(DatasetLayoutError, match="Klingon/character01"):
        load_omniglot(tmp_path, "vinyals-test")


def test_unknown_split(root):
    with pytest.raises(FewShotError, match="vinyals-train"):
        load_omniglot(root, "training")


def test_extracted_folder_with_extra_nesting(root, tmp_path):
    with zipfile.ZipFile(root / "images_background_small2.zip") as zf:
        members = [m for m in zf.namelist() if "/Greek/" in m or m.count("/") < 2]
        zf.extractall(tmp_path / "images_background_small2", members)
    ds = load_omniglot(tmp_path, "small2", cache_dir=tmp_path / "cache")
    assert len(ds) > 0 and all(n.startswith("Greek/") for n in ds.class_names)
    shutil.rmtree(tmp_path / "images_background_small2")
