"""The detail pane's label history: review images with keys, undo one decision, then
select each image in the grid and read what happened to it, newest first, in words."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gui_helpers import WAIT, open_project_window, wait_idle
from PIL import Image
from PySide6.QtCore import Qt

from engine.labeling import PredictionRow, Project
from fewshot_gui.main_window import MainWindow


@pytest.fixture
def project_path(tmp_path) -> Path:
    """Six images, classes cat and dog, the model predicting cat for each."""
    path = tmp_path / "pets.fewshot"
    files = []
    for k in range(6):
        pixels = np.random.default_rng(k).integers(0, 255, size=(40, 40, 3), dtype=np.uint8)
        files.append(tmp_path / "img" / f"pet{k}.png")
        files[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(files[-1])
    with Project.create(path) as p:
        cat, dog = p.add_class("cat"), p.add_class("dog")
        ids = p.add_images(files).added
        model = p.set_model("omniglot", {})  # the window's model: opening loads nothing
        p.write_predictions(model, [
            PredictionRow(i, [0.55 + 0.05 * k, 0.45 - 0.05 * k], [cat, dog], 0.7 - 0.1 * k, 0.1 * k)
            for k, i in enumerate(ids)])
    return path


def open_window(qtbot, tmp_path, project_path) -> MainWindow:
    # No model is loaded: these decisions are confirmations, which need none.
    window = open_project_window(qtbot, tmp_path, project_path, size=(1400, 880))
    wait_idle(qtbot, window)
    return window


def select(qtbot, window: MainWindow, image_id: int) -> str:
    """Make ``image_id`` the grid's current tile; returns the detail pane's history text."""
    model = window.results_model
    qtbot.waitUntil(lambda: all(model.record(r) is not None for r in range(model.rowCount())), timeout=WAIT)
    row = next(r for r in range(model.rowCount()) if model.record(r).id == image_id)
    window.grid.setCurrentIndex(model.index(row))
    qtbot.waitUntil(lambda: window.detail.record is not None and window.detail.record.id == image_id
                    and window.detail.history.text() != "", timeout=WAIT)
    return window.detail.history.text()


def test_history_of_reviewed_images_in_the_detail_pane(qtbot, tmp_path, project_path):
    window = open_window(qtbot, tmp_path, project_path)
    window.set_review_mode(True)
    review = window.review
    qtbot.waitUntil(lambda: len(review.order) == 6, timeout=WAIT)
    first, second, third = review.order[:3]
    assert window.project.image(first).predicted_class_id == window.classes[0].id  # cat
    qtbot.keyClick(review, Qt.Key.Key_Return)  # accept "cat"
    qtbot.keyClick(review, Qt.Key.Key_X)  # none of these
    qtbot.keyClick(review, Qt.Key.Key_1)  # cat, as predicted
    wait_idle(qtbot, window)
    qtbot.keyClick(review, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # undo the "1"
    wait_idle(qtbot, window)
    qtbot.keyClick(review, Qt.Key.Key_Escape)
    wait_idle(qtbot, window)

    text = select(qtbot, window, first)
    assert text.startswith("Prediction <b>cat</b> accepted by you, "), text
    assert "<br>" not in text  # one event
    assert window.detail.history_title.isVisible()
    text = select(qtbot, window, second)
    assert text.startswith("Marked <i>none of these classes</i> by you, "), text
    lines = select(qtbot, window, third).split("<br>")
    assert lines[0].startswith("Undone: prediction <b>cat</b> accepted, ") and \
        lines[1].startswith("Prediction <b>cat</b> accepted by you, "), lines  # newest first

    # The pane follows a change made while the image is selected: label it cat again from the grid.
    window.grid.setFocus()
    qtbot.keyClick(window.grid, Qt.Key.Key_1)
    wait_idle(qtbot, window)
    qtbot.waitUntil(lambda: window.detail.history.text().count("<br>") == 2, timeout=WAIT)
    assert window.detail.history.text().startswith("Prediction <b>cat</b> accepted by you, ")
    assert not hasattr(window, "last_error"), window.last_error
    window.grab().save(str(tmp_path / "history.png"))
    untouched = next(i for i in window.project.query(limit=10) if i.id not in (first, second, third)).id
    assert select(qtbot, window, untouched).startswith("<i>Nobody has labelled")
    window.close()
