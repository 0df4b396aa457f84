"""Lake et al. one-shot runs: the fixture builder (from the real evaluation set) and the loader."""
from __future__ import annotations

import zipfile

import pytest

from data_fixtures import OMNIGLOT_ROOT, build_lake_runs_fixture, require_shared
from engine.data.lake_runs import load_lake_runs
from engine.errors import DatasetLayoutError


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = require_shared(OMNIGLOT_ROOT)
    return build_lake_runs_fixture(root, tmp_path_factory.mktemp("lake") / "all_runs", runs=3, seed=1)


@pytest.fixture(scope="module")
def evaluation_index():
    """PNG bytes -> (alphabet/character, drawer) for the whole evaluation set."""
    index = {}
    with zipfile.ZipFile(require_shared(OMNIGLOT_ROOT / "images_evaluation.zip")) as zf:
        for name in zf.namelist():
            if name.endswith(".png"):
                parts = name.split("/")
                index.setdefault(zf.read(name), (f"{parts[-3]}/{parts[-2]}", parts[-1].split("_")[1]))
    return index


def test_runs_load(runs_dir):
    runs = load_lake_runs(runs_dir)
    assert [r.name for r in runs] == ["run01", "run02", "run03"]
    for run in runs:
        assert len(run.training) == 20 and len(run.test) == 20
        assert sorted(run.answers) == list(range(20))
        assert run.training[0].name == "class01.png" and run.test[-1].name == "item20.png"


def test_fixture_is_built_like_the_original(runs_dir, evaluation_index):
    for run in load_lake_runs(runs_dir):
        train = [evaluation_index[p.read_bytes()] for p in run.training]
        test = [evaluation_index[p.read_bytes()] for p in run.test]
        assert len({c.split("/")[0] for c, _ in train}) == 1  # one alphabet per run
        assert len({c for c, _ in train}) == 20
        assert len({d for _, d in train}) == 1 and len({d for _, d in test}) == 1  # drawer A vs drawer B
        assert train[0][1] != test[0][1]
        for (char, _), answer in zip(test, run.answers):
            assert train[answer][0] == char


def test_fixture_is_reproducible(tmp_path, runs_dir):
    again = build_lake_runs_fixture(require_shared(OMNIGLOT_ROOT), tmp_path / "again", runs=3, seed=1)
    assert (again / "run02" / "class_labels.txt").read_text() == (runs_dir / "run02" / "class_labels.txt").read_text()
    assert (again / "run02" / "test" / "item05.png").read_bytes() == (runs_dir / "run02" / "test" / "item05.png").read_bytes()


def _copy_run(runs_dir, dst):
    import shutil
    shutil.copytree(runs_dir / "run01", dst / "run01")
    return dst / "run01"


def test_no_runs(tmp_path):
    with pytest.raises(DatasetLayoutError, match="run01"):
        load_lake_runs(tmp_path)
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        load_lake_runs(tmp_path / "missing")


def test_missing_labels_file(runs_dir, tmp_path):
    run = _copy_run(runs_dir, tmp_path)
    (run / "class_labels.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="class_labels.txt"):
        load_lake_runs(tmp_path)


def test_answer_pointing_nowhere(runs_dir, tmp_path):
    run = _copy_run(runs_dir, tmp_path)
    lines = (run / "class_labels.txt").read_text().splitlines()
    lines[3] = lines[3].split()[0] + " run01/training/class99.png"
    (run / "class_labels.txt").write_text("\n".join(lines))
    with pytest.raises(DatasetLayoutError, match="line 4.*class99"):
        load_lake_runs(tmp_path)


def test_test_item_without_answer_and_malformed_line(runs_dir, tmp_path):
    run = _copy_run(runs_dir, tmp_path)
    lines = (run / "class_labels.txt").read_text().splitlines()
    (run / "class_labels.txt").write_text("\n".join(lines[1:]))
    with pytest.raises(DatasetLayoutError, match="no answer.*item01"):
        load_lake_runs(tmp_path)
    (run / "class_labels.txt").write_text("\n".join(["just-one-field"] + lines[1:]))
    with pytest.raises(DatasetLayoutError, match="line 1"):
        load_lake_runs(tmp_path)
