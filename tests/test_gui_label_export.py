"""File > Export > Labels: CSV and class folders from the window, as a user does it (the
folder export asks which images go in), and what the window says afterwards. pytest-qt."""
from __future__ import annotations

import csv

from gui_helpers import WAIT, engine_window, label_characters, wait_idle
from PySide6.QtWidgets import QFileDialog, QMessageBox

from fewshot_gui.export_labels import export_labels


def test_labels_export_as_csv_and_as_class_folders(qtbot, tmp_path, monkeypatch):
    window = engine_window(qtbot, tmp_path / "gui.ini")
    try:
        label_characters(qtbot, window, tmp_path, "omniglot", 3, per_character=6, skip=40)
        project = window.project
        confirmed, predicted = project.count(status="confirmed"), project.count(status="predicted")
        assert confirmed == 3 and predicted == 15

        export_labels(window, "csv", str(tmp_path / "labels.csv"))
        wait_idle(qtbot, window)
        with (tmp_path / "labels.csv").open(newline="") as fh:
            assert len(list(csv.DictReader(fh))) == 18
        assert window.last_notice[0] == f"Exported the labels of 18 images to {tmp_path / 'labels.csv'}"

        # Interactively the folder export asks which images go in.
        out = tmp_path / "folders"
        monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(out))
        export_labels(window, "folders")
        box = next(w for w in window.findChildren(QMessageBox) if w.isVisible())
        assert "Which images" in box.text()
        qtbot.waitUntil(lambda: box.isVisible(), timeout=WAIT)
        next(b for b in box.buttons() if b.text() == "Confirmed only").click()
        wait_idle(qtbot, window)
        assert sum(1 for f in out.rglob("*.png")) == confirmed
        assert window.last_notice[0].startswith(f"Copied {confirmed} confirmed images into")

        export_labels(window, "folders", str(out), include_predictions=True)
        wait_idle(qtbot, window)
        assert sum(1 for f in out.rglob("*.png")) == confirmed + predicted
        text, details = window.last_notice
        assert text.startswith(f"Copied {predicted} confirmed and predicted images into")
        assert f"{confirmed} left alone" in text and details.count("\n") == confirmed - 1
    finally:
        window.close()
