"""File > Export Model… on a project labeled in the window with the bundled omniglot model:
the save dialog's answer (an .onnx file, or a bundle zip) goes to the engine's export in
the worker, the progress area shows the job, and the file carries the project's classes.
A class without examples gives the engine's message, and nothing is written."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import onnx
import pytest
from gui_helpers import WAIT, engine_window, wait_idle
from labeling_data import extract_omniglot
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QFileDialog

from fewshot_gui.export_model import BUNDLE_FILTER, ONNX_FILTER, parity_text
from fewshot_gui.main_window import MainWindow

EXPORT_WAIT = 120_000  # adapting, the dynamo export and the parity check, on two shared cores


@pytest.fixture
def window(qtbot, tmp_path):
    w = engine_window(qtbot, tmp_path / "gui.ini")
    yield w
    w.close()


def labeled_project(qtbot, window: MainWindow, root: Path) -> dict[str, list[Path]]:
    """Two Omniglot characters as classes (3 examples each), the rest of their drawings labeled."""
    chars = extract_omniglot(root / "omniglot", 2, per_character=8, skip=40)
    assert not window.act_export_model.isEnabled()  # no project yet
    window.new_project(str(root / "p.fewshot"))
    qtbot.waitUntil(lambda: window.project is not None, timeout=WAIT)
    for key in chars:
        window.add_class(key.replace("/", "_"))
    qtbot.waitUntil(lambda: len(window.classes) == 2, timeout=WAIT)
    assert not window.act_export_model.isEnabled()  # classes, but no examples yet
    for cls, files in zip(window.classes, chars.values()):
        window.add_examples(cls.id, [str(f) for f in files[:3]], [])
        wait_idle(qtbot, window)
    rest = root / "to_label"
    for files in chars.values():
        for f in files[3:]:
            (rest / f.parent.name).mkdir(parents=True, exist_ok=True)
            (rest / f.parent.name / f.name).write_bytes(f.read_bytes())
    window.add_folder(str(rest))
    wait_idle(qtbot, window, timeout=EXPORT_WAIT)
    assert window.project.count(status="predicted") == 10
    return chars


def export_through_menu(qtbot, window: MainWindow, monkeypatch, answer: tuple[str, str]) -> list[tuple]:
    """Trigger File > Export Model… with the save dialog answering ``answer``; returns, for
    each long job that started, (name, progress text, export action enabled, Cancel enabled)."""
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: answer)
    seen: list[tuple] = []

    def look(_id: int, name: str, quick: bool) -> None:
        # After every slot of this signal has run: the state the person sees as the job starts.
        if not quick:
            QTimer.singleShot(0, lambda: seen.append((name, window.progress.text.text(),
                                                      window.act_export_model.isEnabled(),
                                                      window.progress.cancel.isEnabled())))

    window.worker.started_job.connect(look)
    assert window.act_export_model.isEnabled()
    window.act_export_model.trigger()
    wait_idle(qtbot, window, timeout=EXPORT_WAIT)
    window.worker.started_job.disconnect(look)
    return seen


def test_export_model_onnx_and_bundle(qtbot, window, tmp_path, monkeypatch):
    labeled_project(qtbot, window, tmp_path)
    names = [c.name for c in window.classes]

    out = tmp_path / "exports" / "chars.onnx"
    out.parent.mkdir()
    seen = export_through_menu(qtbot, window, monkeypatch, (str(out), ONNX_FILTER))
    # Busy in the progress area; no second export; Cancel offered (the export stops between its steps).
    assert [s for s in seen if s[0].startswith("Exporting model")] == [("Exporting model to chars.onnx",
                                                                        "Exporting model to chars.onnx", False, True)]
    assert window.progress.cancel.isEnabled()  # back for the jobs that can stop
    assert out.is_file()
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["class_names"]) == names
    assert meta["source_model"] == "omniglot"
    report = window.last_model_export
    text, details = window.last_notice
    assert text == f"Model exported to {out}: 2 classes, {parity_text(report.parity_max_abs_diff)}"
    assert report.parity_max_abs_diff < 1e-4 and "same answers as the app" in text
    assert "onnxruntime" in details and names[0] in details
    assert window.act_export_model.isEnabled()  # idle again

    # The bundle filter with a name lacking the suffix: the zip the engine writes.
    seen = export_through_menu(qtbot, window, monkeypatch, (str(tmp_path / "exports" / "chars-bundle"),
                                                             BUNDLE_FILTER))
    bundle = tmp_path / "exports" / "chars-bundle.zip"
    assert bundle.is_file(), sorted(p.name for p in bundle.parent.iterdir())
    with zipfile.ZipFile(bundle) as z:
        assert {"model.onnx", "labels.json", "README.txt"} <= set(z.namelist())
    assert window.last_notice[0].startswith(f"Bundle exported to {bundle}: 2 classes")

    # The dialog returns an existing file only after the person agreed to replace it.
    before = out.stat().st_mtime_ns
    export_through_menu(qtbot, window, monkeypatch, (str(out), ONNX_FILTER))
    assert out.stat().st_mtime_ns != before and window.last_notice[0].startswith(f"Model exported to {out}")


def test_export_model_class_without_examples_shows_the_engines_message(qtbot, window, tmp_path, monkeypatch):
    labeled_project(qtbot, window, tmp_path)
    window.add_class("nothing yet")
    qtbot.waitUntil(lambda: len(window.classes) == 3, timeout=WAIT)
    out = tmp_path / "m.onnx"
    export_through_menu(qtbot, window, monkeypatch, (str(out), ONNX_FILTER))
    assert "'nothing yet' has no example images" in window.last_error
    assert window.statusBar().currentMessage() == window.last_error
    assert not out.exists() and not any(p.name.startswith(".m.onnx") for p in tmp_path.iterdir())


def test_parity_text():
    # Plain words (issue 12): the number stays in the details.
    assert parity_text(3.2e-11) == "checked: it gives the same answers as the app"
    assert parity_text(0.0) == "checked: it gives the same answers as the app"
    assert parity_text(0.02) == "checked: its probabilities differ from the app's by at most 2.0%"
