"""The grid paints its tiles itself in one Python call (results_view.py): it must draw
exactly what QListView's own paint (one delegate call per tile) draws, selection and
current tile included, and rubber-band selection must keep working."""
from __future__ import annotations

import numpy as np
import pytest
from gui_helpers import WAIT, open_project_window, wait_idle
from PIL import Image
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication, QListView

from engine.labeling import PredictionRow, Project
from fewshot_gui.main_window import MainWindow
from fewshot_gui.results_view import ResultsView


@pytest.fixture
def window(qtbot, tmp_path) -> MainWindow:
    files = []
    for k in range(23):  # a last row that is not full
        pixels = np.random.default_rng(k).integers(0, 255, size=(30 + k, 50, 3), dtype=np.uint8)
        files.append(tmp_path / "img" / f"t{k:02d}.png")
        files[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(files[-1])
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    path = tmp_path / "grid.fewshot"
    with Project.create(path) as p:
        a, b = p.add_class("apple"), p.add_class("a class with a rather long name")
        ids = p.add_images([*files, tmp_path / "img" / "broken.png"]).added
        model = p.set_model("omniglot", {})
        p.write_predictions(model, [PredictionRow(i, [0.3 + 0.03 * k, 0.7 - 0.03 * k], [a, b], 0.6, 0.2)
                                    for k, i in enumerate(ids[:18])])
        p.set_label(ids[0], a)
        p.set_label(ids[1], None)
    w = open_project_window(qtbot, tmp_path, path)
    qtbot.waitUntil(lambda: w.results_model.rowCount() == 24, timeout=WAIT)
    w.sort_box.setCurrentIndex(w.sort_box.count() - 1)  # by name: a fixed order
    wait_idle(qtbot, w)
    model = w.results_model
    qtbot.waitUntil(lambda: all(model.record(r) is not None for r in range(24)), timeout=WAIT)
    qtbot.waitUntil(lambda: all(w.loader.pixmap(model.record(r).path, 112) is not None
                                or w.loader.failed(model.record(r).path) for r in range(24)), timeout=WAIT)
    return w


def grab(view) -> np.ndarray:
    image = view.viewport().grab().toImage().convertToFormat(QImage.Format.Format_RGBA8888)
    return np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.width(), 4).copy()


def test_one_call_paint_matches_qlistview(qtbot, window, monkeypatch):
    grid, model = window.grid, window.results_model
    selection = grid.selectionModel()
    for row in (2, 7, 8):
        selection.select(model.index(row), selection.SelectionFlag.Select)
    grid.setCurrentIndex(model.index(8))
    grid.setFocus()
    QApplication.processEvents()
    ours = grab(grid)
    monkeypatch.setattr(ResultsView, "paintEvent", lambda self, e: QListView.paintEvent(self, e))
    theirs = grab(grid)
    assert ours.shape == theirs.shape
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() == 0
    assert (ours[..., :3].std(axis=(0, 1)) > 10).all()  # tiles were painted at all

    # A partial repaint (one tile's rect) paints that tile the same way too.
    monkeypatch.undo()
    grid.viewport().repaint(grid.visualRect(model.index(7)))
    assert np.abs(grab(grid).astype(int) - theirs.astype(int)).max() == 0


def test_rubber_band_selection_still_works(qtbot, window):
    grid, model = window.grid, window.results_model
    grid.clearSelection()
    last = grid.visualRect(model.index(model.rowCount() - 1))
    start = QPoint(last.right() + 20, last.center().y())  # empty space after the last tile
    assert not grid.indexAt(start).isValid()
    end = grid.visualRect(model.index(model.rowCount() - 3)).center()
    qtbot.mousePress(grid.viewport(), Qt.MouseButton.LeftButton, pos=start)
    qtbot.mouseMove(grid.viewport(), QPoint((start.x() + end.x()) // 2, start.y()))
    qtbot.mouseMove(grid.viewport(), end)
    assert grid.state() == grid.State.DragSelectingState
    grid.viewport().repaint()  # painted by Qt's own paint while the band is shown
    qtbot.mouseRelease(grid.viewport(), Qt.MouseButton.LeftButton, pos=end)
    assert len(grid.selected_ids()) == 3
    assert not hasattr(window, "last_error")
