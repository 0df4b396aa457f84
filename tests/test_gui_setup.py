"""Setting a project up as a new user does: example folders in one step, a folder of images,
the model that suits the examples, remembered folders, an empty file. pytest-qt, offscreen."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gui_helpers import WAIT, engine_window, open_project_window, send_drop, wait_idle
from labeling_data import extract_omniglot, make_png
from PIL import Image
from PySide6.QtCore import QMimeData, QSettings, QUrl
from PySide6.QtWidgets import QFileDialog, QMessageBox

from engine.labeling.store import Project


def example_tree(root: Path, classes: int = 3, per_class: int = 2, chars: bool = True) -> Path:
    """``root/<class>/`` folders: Omniglot characters (small, 1-bit) or colour photos-to-be."""
    if chars:
        drawn = extract_omniglot(root.parent / f"{root.name}-source", classes, per_character=per_class)
        for k, files in enumerate(drawn.values()):
            (root / f"class{k}").mkdir(parents=True, exist_ok=True)
            for f in files:
                (root / f"class{k}" / f.name).write_bytes(f.read_bytes())
    else:
        for k in range(classes):
            for j in range(per_class):
                pixels = np.random.default_rng(k * 10 + j).integers(0, 255, (240, 320, 3), dtype=np.uint8)
                (root / f"class{k}").mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(root / f"class{k}" / f"{j}.jpg")
    return root


@pytest.fixture
def window(qtbot, tmp_path):
    w = engine_window(qtbot, tmp_path / "gui.ini")
    yield w
    w.close()


def test_import_examples_from_folders_creates_and_matches_classes(qtbot, window, tmp_path, monkeypatch):
    window.new_project(str(tmp_path / "p.fewshot"))
    qtbot.waitUntil(lambda: window.project is not None, timeout=WAIT)
    window.add_class("CLASS1")  # matched by name, ignoring case
    qtbot.waitUntil(lambda: len(window.classes) == 1, timeout=WAIT)
    tree = example_tree(tmp_path / "examples")
    (tree / "class0" / "notes.txt").write_text("not an image")
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(tree))
    assert window.act_import_examples.isEnabled()
    window.act_import_examples.trigger()
    wait_idle(qtbot, window)
    assert sorted(c.name for c in window.classes) == ["CLASS1", "class0", "class2"]
    assert len(window.project.examples()) == 6
    text, details = window.last_notice
    assert "6 examples added to 3 classes" in text and "2 new" in text and "1 skipped" in text, text
    assert "notes.txt" in details
    assert window.settings.value("folders/examples") == str(tree)

    # The same tree dropped between the cards: nothing new (already examples), said so.
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(tree))])
    assert send_drop(window.classes_panel.body, mime) == (True, True)
    wait_idle(qtbot, window)
    assert len(window.classes) == 3 and "6 already were examples" in window.last_notice[0]


def test_a_new_project_from_example_folders_in_one_step(qtbot, window, tmp_path, monkeypatch):
    tree = example_tree(tmp_path / "birds", chars=False)
    asked = []
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(tree))
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda parent, title, start, *rest: (
        asked.append(start) or start, ""))
    window.start_page.import_button.click()
    qtbot.waitUntil(lambda: window.project is not None, timeout=WAIT)
    wait_idle(qtbot, window)
    assert asked == [str(tmp_path / "birds.fewshot")]  # beside the examples, named after them
    assert Path(window.project.path) == tmp_path / "birds.fewshot"
    assert [c.name for c in window.classes] == ["class0", "class1", "class2"]
    # Colour photos: the engine switched from the omniglot model to photos, and said so.
    assert window.model_spec == "photos" and window.worker.context.model.name == "photos"
    assert window.model_box.currentData() == "photos"


def test_a_folder_of_images_with_sub_folders_asks_where_and_how(qtbot, window, tmp_path, monkeypatch):
    tree = example_tree(tmp_path / "chars")
    questions = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: questions.append(a[2]) or QMessageBox.StandardButton.Yes)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda parent, title, start, *rest: (start, ""))
    window.open_folder(str(tree))
    qtbot.waitUntil(lambda: window.project is not None, timeout=WAIT)
    wait_idle(qtbot, window)
    assert Path(window.project.path) == tmp_path / "chars.fewshot"
    assert "3 sub-folders" in questions[0] and "classes" in questions[0]
    assert len(window.classes) == 3 and len(window.project.examples()) == 6
    assert window.model_spec == "omniglot"  # small grayscale characters: kept

    # Answered No: the images are labeled, no class is made from the folders.
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.No)
    window.close_project()
    wait_idle(qtbot, window)
    window.open_folder(str(tree), project_path=str(tmp_path / "all.fewshot"))
    qtbot.waitUntil(lambda: window.project is not None and window.project.path.name == "all.fewshot", timeout=WAIT)
    wait_idle(qtbot, window)
    assert window.project.count() == 6 and window.classes == []


def test_file_dialogs_open_where_the_last_one_of_their_kind_ended(qtbot, tmp_path, monkeypatch):
    from fewshot_gui.folders import last_folder, remember_folder
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    (tmp_path / "photos").mkdir()
    (tmp_path / "out").mkdir()
    remember_folder(settings, "images", tmp_path / "photos")
    remember_folder(settings, "exports", tmp_path / "out" / "labels.csv")
    assert last_folder(settings, "images") == str(tmp_path / "photos")
    assert last_folder(settings, "exports") == str(tmp_path / "out")
    assert last_folder(settings, "examples") == str(Path.home())

    project = tmp_path / "p.fewshot"
    Project.create(project).close()
    window = open_project_window(qtbot, tmp_path, project)
    remember_folder(window.settings, "images", tmp_path / "photos")
    started = []
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda parent, title, start="", *a: (
        started.append(start) or ""))
    window.act_add_folder.trigger()
    assert started == [str(tmp_path / "photos")]
    window.close()


def test_an_empty_project_file_is_asked_about(qtbot, tmp_path, monkeypatch):
    empty = tmp_path / "empty.fewshot"
    empty.touch()
    answers = [QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes]
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or answers.pop(0))
    other = tmp_path / "other.fewshot"
    Project.create(other).close()
    window = open_project_window(qtbot, tmp_path, other)
    window.open_project(str(empty))
    qtbot.waitUntil(lambda: len(asked) == 1, timeout=WAIT)
    assert "empty file" in asked[0] and empty.stat().st_size == 0
    assert Path(window.project.path) == other  # "No": nothing changed
    window.open_project(str(empty))
    qtbot.waitUntil(lambda: Path(window.project.path) == empty, timeout=WAIT)
    assert empty.stat().st_size > 0
    window.close()


def test_the_first_examples_choose_the_model_unless_the_person_did(qtbot, window, tmp_path):
    window.new_project(str(tmp_path / "p.fewshot"))
    qtbot.waitUntil(lambda: window.project is not None, timeout=WAIT)
    window.add_class("pets")
    qtbot.waitUntil(lambda: len(window.classes) == 1, timeout=WAIT)
    photo = tmp_path / "pet.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(photo)
    window.add_examples(window.classes[0].id, [str(photo)], [])
    wait_idle(qtbot, window)
    assert window.model_spec == "photos" and window.worker.context.model.name == "photos"
    assert "Labeling with" in window.results_page.model_note.text()

    # The person picks omniglot for this project: more photos do not switch it back.
    window.set_model("omniglot")
    qtbot.waitUntil(lambda: window.worker.context.model.name == "omniglot", timeout=WAIT)
    window.add_examples(window.classes[0].id, [str(make_png(tmp_path / "x.png", 3, (200, 200)))], [])
    wait_idle(qtbot, window)
    assert window.model_spec == "omniglot"
