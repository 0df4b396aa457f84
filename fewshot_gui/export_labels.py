"""File > Export > Labels as CSV, JSON or class folders: ask where, export in the worker, say where it went."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QFileDialog

from fewshot_gui import jobs
from fewshot_gui.folders import last_folder, remember_folder


def export_labels(window: Any, kind: str, path: str | None = None) -> None:
    """``path`` given skips the dialog (tests, scripts)."""
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

    def done(report: Any) -> None:
        window.notify(f"Exported to {path}")
        window.last_export = report

    window.submit(f"Exporting labels ({kind})", lambda ctx, h: jobs.export_labels(ctx, h, kind, path), done=done,
                  kind="export")
