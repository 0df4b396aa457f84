"""Label exports: CSV and JSON content, the class folder tree, and never overwriting."""
from __future__ import annotations

import csv
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import ExportError, FewShotError
from engine.export import ExportReport, export_csv, export_folders, export_json
from engine.export.labels import CSV_COLUMNS, class_folder_names
from engine.labeling import ClassInfo, PredictionRow, Project


def make_png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, size=(8, 8), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def project(tmp_path, shared_dir):
    """Images of every kind: confirmed, 'none of these', predicted sure and unsure,
    unlabeled, a bad file, and two files of one name in one class."""
    src = tmp_path / "src"
    with zipfile.ZipFile(shared_dir / "data" / "omniglot" / "images_evaluation.zip") as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".png"))[:3]
        omniglot = []
        for k, name in enumerate(names):
            target = src / "omniglot" / f"char {k}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
            omniglot.append(target)
    files = {
        "confirmed": omniglot[0],
        "none": omniglot[1],
        "sure": omniglot[2],
        "unsure": make_png(src / "unsure.png", 1),
        "unlabeled": make_png(src / "ünlabeled photo.png", 2),
        "twin1": make_png(src / "a" / "same.png", 3),
        "twin2": make_png(src / "b" / "same.png", 4),
    }
    files["bad"] = src / "bad.jpg"
    files["bad"].write_text("not a jpeg")
    with Project.create(tmp_path / "p") as p:
        cat, dog, odd = p.add_class("cat"), p.add_class("dog"), p.add_class("odd, \"quoted\"/name")
        reports = {k: p.add_images([f]) for k, f in files.items()}
        assert reports["bad"].errors and all(r.added for k, r in reports.items() if k != "bad")
        ids = {k: r.added[0] for k, r in reports.items() if r.added}
        model = p.set_model("m", {})
        rows = [PredictionRow(ids[k], probs, [cat, dog, odd], entropy=0.5, margin=0.25, mutual_info=mi,
                              ood_score=ood)
                for k, probs, mi, ood in [("confirmed", [0.2, 0.7, 0.1], 0.01, 1.5),
                                          ("sure", [0.03, 0.95, 0.02], None, 0.2),
                                          ("unsure", [0.6, 0.3, 0.1], None, 0.9)]]
        p.write_predictions(model, rows)
        p.set_label(ids["confirmed"], cat)
        p.set_label(ids["none"], None)
        p.set_label(ids["twin1"], cat)
        p.set_label(ids["twin2"], cat)
        p.files, p.ids = files, ids  # for the tests' convenience
        yield p


def read_csv(path: Path) -> dict[str, dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["path"]: row for row in csv.DictReader(fh)}


def test_csv_lists_every_image_with_its_current_label(project, tmp_path):
    out = tmp_path / "labels.csv"
    report = export_csv(project, out)
    assert isinstance(report, ExportReport) and report.path == out and report.written == 8 and not report.skipped
    with open(out, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert header == [*CSV_COLUMNS, "p_cat", "p_dog", 'p_odd, "quoted"/name']
    rows = read_csv(out)
    f = project.files
    r = rows[str(f["confirmed"])]
    assert (r["label"], r["source"], r["error"]) == ("cat", "human", "")
    # The uncertainty columns are the model's, even on a confirmed row.
    assert (float(r["confidence"]), float(r["entropy"]), float(r["margin"]), float(r["mutual_info"]),
            float(r["ood_score"])) == pytest.approx((0.7, 0.5, 0.25, 0.01, 1.5))
    assert float(r["p_dog"]) == pytest.approx(0.7)
    r = rows[str(f["sure"])]
    assert (r["label"], r["source"], r["mutual_info"]) == ("dog", "model", "")
    assert float(r["confidence"]) == pytest.approx(0.95) and float(r['p_odd, "quoted"/name']) == pytest.approx(0.02)
    r = rows[str(f["none"])]
    assert (r["label"], r["source"], r["confidence"], r["p_cat"]) == ("", "human", "", "")
    r = rows[str(f["unlabeled"])]
    assert (r["label"], r["source"], r["confidence"]) == ("", "", "")
    r = rows[str(f["bad"])]
    assert (r["label"], r["source"], r["confidence"]) == ("", "", "") and "not an image" in r["error"]


def test_csv_and_json_never_overwrite_silently(project, tmp_path):
    out = tmp_path / "labels.csv"
    out.write_text("precious\n")
    with pytest.raises(ExportError, match="already exists; choose another file name"):
        export_csv(project, out)
    assert out.read_text() == "precious\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]  # no temp file left behind
    export_csv(project, out, overwrite=True)
    assert len(read_csv(out)) == 8
    with pytest.raises(ExportError, match="already exists"):
        export_json(project, out)
    with pytest.raises(ExportError, match="is a folder"):
        export_csv(project, tmp_path)
    with pytest.raises(ExportError, match="does not exist"):
        export_json(project, tmp_path / "no" / "such" / "labels.json")
    assert issubclass(ExportError, FewShotError)


def test_json_holds_classes_and_images(project, tmp_path):
    report = export_json(project, tmp_path / "labels.json")
    data = json.loads((tmp_path / "labels.json").read_text(encoding="utf-8"))
    assert report.written == 8 and data["format"] == 1 and data["project"] == str(project.path)
    assert [c["name"] for c in data["classes"]] == ["cat", "dog", 'odd, "quoted"/name']
    images = {i["path"]: i for i in data["images"]}
    f = project.files
    assert images[str(f["unlabeled"])]["path"].endswith("ünlabeled photo.png")
    sure = images[str(f["sure"])]
    assert (sure["label"], sure["source"], sure["mutual_info"], sure["error"]) == ("dog", "model", None, None)
    assert sure["probs"] == pytest.approx({"cat": 0.03, "dog": 0.95, 'odd, "quoted"/name': 0.02})
    assert images[str(f["none"])]["label"] is None and images[str(f["none"])]["source"] == "human"
    bad = images[str(f["bad"])]
    assert bad["label"] is None and bad["probs"] is None and "not an image" in bad["error"]


def test_folder_tree_copies_confirmed_images_and_skips_existing(project, tmp_path):
    out = tmp_path / "tree"
    calls = []
    report = export_folders(project, out, progress=lambda d, t: calls.append((d, t)))
    f = project.files
    cat = out / "cat"
    assert report.written == 3 and report.skipped == [] and report.path == out
    twin2 = cat / f"same-{project.image(project.ids['twin2']).hash[:10]}.png"  # a name clash: suffixed
    assert sorted(p.name for p in cat.iterdir()) == sorted([f["confirmed"].name, "same.png", twin2.name])
    assert (cat / "same.png").read_bytes() == f["twin1"].read_bytes()  # the first one added keeps its name
    assert twin2.read_bytes() == f["twin2"].read_bytes() and not twin2.is_symlink()
    assert calls[-1] == (8, 8)
    # Again: everything exists, nothing is touched, all is reported.
    (cat / "same.png").write_bytes(b"edited by the user")
    again = export_folders(project, out)
    assert again.written == 0 and len(again.skipped) == 3
    assert all("already exists" in reason for _, reason in again.skipped)
    assert (cat / "same.png").read_bytes() == b"edited by the user"
    assert not list(out.rglob("*.part"))


def test_folder_tree_with_predictions_above_a_threshold(project, tmp_path):
    report = export_folders(project, tmp_path / "tree", include_predictions=True, min_confidence=0.9)
    assert report.written == 4
    assert (tmp_path / "tree" / "dog" / project.files["sure"].name).exists()  # 0.95
    assert not (tmp_path / "tree" / "cat" / project.files["unsure"].name).exists()  # 0.6
    low = export_folders(project, tmp_path / "tree2", include_predictions=True, min_confidence=0.5)
    assert low.written == 5
    with pytest.raises(ExportError, match="between 0 and 1"):
        export_folders(project, tmp_path / "t3", min_confidence=1.5)


def test_folder_tree_links(project, tmp_path):
    hard = export_folders(project, tmp_path / "hard", link="hardlink")
    src = project.files["confirmed"]
    target = tmp_path / "hard" / "cat" / src.name
    assert hard.written == 3 and target.stat().st_ino == src.stat().st_ino
    soft = export_folders(project, tmp_path / "soft", link="symlink")
    target = tmp_path / "soft" / "cat" / src.name
    assert soft.written == 3 and target.is_symlink() and target.resolve() == src.resolve()
    with pytest.raises(ExportError, match="unknown link mode"):
        export_folders(project, tmp_path / "x", link="move")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        export_folders(project, tmp_path / "file")


def test_folder_tree_reports_missing_sources(project, tmp_path):
    os.remove(project.files["confirmed"])
    report = export_folders(project, tmp_path / "tree")
    assert report.written == 2
    assert report.skipped == [(str(tmp_path / "tree" / "cat" / project.files["confirmed"].name),
                               f"the source image {project.files['confirmed']} is missing (moved or deleted?); "
                               "rescan its folder")]


def test_class_folder_names_are_safe_and_unique():
    names = class_folder_names([ClassInfo(1, "a/b", "#000000", 0), ClassInfo(2, "A_B", "#000000", 1),
                                ClassInfo(3, "CON", "#000000", 2), ClassInfo(4, "..", "#000000", 3),
                                ClassInfo(5, 'what?*:"<>|', "#000000", 4), ClassInfo(6, "ok name", "#000000", 5)])
    assert names == {1: "a_b", 2: "A_B_2", 3: "CON_", 4: "_", 5: "what_______", 6: "ok name"}


def test_a_read_only_disk_gives_the_reason_not_the_cleanup_error(project, tmp_path, monkeypatch):
    """A user trial: on a read-only disk the temporary file's clean-up failed too, and its
    OSError replaced the export's typed error ("Unexpected error: OSError ...")."""
    import errno
    import engine.export.labels as labels_mod

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "x"))
    monkeypatch.setattr(labels_mod.os, "replace", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(ExportError, match="the disk is read-only: write somewhere else"):
        export_csv(project, tmp_path / "labels.csv", overwrite=True)
