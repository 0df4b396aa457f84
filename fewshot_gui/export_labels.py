"""File > Export > Labels as CSV, JSON or class folders: ask where (and, for folders, which
images), export in the worker, say what went where."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from PySide6.QtWidgets import QFileDialog, QMessageBox

from fewshot_gui import jobs
from fewshot_gui.folders import last_folder, remember_folder


def export_labels(window: Any, kind: str, path: str | None = None, include_predictions: bool | None = None) -> None:
    """``path`` given skips the dialogs (tests, scripts): folders then take the confirmed
    images unless ``include_predictions``."""
    if window.project is None:
        return
    stem = Path(window.project.path).stem
    if path is None:
        start = last_folder(window.settings, "exports")
        if kind == "folders":
            path = QFileDialog.getExistingDirectory(window, "Folder to copy the images into, one folder per class",
                                                    start)
        else:
            path, _ = QFileDialog.getSaveFileName(window, f"Export labels as {kind.upper()}",
                                                  str(Path(start) / f"{stem}-labels.{kind}"),
                                                  f"{kind.upper()} (*.{kind})")
        if not path:
            return
        remember_folder(window.settings, "exports", path)
        if kind == "folders" and include_predictions is None:
            _ask_which(window, lambda include: export_labels(window, kind, path, include))
            return
    include = bool(include_predictions)

    def done(report: Any) -> None:
        window.last_export = report
        if kind != "folders":
            window.notify(f"Exported the labels of {report.written:,} images to {path}")
            return
        what = "confirmed and predicted" if include else "confirmed"
        text = (f"Copied {report.written:,} {what} image{'s' if report.written != 1 else ''} into {path}, "
                "a folder per class")
        if report.skipped:
            text += f"; {len(report.skipped):,} left alone (already there, or the source is gone: see details)"
        window.notify(text, "\n".join(f"{p}: {why}" for p, why in report.skipped[:200]))

    window.submit(f"Exporting labels ({kind})",
                  lambda ctx, h: jobs.export_labels(ctx, h, kind, path, include), done=done, kind="export")


def _ask_which(window: Any, then: Callable[[bool], None]) -> None:
    """Which images go into the class folders; window-modal, without a nested event loop."""
    box = QMessageBox(QMessageBox.Icon.Question, "Labels as class folders",
                      "Which images go into the class folders?", parent=window)
    box.setInformativeText("The images you confirmed, and also every predicted image in the folder of the "
                           "class the model gave it? Or only the images you confirmed?")
    both = box.addButton("Confirmed and predicted", QMessageBox.ButtonRole.AcceptRole)
    confirmed = box.addButton("Confirmed only", QMessageBox.ButtonRole.AcceptRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(confirmed)

    def chosen(_result: int) -> None:
        clicked = box.clickedButton()
        if clicked in (both, confirmed):
            then(clicked is both)
        box.deleteLater()

    box.finished.connect(chosen)
    box.open()
