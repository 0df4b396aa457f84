"""Per-image label history (``Project.label_history``): every label and example action,
undo and redo, and class deletion append events in the action's own transaction; they
survive reopening, outlive the capped undo log, and a project of the previous format
gains the table on open and keeps working (its old undo entries included)."""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from engine.errors import ProjectError
from engine.labeling import PredictionRow, Project
from engine.labeling import schema
from engine.labeling.history import (ACCEPTED, CLASS_DELETED, CLEARED, LABELLED, MADE_EXAMPLE, NONE_OF_THESE,
                                     REMOVED_EXAMPLE, LabelEvent)
from labeling_data import make_png


def summary(events: list[LabelEvent]) -> list[tuple]:
    return [(e.source, e.action, e.class_name) for e in events]


@pytest.fixture
def setup(tmp_path):
    files = [make_png(tmp_path / "img" / f"{k}.png", k) for k in range(4)]
    with Project.create(tmp_path / "p.fewshot") as p:
        cat, dog = p.add_class("cat"), p.add_class("dog")
        ids = p.add_images(files).added
        model = p.set_model("m", {})
        # The model predicts dog for image 0 and cat for image 1.
        p.write_predictions(model, [PredictionRow(ids[0], [0.3, 0.7], [cat, dog], 0.6, 0.4),
                                    PredictionRow(ids[1], [0.9, 0.1], [cat, dog], 0.3, 0.8)])
        yield p, ids, cat, dog


def test_each_action_writes_one_event(setup):
    p, ids, cat, dog = setup
    t0 = time.time()
    p.set_label(ids[0], cat)  # the model said dog: a label
    p.set_label(ids[1], cat)  # the model said cat: the prediction accepted
    p.set_label(ids[2], None)
    p.set_label(ids[2], None)  # no change: no event, as no undo step
    p.clear_label(ids[2])
    p.add_examples(dog, [ids[3]])
    p.remove_example(dog, ids[3])
    assert summary(p.label_history(ids[0])) == [("human", LABELLED, "cat")]
    assert summary(p.label_history(ids[1])) == [("human", ACCEPTED, "cat")]
    assert summary(p.label_history(ids[2])) == [("human", NONE_OF_THESE, None), ("human", CLEARED, None)]
    assert summary(p.label_history(ids[3])) == [("human", MADE_EXAMPLE, "dog"), ("human", REMOVED_EXAMPLE, "dog")]
    event = p.label_history(ids[0])[0]
    assert event.image_id == ids[0] and event.class_id == cat and t0 <= event.time <= time.time()
    with pytest.raises(ProjectError, match="no image"):
        p.label_history(12345)


def test_undo_and_redo_name_the_action_they_replay(setup):
    p, ids, cat, dog = setup
    p.add_examples(dog, [ids[0], ids[1]])  # one undo step for two images
    p.set_label(ids[1], cat)
    p.rename_class(cat, "kitten")  # events keep the name of their time; replays use the current one
    assert p.undo() is not None
    assert p.undo() is not None
    assert p.redo() is not None
    assert summary(p.label_history(ids[0])) == [
        ("human", MADE_EXAMPLE, "dog"), ("undo", MADE_EXAMPLE, "dog"), ("redo", MADE_EXAMPLE, "dog")]
    assert summary(p.label_history(ids[1])) == [
        ("human", MADE_EXAMPLE, "dog"), ("human", ACCEPTED, "cat"), ("undo", ACCEPTED, "kitten"),
        ("undo", MADE_EXAMPLE, "dog"), ("redo", MADE_EXAMPLE, "dog")]
    # A new action drops the redo entry; its events stay, since they happened.
    p.clear_label(ids[0])
    assert p.redo() is None
    assert [e.action for e in p.label_history(ids[1])][-1] == MADE_EXAMPLE


def test_events_outlive_the_capped_undo_log_and_survive_reopen(setup, tmp_path):
    p, ids, cat, dog = setup
    p._history._limit = 3
    for k in range(8):
        p.set_label(ids[2], cat if k % 2 else dog)
    assert p._conn.execute("SELECT count(*) FROM history").fetchone()[0] == 3
    path = p.path
    p.close()
    with Project.open(path) as again:
        events = again.label_history(ids[2])
        assert [e.class_name for e in events] == ["dog", "cat"] * 4
        assert [e.time for e in events] == sorted(e.time for e in events)


def test_deleting_a_class_records_the_labels_it_took(setup):
    p, ids, cat, dog = setup
    p.set_label(ids[0], dog)
    p.add_examples(dog, [ids[3]])
    p.delete_class(dog)
    assert summary(p.label_history(ids[0]))[-1] == ("human", CLASS_DELETED, "dog")
    assert summary(p.label_history(ids[3]))[-1] == ("human", CLASS_DELETED, "dog")
    assert p.label_history(ids[1]) == []  # only the model's guess was dog there: not a person's action


def test_a_failed_action_writes_no_event(setup):
    p, ids, cat, dog = setup
    with pytest.raises(ProjectError):
        p.remove_example(cat, ids[0])  # not an example
    with pytest.raises(ProjectError):
        p.set_label(ids[0], 999)
    assert p.label_history(ids[0]) == []


def _previous_format_project(path: Path, image: Path) -> dict:
    """A project exactly as the previous app version wrote it: format 1, no label_events,
    one class, one image, a human label and its undo entry (written as that version did)."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN")
    schema.MIGRATIONS[0](conn)
    conn.execute("PRAGMA user_version = 1")
    now = time.time()
    conn.execute("INSERT INTO classes(id, name, color, ord) VALUES (1, 'cat', '#4e79a7', 0)")
    conn.execute("INSERT INTO images(id, path, hash, size, width, height, format, added, status, label_class_id, "
                 "label_source) VALUES (1, ?, 'h1', 100, 12, 10, 'PNG', ?, 'confirmed', 1, 'human')", (str(image), now))
    conn.execute("INSERT INTO labels(image_id, class_id, source, time) VALUES (1, 1, 'human', ?)", (now,))
    changes = [{"kind": "label", "image_id": 1, "before": None, "after": {"class": 1}}]
    conn.execute("INSERT INTO history(description, changes, undone, time) VALUES ('label 0.png as cat', ?, 0, ?)",
                 (json.dumps(changes), now))
    conn.execute("COMMIT")
    conn.close()
    return {"image": 1, "cat": 1}


def test_a_previous_format_project_migrates_on_open(tmp_path):
    path = tmp_path / "old.fewshot"
    ids = _previous_format_project(path, make_png(tmp_path / "0.png", 0))
    with Project.open(path) as p:
        assert p._conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION == 3
        assert p.label_history(ids["image"]) == []  # nothing was recorded before the upgrade
        # The old undo entry still undoes, and its history is derived from its changes.
        assert p.undo() == "label 0.png as cat"
        assert p.image(ids["image"]).status == "unlabeled"
        assert p.redo() == "label 0.png as cat"
        assert summary(p.label_history(ids["image"])) == [("undo", LABELLED, "cat"), ("redo", LABELLED, "cat")]
        p.set_label(ids["image"], None)
        assert summary(p.label_history(ids["image"]))[-1] == ("human", NONE_OF_THESE, None)
    with Project.open(path) as p:  # opening again migrates nothing more
        assert len(p.label_history(ids["image"])) == 3


def test_rolling_back_to_format_1_and_reopening_rebuilds_the_table(tmp_path):
    """The other way to make a previous-format file: take a current one back."""
    path = tmp_path / "p.fewshot"
    with Project.create(path) as p:
        cat = p.add_class("cat")
        image = p.add_images([make_png(tmp_path / "a.png", 1)]).added[0]
        p.set_label(image, cat)
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("DROP TABLE label_events")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with Project.open(path) as p:
        assert p.label_history(image) == []
        p.clear_label(image)
        assert summary(p.label_history(image)) == [("human", CLEARED, "cat")]
        assert p.image(image).status == "unlabeled"
