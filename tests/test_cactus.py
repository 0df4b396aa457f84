"""CACTUs: meta-training on unlabeled images, tasks from k-means clusters of embeddings."""
import hashlib
import json
import zipfile

import numpy as np
import pytest
import torch

from engine.cli import main
from engine.training import cactus


@pytest.fixture(scope="module")
def flat_folder(omniglot_root, tmp_path_factory):
    """The minimal background split as one folder, each file named by a hash: no class in any name."""
    out = tmp_path_factory.mktemp("flat")
    with zipfile.ZipFile(omniglot_root / "images_background_small1.zip") as zf:
        for info in zf.infolist():
            if info.filename.endswith(".png") and "/." not in info.filename:
                (out / (hashlib.sha1(info.filename.encode()).hexdigest() + ".png")).write_bytes(zf.read(info))
    return out


def test_kmeans_finds_separated_groups():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(6, 16, generator=g) * 10
    x = torch.cat([c + torch.randn(40, 16, generator=g) for c in centres])
    labels = cactus.kmeans(x, 6, 20, torch.Generator().manual_seed(1))
    truth = torch.arange(6).repeat_interleave(40)
    for c in range(6):  # every found cluster is exactly one true group
        assert len(set(truth[labels == c].tolist())) == 1
    assert len(set(labels.tolist())) == 6


def test_partitions_differ_and_cover_every_image():
    z = torch.randn(300, 40, generator=torch.Generator().manual_seed(0))
    parts = cactus.partitions(z, 3, 10, seed=0, dims=16)
    assert all(p.shape == (300,) and int(p.max()) < 10 for p in parts)
    assert not torch.equal(parts[0], parts[1])


def test_training_on_a_flat_folder_reads_no_class_folder(flat_folder, tmp_path, monkeypatch):
    import engine.data.folder as folder
    import engine.data.omniglot as omniglot
    import engine.data.transforms as transforms

    def refuse(*a, **k):
        raise AssertionError("a labeled loader was used")
    monkeypatch.setattr(folder, "find_class_images", refuse)
    monkeypatch.setattr(omniglot, "load_omniglot", refuse)
    read = []
    real = transforms.load_array
    monkeypatch.setattr(transforms, "load_array", lambda src, *a, **k: (read.append(src), real(src, *a, **k))[1])
    out = tmp_path / "run"
    code = main(["train", "--dataset", "unlabeled", "--data-root", str(flat_folder), "--embedder", "omniglot",
                 "--channels", "1", "--image-size", "28", "--way", "5", "--shot", "1", "--query", "2",
                 "--partitions", "3", "--clusters", "12", "--episodes", "4", "--device", "cpu", "--out", str(out),
                 "--events", str(tmp_path / "events.jsonl")])
    assert code == 0
    assert read and all(str(p).startswith(str(flat_folder)) for p in read)
    files = {str(p) for p in flat_folder.iterdir()}
    assert {str(p) for p in read} == files  # every image, each one its own item
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert {"embedding", "clustering"} <= {e.get("stage") for e in events if e["event"] == "preparing"}
    meta = json.loads((out / "model.json").read_text())
    assert meta["training"]["dataset"] == "unlabeled" and meta["training"]["embedder"] == "omniglot"
    assert meta["channels"] == 1 and meta["image_size"] == 28


def test_every_task_comes_from_one_partition(flat_folder):
    from engine.data.omniglot import omniglot_preprocessing
    dataset, sampler = cactus.cactus_dataset(str(flat_folder), omniglot_preprocessing(28), embedder="omniglot",
                                             way=5, shot=1, query=2, partition_count=3, clusters=12, seed=0,
                                             device=torch.device("cpu"))
    for i in range(20):
        classes, _ = sampler.indices(i)
        partitions = {dataset.class_names[c].split(" cluster")[0] for c in classes}
        assert len(partitions) == 1 and len(set(classes.tolist())) == 5
    assert np.all(np.asarray(dataset.class_sizes()) >= 3)


@pytest.mark.parametrize("extra, expected", [([], "--embedder"), (["--embedder", "omniglot", "--val-split", "x"],
                                                                 "validate")])
def test_unlabeled_errors_say_what_to_do(flat_folder, tmp_path, capsys, extra, expected):
    code = main(["train", "--dataset", "unlabeled", "--data-root", str(flat_folder), "--episodes", "2",
                 "--out", str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and expected in err


def test_a_folder_without_images_is_a_layout_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["train", "--dataset", "unlabeled", "--data-root", str(tmp_path / "empty"), "--embedder", "omniglot",
                 "--episodes", "2", "--out", str(tmp_path / "run")])
    assert code == 2 and "holds no images" in capsys.readouterr().err
