"""After a correction the grid and the detail pane show the refreshed predictions before
the project file holds them; the file catches up when the write lands, and a write that
fails leaves the window showing what the file holds."""
from __future__ import annotations

import threading

from gui_helpers import WAIT, wait_idle
from PySide6.QtCore import QSettings, Qt

import engine.labeling.labeler as labeler_mod
from tests.test_fresh_predictions import project_with_cached_embeddings


def open_window(qtbot, tmp_path, path):
    from fewshot_gui.main_window import MainWindow
    window = MainWindow(QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    window.resize(1200, 800)
    window.show()
    qtbot.waitUntil(lambda: window.engine_ready and window.worker.context.model is not None, timeout=WAIT)
    window.open_project(str(path))
    qtbot.waitUntil(lambda: window.project is not None and len(window.classes) == 3, timeout=WAIT)
    wait_idle(qtbot, window)
    return window


def correct(qtbot, window, row: int) -> tuple[int, int]:
    """Select the tile at ``row`` and press the number of a class the model did not predict."""
    model, grid = window.results_model, window.grid
    target = model.record(row)
    other = next(k for k, c in enumerate(window.classes) if c.id != target.predicted_class_id)
    grid.setFocus()
    grid.setCurrentIndex(model.index(row))
    qtbot.waitUntil(lambda: window.detail.record is not None and window.detail.record.id == target.id, timeout=WAIT)
    qtbot.keyClick(grid, Qt.Key(Qt.Key.Key_1 + other))
    return target.id, window.classes[other].id


def test_the_refresh_shows_before_it_is_written(qtbot, tmp_path, monkeypatch):
    window = open_window(qtbot, tmp_path, project_with_cached_embeddings(tmp_path))
    release, writing = threading.Event(), threading.Event()
    real_write = labeler_mod.write_arrays

    def slow_write(*args, **kwargs):  # the write of a large project, held until the test looks
        writing.set()
        assert release.wait(60)
        return real_write(*args, **kwargs)
    monkeypatch.setattr(labeler_mod, "write_arrays", slow_write)
    shown = [window.results_model.record(r) for r in range(8)]
    image_id, class_id = correct(qtbot, window, 3)
    qtbot.waitUntil(lambda: writing.is_set() and window.fresh.fresh is not None, timeout=WAIT)
    qtbot.wait(50)
    project = window.project
    on_screen = [window.results_model.record(r) for r in range(8)]
    stored = [project.image(r.id) for r in on_screen]
    # The person's label is in the file already; the predictions on screen are not yet.
    assert project.image(image_id).label_class_id == class_id and project.image(image_id).label_source == "human"
    assert on_screen != stored and on_screen != shown
    assert on_screen == [window.fresh.patch(r) for r in stored]
    assert window.detail.record == window.fresh.patch(project.image(window.detail.record.id))
    release.set()
    wait_idle(qtbot, window)
    assert window.fresh.fresh is None
    # Written: the file holds what was shown, and the window shows the file.
    assert [window.results_model.record(r) for r in range(8)] == [project.image(r.id) for r in
                                                                 (window.results_model.record(k) for k in range(8))]
    assert [project.image(r.id) for r in on_screen] == on_screen


def test_a_failed_write_shows_what_the_file_holds(qtbot, tmp_path, monkeypatch):
    window = open_window(qtbot, tmp_path, project_with_cached_embeddings(tmp_path))
    from engine.errors import ProjectError

    def failing_write(*args, **kwargs):
        raise ProjectError("the disk is full: free some space and run again")
    monkeypatch.setattr(labeler_mod, "write_arrays", failing_write)
    correct(qtbot, window, 3)
    qtbot.waitUntil(lambda: "disk is full" in window.statusBar().currentMessage(), timeout=WAIT)
    wait_idle(qtbot, window)
    assert window.fresh.fresh is None
    records = [window.results_model.record(r) for r in range(8)]
    assert records == [window.project.image(r.id) for r in records]
    assert window.detail.record == window.project.image(window.detail.record.id)


def test_predictions_a_stop_left_behind_are_refreshed_on_opening(qtbot, tmp_path):
    """The app stopped after saving a correction and before writing the refresh: opening the
    project finds its predictions adapted on other examples, and refreshes them."""
    from engine.labeling.store import Project
    path = project_with_cached_embeddings(tmp_path)
    with Project.open(path) as p:
        recs = list(p.iter_images())
        p.add_examples(p.classes()[1].id, [recs[20].id])  # what set_labels commits first
        before = {r.id: r for r in p.iter_images()}
        adapted_on = p.current_model()[2]["adapted_on"]
    window = open_window(qtbot, tmp_path, path)
    qtbot.waitUntil(lambda: window.project.current_model()[2]["adapted_on"] != adapted_on, timeout=WAIT)
    wait_idle(qtbot, window)
    after = {r.id: r for r in window.project.iter_images()}
    assert sum(before[i] != after[i] for i in before) > len(before) // 2
    # Opened again, nothing is stale: no refresh runs.
    from fewshot_gui import jobs
    assert jobs.stale_predictions(window.worker.context, None) is False
