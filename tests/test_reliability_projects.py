"""Project files under hostile conditions: second names, foreign and damaged files, full and
read-only disks, litter, stale caches. Each test fails on the code before issue 11."""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from labeling_data import examples_dir, extract_omniglot, make_png
from reliability_helpers import ROOT, assert_user_error, fewshot, fill, remount_read_only, small_disk

from engine.errors import DamagedProjectError, EmptyProjectFileError, ProjectError, ProjectLockedError
from engine.labeling.store import Project
from engine.labeling.store.backup import backup_file

HOLD = """
import sys
from engine.labeling.store import Project
p = Project.open(sys.argv[1])
print("open", flush=True)
sys.stdin.readline()
p.close()
"""


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def small_project(path: Path, images: int = 4) -> list[int]:
    with Project.create(path) as p:
        cat = p.add_class("cat")
        ids = p.add_images([make_png(path.parent / "img" / f"{k}.png", k) for k in range(images)]).added
        p.set_label(ids[0], cat)
    return ids


def test_every_name_of_a_project_file_meets_the_same_lock(tmp_path):
    path = tmp_path / "p.fewshot"
    small_project(path)
    hard = tmp_path / "hard-link.fewshot"
    os.link(path, hard)
    soft = tmp_path / "soft-link.fewshot"
    soft.symlink_to(path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], cwd=ROOT, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "open"
        for other in (hard, soft, tmp_path / "." / "p.fewshot"):
            with pytest.raises(ProjectLockedError, match="already open in another window or program") as info:
                Project.open(other)
            assert "pid " in str(info.value)  # who holds it
        done = fewshot("check", "--project", hard)  # reading is allowed while it is open
        assert done.returncode == 0, done.stderr
    finally:
        holder.communicate("\n", timeout=30)
    with Project.open(hard) as p:  # free again once the holder closed it
        assert p.count() == 4


def test_a_file_that_is_not_a_project_is_left_exactly_as_it_was(tmp_path):
    other = tmp_path / "other-app.fewshot"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('keep me')")
    conn.commit()
    conn.close()
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("path,label\na.png,cat\n")
    png = make_png(tmp_path / "photo.png", 3)
    before = {p: digest(p) for p in (other, csv_file, png)}
    for path, why in ((other, "SQLite database but not a few-shot"), (csv_file, "a text file"),
                      (png, "a PNG image")):
        with pytest.raises(ProjectError, match=why):
            Project.open(path)
    assert {p: digest(p) for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv", "other-app.fewshot", "photo.png"]


def test_an_empty_file_is_refused_unless_asked_for_and_then_becomes_a_project(tmp_path):
    empty = tmp_path / "new.fewshot"
    empty.touch()
    with pytest.raises(EmptyProjectFileError, match="empty file"):
        Project.open(empty)
    assert empty.stat().st_size == 0
    with Project.open(empty, use_empty=True) as p:
        p.add_class("cat")
    with Project.open(empty) as p:
        assert [c.name for c in p.classes()] == ["cat"]


def test_a_clean_close_leaves_nothing_beside_the_project(tmp_path):
    folder = tmp_path / "projects"
    folder.mkdir()
    path = folder / "p.fewshot"
    small_project(path)
    with Project.open(path) as p:
        p.add_class("dog")
    assert sorted(p.name for p in folder.iterdir()) == ["img", "p.fewshot"]


def test_damage_is_refused_with_a_way_back_and_the_backup_restores_what_people_did(tmp_path):
    path = tmp_path / "p.fewshot"
    ids = small_project(path, images=300)
    with Project.open(path) as p:
        dog = p.add_class("dog")
        p.set_label(ids[5], dog)
    assert backup_file(path).is_file()
    with open(path, "r+b") as fh:  # random bytes into the middle of the file
        fh.seek(path.stat().st_size // 2)
        fh.write(os.urandom(8192))
    with pytest.raises(DamagedProjectError, match="is damaged") as info:
        Project.open(path)
    assert "--restore-backup" in str(info.value) and str(backup_file(path)) in str(info.value)
    assert_user_error(fewshot("check", "--project", path), "is damaged", "--restore-backup")
    done = fewshot("check", "--project", path, "--restore-backup")
    assert done.returncode == 0, done.stderr
    assert "restored" in done.stdout and "intact" in done.stdout
    damaged = [p for p in tmp_path.iterdir() if ".damaged-" in p.name]
    assert damaged, "the damaged file is kept beside the project"
    with Project.open(path) as p:
        assert [c.name for c in p.classes()] == ["cat", "dog"]
        assert p.count() == 300
        assert (p.image(ids[0]).label_class_id, p.image(ids[5]).label_class_id) == (p.classes()[0].id, dog)
        assert p.count(status="confirmed") == 2


def test_a_read_only_disk_and_a_full_disk_give_a_message_not_a_traceback(tmp_path):
    with small_disk(tmp_path / "disk", "2m") as disk:
        project = disk / "p.fewshot"
        small_project(project)
        examples = examples_dir(tmp_path / "examples", extract_omniglot(tmp_path / "chars", 2, per_character=2),
                                per_class=1)
        fill(disk, leave=8192)
        done = fewshot("label", "--project", project, "--examples", examples, "--images", tmp_path / "chars",
                       "--model", "omniglot")
        assert_user_error(done, "disk is full")
        (disk / "filler.bin").unlink()
        with Project.open(project) as p:  # nothing it held before was lost
            assert p.count(status="confirmed") == 1 and p.count() >= 4
        remount_read_only(disk)
        done = fewshot("label", "--project", project, "--examples", examples, "--images", tmp_path / "chars",
                       "--model", "omniglot")
        assert_user_error(done, "read-only")


def test_a_path_longer_than_the_file_system_allows_is_one_line(tmp_path):
    done = fewshot("label", "--project", tmp_path / ("x" * 300 + ".fewshot"), "--examples", tmp_path,
                   "--images", tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr) < 1000


def test_a_project_open_elsewhere_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    import engine.model_store
    from export_data import run_cli
    path = tmp_path / "p.fewshot"
    small_project(path)
    loads = []
    monkeypatch.setattr(engine.model_store, "load_model", lambda *a, **k: loads.append(a))
    with Project.open(path):
        code, _out, err = run_cli("label", "--project", str(path), "--examples", str(tmp_path),
                                  "--images", str(tmp_path / "img"))
    assert code == 2 and "already open" in err
    assert loads == [], "the model was loaded although the project could not be opened"


def test_embeddings_are_not_reused_after_the_model_is_trained_again_in_place(tmp_path, omniglot_root):
    from export_data import make_project, run_cli
    model = tmp_path / "model"
    train = ["train", "--dataset", "omniglot", "--data-root", str(omniglot_root), "--split", "small1", "--way", "5",
             "--shot", "1", "--query", "2", "--episodes", "3", "--out", str(model)]
    assert run_cli(*train, "--seed", "1")[0] == 0
    project, _ = make_project(tmp_path / "a", characters=3, per_character=5, model=str(model))
    assert run_cli(*train, "--seed", "2")[0] == 0  # new weights, same folder
    from engine.labeling.labeler import Labeler
    from engine.model_store import load_model
    with Project.open(project) as p:
        summary = Labeler(p, load_model(str(model))).label()
        assert summary.embedded == 15  # every image embedded again with the new weights (was 0: all "from cache")
        relabeled = {r.path: r.predicted_class_id for r in p.iter_images()}
    fresh, _ = make_project(tmp_path / "b", characters=3, per_character=5, model=str(model))
    with Project.open(fresh) as p:
        names = {c.id: c.name for c in p.classes()}
        fresh_labels = {Path(r.path).name: names[r.predicted_class_id] for r in p.iter_images()}
    with Project.open(project) as p:
        names = {c.id: c.name for c in p.classes()}
        assert {Path(k).name: names[v] for k, v in relabeled.items()} == fresh_labels
    assert json.loads((model / "model.json").read_text())["training"]["seed"] == 2
