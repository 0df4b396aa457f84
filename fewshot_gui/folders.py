"""The folder each kind of file dialog last used, remembered in QSettings.

Projects, examples, images to label, exports and models each keep their own, so
the dialog for a class's examples does not open where the last export went.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings

PURPOSES = ("projects", "examples", "images", "exports", "models")


def last_folder(settings: QSettings, purpose: str) -> str:
    """The folder to open a dialog in: the last one used for ``purpose`` if it still exists, else home."""
    value = settings.value(f"folders/{purpose}", "")
    path = Path(str(value)) if value else None
    return str(path) if path is not None and path.is_dir() else str(Path.home())


def remember_folder(settings: QSettings, purpose: str, chosen: str | Path) -> None:
    """Remember where a dialog for ``purpose`` ended (a chosen file's folder, or a chosen folder)."""
    if not chosen:
        return
    path = Path(chosen)
    folder = path if path.is_dir() else path.parent
    settings.setValue(f"folders/{purpose}", str(folder))
