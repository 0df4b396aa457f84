"""The project store: every API call on real files, undo/redo, queries against a
brute-force reference, and reopening after close."""
from __future__ import annotations

import json
import sqlite3
import zipfile
from pathlib import Path

import numpy as np
import pytest

from engine.errors import FewShotError, ProjectError
from engine.labeling import PALETTE, AddReport, PredictionRow, Project
from engine.labeling.schema import APPLICATION_ID, SCHEMA_VERSION, SORT_COLUMNS, STATUSES
from labeling_data import make_png


@pytest.fixture(scope="module")
def omniglot_pngs(shared_dir, tmp_path_factory) -> list[Path]:
    """Real Omniglot drawings (105x105 1-bit PNGs) of three characters, copied out of the archive."""
    out = tmp_path_factory.mktemp("omniglot")
    with zipfile.ZipFile(shared_dir / "data" / "omniglot" / "images_evaluation.zip") as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".png"))[:30]
        paths = []
        for name in names:
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
            paths.append(target)
    return paths


@pytest.fixture
def project(tmp_path):
    with Project.create(tmp_path / "p.fewshot") as p:
        yield p


def predict_all(p: Project, model_id: int, seed: int = 0, mutual_info: bool = False) -> dict[int, np.ndarray]:
    """Write a made-up prediction for every usable image; returns image id -> probs."""
    class_ids = [c.id for c in p.classes()]
    rng = np.random.default_rng(seed)
    rows, out = [], {}
    for rec in p.iter_images():
        if rec.error is not None:
            continue
        probs = rng.dirichlet(np.ones(len(class_ids))).astype(np.float32)
        top = np.sort(np.append(probs, 0.0))[::-1]
        rows.append(PredictionRow(rec.id, probs, class_ids, float(-(probs * np.log(probs)).sum()),
                                  float(top[0] - top[1]), float(rng.random()) if mutual_info else None,
                                  float(rng.exponential())))
        out[rec.id] = probs
    p.write_predictions(model_id, rows)
    return out


def assert_consistent(p: Project) -> None:
    """The images table's copy of labels and predictions equals a full recomputation."""
    conn = p._conn
    columns = "id, status, label_class_id, label_source, predicted_class_id, confidence, entropy, margin, " \
              "mutual_info, ood_score"
    before = conn.execute(f"SELECT {columns} FROM images ORDER BY id").fetchall()
    labels_before = conn.execute("SELECT image_id, class_id, source FROM labels ORDER BY image_id").fetchall()
    with p._lock, p._tx():
        p._refresh(None)
    assert conn.execute(f"SELECT {columns} FROM images ORDER BY id").fetchall() == before
    assert conn.execute("SELECT image_id, class_id, source FROM labels ORDER BY image_id").fetchall() == labels_before
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


# ------------------------------------------------------------------ create / open


def test_create_makes_a_wal_project_with_the_schema_version(tmp_path):
    with Project.create(tmp_path / "labels") as p:
        assert p.path == tmp_path / "labels.fewshot"
        assert p._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert p._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert p._conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert "Project(" in repr(p)
    with pytest.raises(ProjectError, match="already exists"):
        Project.create(tmp_path / "labels.fewshot")
    with pytest.raises(ProjectError, match="does not exist"):
        Project.create(tmp_path / "missing" / "p.fewshot")


def test_open_errors_say_what_to_do(tmp_path):
    with pytest.raises(ProjectError, match="no project at"):
        Project.open(tmp_path / "nothing.fewshot")
    with pytest.raises(ProjectError, match="is a folder"):
        Project.open(tmp_path)
    text = tmp_path / "notes.fewshot"
    text.write_text("this is not a database, just some text that is long enough " * 20)
    with pytest.raises(ProjectError, match="not a few-shot project"):
        Project.open(text)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(ProjectError, match="not a few-shot labeling project"):
        Project.open(other)
    newer = tmp_path / "newer.fewshot"
    Project.create(newer).close()
    with sqlite3.connect(newer) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ProjectError, match="newer version"):
        Project.open(newer)
    assert issubclass(ProjectError, FewShotError)


def test_open_with_create_and_without_suffix(tmp_path):
    with Project.open(tmp_path / "new", create=True) as p:
        assert p.path.name == "new.fewshot"
        p.add_class("a")
    with Project.open(tmp_path / "new") as p:  # the suffix is found
        assert [c.name for c in p.classes()] == ["a"]


def test_closed_project_refuses_calls(tmp_path):
    p = Project.create(tmp_path / "p")
    p.close()
    p.close()  # twice is fine
    with pytest.raises(ProjectError, match="closed"):
        p.classes()


# ------------------------------------------------------------------ classes


def test_classes_add_rename_reorder_delete(project):
    a = project.add_class("cat")
    b = project.add_class("  dog ")
    c = project.add_class("bird", color="#ABCDEF")
    infos = project.classes()
    assert [(i.name, i.order) for i in infos] == [("cat", 0), ("dog", 1), ("bird", 2)]
    assert [i.color for i in infos] == [PALETTE[0], PALETTE[1], "#abcdef"]
    assert project.class_by_name("DOG").id == b
    assert project.class_by_name("fish") is None
    with pytest.raises(ProjectError, match="already exists"):
        project.add_class("Cat")
    with pytest.raises(ProjectError, match="needs a name"):
        project.add_class("   ")
    with pytest.raises(ProjectError, match="control characters"):
        project.add_class("a\tb")
    with pytest.raises(ProjectError, match="#rrggbb"):
        project.add_class("fish", color="red")
    project.rename_class(a, "Cat")  # same name, other case: allowed
    with pytest.raises(ProjectError, match="already exists"):
        project.rename_class(a, "dog")
    project.rename_class(a, "kitten")
    project.set_class_color(a, "#000000")
    project.reorder_classes([c, a, b])
    assert [(i.name, i.order, i.color) for i in project.classes()] == [
        ("bird", 0, "#abcdef"), ("kitten", 1, "#000000"), ("dog", 2, PALETTE[1])]
    with pytest.raises(ProjectError, match="exactly once"):
        project.reorder_classes([a, b])
    project.delete_class(a)
    assert [(i.name, i.order) for i in project.classes()] == [("bird", 0), ("dog", 1)]
    with pytest.raises(ProjectError, match="no class with id"):
        project.rename_class(a, "x")
    # Ids are never reused, and the freed colour is offered again.
    d = project.add_class("fish")
    assert d > c and project.classes()[-1].color == PALETTE[0]


def test_palette_cycles_when_used_up(project):
    for k in range(len(PALETTE) + 2):
        project.add_class(f"c{k}")
    colors = [c.color for c in project.classes()]
    assert colors[:len(PALETTE)] == list(PALETTE)
    assert all(c in PALETTE for c in colors)


def test_delete_class_removes_its_examples_labels_and_predictions(project, tmp_path):
    files = [make_png(tmp_path / "img" / f"{k}.png", k) for k in range(6)]
    a, b = project.add_class("a"), project.add_class("b")
    ex = project.add_examples(a, files[:2])
    project.add_images(files)
    ids = [r.id for r in project.iter_images()]
    project.set_label(ids[2], a)
    project.set_label(ids[3], b)
    model = project.set_model("m", {})
    project.write_predictions(model, [PredictionRow(ids[4], [0.9, 0.1], [a, b], 0.3, 0.8),
                                      PredictionRow(ids[5], [0.2, 0.8], [a, b], 0.5, 0.6),
                                      PredictionRow(ids[3], [0.7, 0.3], [a, b], 0.6, 0.4)])
    project.delete_class(a)
    assert project.examples() == []
    assert project.undo() is None  # the history went with the class
    assert [project.image(i).status for i in ids] == ["unlabeled", "unlabeled", "unlabeled", "confirmed",
                                                      "unlabeled", "predicted"]
    assert project.image(ids[5]).probs == {b: pytest.approx(0.8)}  # the deleted class's share is hidden
    assert project.image(ids[3]).label_class_id == b
    assert ex.added == ids[:2]
    assert_consistent(project)


# ------------------------------------------------------------------ images and examples


def test_add_images_registers_real_files_once(project, omniglot_pngs, tmp_path):
    report = project.add_images([omniglot_pngs[0].parents[1]])  # an alphabet folder: nested character folders
    assert isinstance(report, AddReport)
    assert len(report.added) == len(omniglot_pngs) and not report.errors and not report.skipped
    rec = project.image(report.added[0])
    assert (rec.width, rec.height, rec.status, rec.label_source) == (105, 105, "unlabeled", None)
    assert Path(rec.path) == omniglot_pngs[0] and len(rec.hash) == 32
    # A copy elsewhere and the same folder again: nothing new.
    copy = tmp_path / "copy.png"
    copy.write_bytes(omniglot_pngs[3].read_bytes())
    again = project.add_images([omniglot_pngs[0].parents[1], copy])
    assert again.added == [] and len(again.duplicates) == len(omniglot_pngs) + 1
    assert project.count() == len(omniglot_pngs)
    single = project.add_images(str(make_png(tmp_path / "one.png", 99)))  # one path, not in a list
    assert len(single.added) == 1 and project.count() == len(omniglot_pngs) + 1
    assert project.add_images([]) == AddReport()
    with pytest.raises(ProjectError, match="no image with id"):
        project.image(10_000)


def test_add_examples_confirms_and_undoes(project, tmp_path):
    files = [make_png(tmp_path / "cats" / f"c{k}.png", k) for k in range(3)]
    bad = tmp_path / "cats" / "broken.jpg"
    bad.write_bytes(b"<html>not found</html>")
    cat, dog = project.add_class("cat"), project.add_class("dog")
    report = project.add_examples(cat, [tmp_path / "cats"])
    assert len(report.added) == 3 and report.errors[0][0] == str(bad) and "HTML" in report.errors[0][1]
    ids = report.added
    assert sorted(project.examples()) == [(i, cat) for i in ids]
    assert all(project.image(i).status == "confirmed" and project.image(i).label_class_id == cat for i in ids)
    # Again, by path and by id: already examples.
    again = project.add_examples(cat, [files[0], ids[1]])
    assert again.added == [] and again.duplicates == [str(files[0]), str(files[1])]
    # Moving an example to another class is one undoable step.
    moved = project.add_examples(dog, [ids[0]])
    assert moved.added == [ids[0]]
    assert (ids[0], dog) in project.examples() and project.image(ids[0]).label_class_id == dog
    assert project.undo() == "add 1 example to dog"
    assert (ids[0], cat) in project.examples() and project.image(ids[0]).label_class_id == cat
    assert project.undo() == "add 3 examples to cat"
    assert project.examples() == [] and project.count(status="confirmed") == 0
    assert project.count(status="error") == 1
    assert project.redo() == "add 3 examples to cat"
    assert sorted(project.examples()) == [(i, cat) for i in ids]
    # An error image cannot be an example; an unknown class is refused before any scan.
    bad_id = project.query(status="error")[0].id
    assert project.add_examples(dog, [bad_id]).errors[0][0] == str(bad)
    with pytest.raises(ProjectError, match="no class"):
        project.add_examples(999, [files[0]])
    assert_consistent(project)


def test_remove_example_and_label_interplay(project, tmp_path):
    files = [make_png(tmp_path / f"{k}.png", k) for k in range(2)]
    cat, dog = project.add_class("cat"), project.add_class("dog")
    i, j = project.add_examples(cat, files).added
    project.remove_example(cat, i)
    assert project.examples() == [(j, cat)]
    assert project.image(i).status == "unlabeled"  # its label of that class went with it
    with pytest.raises(ProjectError, match="not an example"):
        project.remove_example(cat, i)
    assert project.undo() == f"remove example {files[0].name} from {'cat'}"
    assert (i, cat) in project.examples() and project.image(i).label_class_id == cat
    # Labelling an example as something else, or clearing it, ends its example role.
    project.set_label(j, dog)
    assert project.examples() == [(i, cat)]
    project.clear_label(i)
    assert project.examples() == [] and project.image(i).status == "unlabeled"
    assert project.undo() == f"clear label of {files[0].name}"
    assert project.undo() == f"label {files[1].name} as dog"
    assert sorted(project.examples()) == [(i, cat), (j, cat)]
    assert_consistent(project)


def test_mark_errors_excludes_images(project, tmp_path):
    files = [make_png(tmp_path / f"{k}.png", k) for k in range(3)]
    cat = project.add_class("cat")
    ids = project.add_examples(cat, files).added
    model = project.set_model("m", {})
    predict_all(project, model)
    project.mark_errors([(ids[0], "the file is truncated")])
    rec = project.image(ids[0])
    assert (rec.status, rec.error, rec.predicted_class_id, rec.probs) == ("error", "the file is truncated", None, None)
    assert project.examples() == [(ids[1], cat), (ids[2], cat)]
    assert [r[0] for r in project.images_to_embed("b")] == ids[1:]
    assert project.predicted_image_ids(model) == set(ids[1:])
    # Writing a prediction for it anyway is ignored.
    project.write_predictions(model, [PredictionRow(ids[0], [1.0], [cat], 0.0, 1.0)])
    assert project.image(ids[0]).status == "error"
    project.mark_errors([])
    assert_consistent(project)


def test_a_fixed_file_replaces_its_error_record_on_rescan(project, tmp_path):
    path = tmp_path / "photo.png"
    path.write_text("not yet an image")
    first = project.add_images([path])
    assert first.errors and project.count(status="error") == 1
    make_png(path, 1)
    second = project.add_images([path])
    assert second.added == [project.query()[0].id] and project.count() == 1
    assert project.image(second.added[0]).status == "unlabeled"


# ------------------------------------------------------------------ labels and undo


def test_set_and_clear_labels_with_undo_redo(project, tmp_path):
    files = [make_png(tmp_path / f"{k}.png", k) for k in range(3)]
    a, b = project.add_class("a"), project.add_class("b")
    ids = project.add_images(files).added
    model = project.set_model("m", {})
    project.write_predictions(model, [PredictionRow(ids[0], [0.2, 0.8], [a, b], 0.5, 0.6)])
    assert project.image(ids[0]).label_source == "model" and project.image(ids[0]).label_class_id == b
    project.set_label(ids[0], a)
    rec = project.image(ids[0])
    assert (rec.status, rec.label_class_id, rec.label_source, rec.predicted_class_id) == ("confirmed", a, "human", b)
    project.set_label(ids[0], a)  # no change: no history step
    project.set_label(ids[1], None)  # "none of these classes"
    rec = project.image(ids[1])
    assert (rec.status, rec.label_class_id, rec.label_source) == ("confirmed", None, "human")
    project.clear_label(ids[2])  # nothing to clear: no step
    assert project.undo_text() == f"label {files[1].name} as none of these classes"
    assert project.undo() == f"label {files[1].name} as none of these classes"
    assert project.image(ids[1]).status == "unlabeled"
    assert project.undo() == f"label {files[0].name} as a"
    # Undo brings back the model's label, not an empty one.
    rec = project.image(ids[0])
    assert (rec.status, rec.label_class_id, rec.label_source) == ("predicted", b, "model")
    assert project.undo() is None
    assert project.redo_text() == f"label {files[0].name} as a"
    assert project.redo() == f"label {files[0].name} as a"
    assert project.image(ids[0]).label_source == "human"
    project.clear_label(ids[0])  # a new action drops the redo step
    assert project.redo() is None
    assert project.image(ids[0]).label_source == "model"
    assert project.undo() == f"clear label of {files[0].name}"
    assert project.image(ids[0]).label_class_id == a
    with pytest.raises(ProjectError, match="no class"):
        project.set_label(ids[0], 12345)
    with pytest.raises(ProjectError, match="no image"):
        project.set_label(12345, a)
    assert_consistent(project)


def test_history_is_bounded(project, tmp_path):
    ids = project.add_images([make_png(tmp_path / "x.png", 0)]).added
    a, b = project.add_class("a"), project.add_class("b")
    project._history._limit = 5
    for k in range(12):
        project.set_label(ids[0], a if k % 2 else b)
    assert project._conn.execute("SELECT count(*) FROM history").fetchone()[0] == 5
    undone = 0
    while project.undo() is not None:
        undone += 1
    assert undone == 5


# ------------------------------------------------------------------ models, predictions, embeddings


def test_models_and_predictions(project, tmp_path):
    files = [make_png(tmp_path / f"{k}.png", k) for k in range(4)]
    a, b, c = project.add_class("a"), project.add_class("b"), project.add_class("c")
    ids = project.add_images(files).added
    assert project.current_model() is None
    m1 = project.set_model("protonet:conv4", {"examples": [1, 2], "way": 3})
    assert project.current_model() == (m1, "protonet:conv4", {"examples": [1, 2], "way": 3})
    m2 = project.set_model("protonet:conv4", {"examples": [1, 2, 3]})
    assert m2 != m1 and project.current_model()[0] == m2
    assert project.set_model("protonet:conv4", {"way": 3, "examples": [1, 2]}) == m1  # same model: resume
    with pytest.raises(ProjectError, match="JSON"):
        project.set_model("x", {"f": object()})
    rows = [PredictionRow(ids[0], np.array([0.1, 0.7, 0.2]), [a, b, c], 0.8, 0.5, 0.05, 1.5),
            PredictionRow(ids[1], [0.6, 0.4], [c, a], 0.67, 0.2, None, float("inf"))]
    project.write_predictions(m1, rows)
    rec = project.image(ids[0])
    assert (rec.status, rec.predicted_class_id, rec.label_class_id, rec.label_source) == ("predicted", b, b, "model")
    assert rec.confidence == pytest.approx(0.7) and rec.mutual_info == pytest.approx(0.05)
    assert rec.probs == pytest.approx({a: 0.1, b: 0.7, c: 0.2})
    rec = project.image(ids[1])
    assert rec.predicted_class_id == c and rec.probs == pytest.approx({c: 0.6, a: 0.4})
    assert rec.ood_score > 1e300  # infinity is stored as the largest float, so it still sorts last
    assert project.predicted_image_ids(m1) == {ids[0], ids[1]} and project.predicted_image_ids(m2) == set()
    # A human label survives new predictions.
    project.set_label(ids[0], c)
    project.write_predictions(m2, [PredictionRow(ids[0], [0.9, 0.1], [a, b], 0.3, 0.8)])
    rec = project.image(ids[0])
    assert (rec.status, rec.label_class_id, rec.label_source, rec.predicted_class_id) == ("confirmed", c, "human", a)
    assert project.predicted_image_ids(m2) == {ids[0]}
    with pytest.raises(ProjectError, match="no model"):
        project.write_predictions(999, rows)
    with pytest.raises(ProjectError, match="no longer in the project"):
        project.write_predictions(m1, [PredictionRow(ids[2], [0.5, 0.5], [a, 999], 0.7, 0.0)])
    with pytest.raises(ValueError):
        project.write_predictions(m1, [PredictionRow(ids[2], [0.5, 0.5], [a], 0.7, 0.0)])
    assert project.image(ids[2]).status == "unlabeled"  # the failed batch left nothing behind
    project.write_predictions(m1, [])
    project.clear_predictions()
    assert project.count(status="predicted") == 0 and project.count(status="confirmed") == 1
    assert project.image(ids[0]).predicted_class_id is None and project.image(ids[0]).label_class_id == c
    assert_consistent(project)


def test_embedding_cache(project, tmp_path):
    files = [make_png(tmp_path / f"{k}.png", k) for k in range(3)]
    ids = project.add_images(files).added
    todo = project.images_to_embed("conv4")
    assert [(i, p) for i, p, _ in todo] == [(i, str(f)) for i, f in zip(ids, files)]
    hashes = [h for _, _, h in todo]
    vectors = np.arange(12, dtype=np.float64).reshape(3, 4)
    project.put_embeddings("conv4", [(hashes[0], vectors[0]), (hashes[2], vectors[2])])
    assert [h for _, _, h in project.images_to_embed("conv4")] == [hashes[1]]
    assert len(project.images_to_embed("lite0")) == 3
    got_hashes, matrix = project.get_embeddings("conv4")
    assert got_hashes == [hashes[0], hashes[2]] and matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix, vectors[[0, 2]])
    got_hashes, matrix = project.get_embeddings("conv4", [hashes[2], hashes[1], hashes[0]])
    assert got_hashes == [hashes[2], hashes[0]]
    np.testing.assert_array_equal(matrix, vectors[[2, 0]])
    assert project.get_embeddings("conv4", [hashes[1]])[1].shape == (0, 4)
    assert project.get_embeddings("nothing")[1].shape == (0, 0)
    with pytest.raises(ValueError, match="one size"):
        project.put_embeddings("conv4", [(hashes[1], np.zeros(5))])
    project.put_embeddings("conv4", [(hashes[0], np.ones(4))])  # replacing is fine
    np.testing.assert_array_equal(project.get_embeddings("conv4", [hashes[0]])[1], np.ones((1, 4)))
    project.put_embeddings("conv4", [])


# ------------------------------------------------------------------ queries


@pytest.fixture
def labelled(project, tmp_path):
    """14 images (two with upper-case names, one bad), three classes, predictions with
    ties and without mutual information for some, a human label and a 'none' label."""
    names = ["b.png", "A.png", "c.png", "Z.png", "d.png", "e.png", "f.png", "g.png", "h.png", "i.png",
             "j.png", "k.png", "l.png"]
    files = [make_png(tmp_path / "q" / n, k) for k, n in enumerate(names)]
    (tmp_path / "q" / "bad.png").write_text("nope")
    a, b, c = project.add_class("a"), project.add_class("b"), project.add_class("c")
    project.add_images([tmp_path / "q"])
    model = project.set_model("m", {})
    recs = [r for r in project.iter_images() if r.error is None]
    rows = []
    for k, rec in enumerate(recs[:10]):  # the last 3 stay unlabeled
        probs = [0.6, 0.3, 0.1] if k % 3 == 0 else [0.2, 0.5, 0.3] if k % 3 == 1 else [0.1, 0.1, 0.8]
        rows.append(PredictionRow(rec.id, probs, [a, b, c], entropy=[0.9, 1.0, 0.6][k % 3],
                                  margin=[0.3, 0.2, 0.7][k % 3], mutual_info=0.1 * k if k < 6 else None,
                                  ood_score=float(10 - k)))
    project.write_predictions(model, rows)
    project.set_label(recs[0].id, c)
    project.set_label(recs[1].id, None)
    project.set_label(recs[11].id, b)
    return project


def reference(p: Project, class_id, status, sort, descending) -> list[int]:
    recs = [r for r in p.iter_images()
            if (status is None or r.status == status) and (class_id is None or r.label_class_id == class_id)]
    if sort == "name":
        fold = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")  # NOCASE: ASCII only
        ordered = sorted(recs, key=lambda r: (r.path.translate(fold), r.id), reverse=descending)
        return [r.id for r in ordered]
    col = SORT_COLUMNS[sort]
    valued = sorted((r for r in recs if getattr(r, col) is not None), key=lambda r: (getattr(r, col), r.id),
                    reverse=descending)
    return [r.id for r in valued] + sorted(r.id for r in recs if getattr(r, col) is None)


def test_query_matches_a_brute_force_reference(labelled):
    p = labelled
    classes = [c.id for c in p.classes()]
    for status in (None, *STATUSES):
        for class_id in (None, *classes):
            assert p.count(class_id=class_id, status=status) == len(reference(p, class_id, status, "name", False))
            for sort in SORT_COLUMNS:
                for descending in (False, True):
                    expected = reference(p, class_id, status, sort, descending)
                    got = [r.id for r in p.query(class_id=class_id, status=status, sort=sort,
                                                 descending=descending, limit=1000)]
                    assert got == expected, (class_id, status, sort, descending)
                    # Pages of 4 add up to the same listing.
                    paged = [r.id for off in range(0, len(expected) + 4, 4)
                             for r in p.query(class_id=class_id, status=status, sort=sort,
                                              descending=descending, offset=off, limit=4)]
                    assert paged == expected, (class_id, status, sort, descending)
    assert p.count() == 14 and p.count(status="error") == 1 and p.count(status="unlabeled") == 2
    assert p.query(sort="confidence", limit=1)[0].confidence == pytest.approx(0.5)  # least confident first
    with pytest.raises(ProjectError, match="unknown sort"):
        p.query(sort="size")
    with pytest.raises(ProjectError, match="unknown status"):
        p.count(status="done")
    with pytest.raises(ProjectError, match="offset"):
        p.query(offset=-1)
    assert p.query(limit=0) == []


def test_sorted_pages_follow_every_kind_of_write(labelled, tmp_path):
    """The in-memory sort index stays exact through each write path."""
    p = labelled
    a, b, c = [cl.id for cl in p.classes()]

    def check():
        for sort in ("confidence", "mutual_info", "ood"):
            for flt in ({}, {"status": "predicted"}, {"class_id": a}, {"class_id": b, "status": "confirmed"}):
                assert [r.id for r in p.query(**flt, sort=sort, limit=100)] == reference(
                    p, flt.get("class_id"), flt.get("status"), sort, False), (sort, flt)

    check()
    ids = [r.id for r in p.query(status="predicted", sort="ood")]
    p.set_label(ids[0], a)
    check()
    p.undo()
    check()
    p.mark_errors([(ids[1], "broken")])
    check()
    p.add_images([make_png(tmp_path / "late.png", 77)])
    check()
    predict_all(p, p.current_model()[0], seed=3, mutual_info=True)
    check()
    p.delete_class(b)
    check()
    p.clear_predictions()
    check()
    try:  # a failed write changes nothing
        p.write_predictions(p.current_model()[0], [PredictionRow(ids[2], [1.0], [999], 0.0, 1.0)])
    except ProjectError:
        pass
    check()


def test_iter_images_reads_every_image_in_chunks(labelled):
    ids = [r.id for r in labelled.iter_images(chunk=3)]
    assert ids == sorted(ids) and len(ids) == labelled.count()


# ------------------------------------------------------------------ persistence


def test_reopen_keeps_everything(tmp_path, omniglot_pngs):
    path = tmp_path / "keep.fewshot"
    with Project.create(path) as p:
        a, b = p.add_class("alpha"), p.add_class("beta", "#112233")
        ex = p.add_examples(a, omniglot_pngs[:3]).added
        ids = p.add_images(omniglot_pngs[3:10]).added
        model = p.set_model("protonet:conv4", {"n": 1})
        probs = predict_all(p, model, mutual_info=True)
        p.set_label(ids[0], b)
        p.set_label(ids[1], None)
        p.mark_errors([(ids[2], "truncated")])
        p.put_embeddings("conv4", [(p.image(ex[0]).hash, np.ones(8))])
        p.reorder_classes([b, a])
        before = {r.id: r for r in p.iter_images()}
        pages = p.query(sort="entropy", descending=True, limit=5)
    assert not path.with_name(path.name + "-wal").exists() or path.with_name(path.name + "-wal").stat().st_size == 0
    with Project.open(path) as p:
        assert [(c.name, c.color) for c in p.classes()] == [("beta", "#112233"), ("alpha", PALETTE[0])]
        assert {r.id: r for r in p.iter_images()} == before
        assert p.query(sort="entropy", descending=True, limit=5) == pages
        assert sorted(p.examples()) == [(i, a) for i in ex]
        assert p.current_model() == (model, "protonet:conv4", {"n": 1})
        assert p.image(ids[3]).probs == pytest.approx(dict(zip([a, b], probs[ids[3]].tolist())))
        assert p.get_embeddings("conv4")[1].shape == (1, 8)
        assert p.undo() == f"label {Path(p.image(ids[1]).path).name} as none of these classes"  # history kept too
        assert p._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert_consistent(p)


def test_project_json_meta_roundtrip_is_canonical(project):
    m = project.set_model("x", {"b": 1, "a": [1, 2]})
    stored = project._conn.execute("SELECT meta FROM models WHERE id = ?", (m,)).fetchone()[0]
    assert stored == json.dumps({"a": [1, 2], "b": 1}, separators=(",", ":"))


def test_worker_thread_writes_while_the_gui_thread_reads(project, tmp_path):
    """One Project shared by two threads, as the GUI and its worker do."""
    import threading

    files = [make_png(tmp_path / "t" / f"{k}.png", k) for k in range(30)]
    a, b = project.add_class("a"), project.add_class("b")
    ids = project.add_images(files).added
    model = project.set_model("m", {})
    failures = []

    def worker():
        try:
            for k in range(30):
                project.write_predictions(model, [PredictionRow(i, [0.5 + k / 100, 0.5 - k / 100], [a, b],
                                                                0.6, k / 50, None, float(k)) for i in ids])
        except Exception as e:  # pragma: no cover - reported below
            failures.append(e)

    thread = threading.Thread(target=worker)
    thread.start()
    while thread.is_alive():
        page = project.query(status="predicted", sort="ood", descending=True, limit=10)
        assert len({r.ood_score for r in page}) <= 1  # a page never mixes two batches
        project.set_label(ids[0], b)
        project.undo()
    thread.join()
    assert not failures and project.count(status="predicted") == 30
    assert {r.ood_score for r in project.query(limit=100)} == {29.0}
    assert_consistent(project)


def test_prediction_arrays_match_rows_through_class_changes(tmp_path):
    """write_prediction_arrays (the labeler's path) leaves the same database as
    write_predictions row by row, across refreshes that move some images to another
    class and leave others where they were, with human labels, NaN and infinity."""
    folder = tmp_path / "imgs"
    for k in range(40):
        make_png(folder / f"{k:02d}.png", seed=k)
    projects = [Project.create(tmp_path / f"{name}.fewshot") for name in ("rows", "arrays")]
    rng = np.random.default_rng(3)
    try:
        for p in projects:
            p.add_images([folder])
            for name in ("a", "b", "c"):
                p.add_class(name)
        ids = [r.id for r in projects[0].iter_images()]
        assert ids == [r.id for r in projects[1].iter_images()]
        class_ids = [c.id for c in projects[0].classes()]
        for p in projects:
            p.set_label(ids[0], class_ids[2])
            p.set_label(ids[1], None)
        probs = rng.dirichlet(np.ones(3), size=len(ids)).astype(np.float32)
        for step in range(4):
            if step:  # move a few images to another class, nudge the rest
                moved = rng.choice(len(ids), size=6, replace=False)
                probs[moved] = np.roll(probs[moved], 1, axis=1)
                probs = probs * 0.99 + 0.01 / 3
            entropy = rng.random(len(ids))
            entropy[5] = np.nan
            margin = rng.random(len(ids))
            ood = rng.exponential(size=len(ids))
            ood[7] = np.inf
            model_ids = [p.set_model("m", {"step": step}) for p in projects]
            projects[0].write_predictions(model_ids[0], [
                PredictionRow(i, probs[k], class_ids, float(entropy[k]), float(margin[k]), None, float(ood[k]))
                for k, i in enumerate(ids)])
            projects[1].write_prediction_arrays(model_ids[1], np.array(ids), class_ids, probs, entropy, margin,
                                                None, ood)
            tables = []
            for p in projects:
                assert_consistent(p)
                tables.append((
                    p._conn.execute("SELECT id, status, label_class_id, label_source, predicted_class_id, "
                                    "confidence, entropy, margin, mutual_info, ood_score FROM images "
                                    "ORDER BY id").fetchall(),
                    p._conn.execute("SELECT image_id, class_id, source FROM labels ORDER BY image_id").fetchall(),
                    p._conn.execute("SELECT image_id, class_id, probs, class_ids, entropy, ood_score "
                                    "FROM predictions ORDER BY image_id").fetchall()))
            assert tables[0] == tables[1], f"step {step}"
        rec = projects[1].image(ids[0])
        assert rec.status == "confirmed" and rec.label_class_id == class_ids[2]
        assert projects[1].image(ids[5]).entropy is None
    finally:
        for p in projects:
            p.close()
