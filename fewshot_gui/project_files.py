"""Which project file is open: new, open, a folder of images, close, and the recent list.

Opening happens in the engine worker (it reads and may migrate the file); when it is
done, :attr:`ProjectFiles.opened` says which project and which model it was last
labeled with, and the window shows it.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QSettings, QStandardPaths, Signal
from PySide6.QtWidgets import QFileDialog, QMenu, QWidget

from fewshot_gui import jobs

PROJECT_FILTER = "Few-shot projects (*.fewshot)"
MAX_RECENT = 8


class ProjectFiles(QObject):
    opened = Signal(object, object)  # the project, the model spec it was last labeled with (or None)
    recent_changed = Signal(list)  # recent project paths that still exist, newest first

    def __init__(self, settings: QSettings, submit: Callable[..., int], dialog_parent: QWidget, parent=None):
        super().__init__(parent)
        self.settings, self.submit, self.dialog_parent = settings, submit, dialog_parent

    def new_project(self, path: str | None = None) -> None:
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self.dialog_parent, "New project",
                                                  str(Path.home() / "labels.fewshot"), PROJECT_FILTER)
            if not path:
                return
            Path(path).unlink(missing_ok=True)  # the dialog already asked before replacing it
        self.open(path, create=True)

    def open_project(self, path: str | None = None) -> None:
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self.dialog_parent, "Open project", str(Path.home()),
                                                  PROJECT_FILTER)
            if not path:
                return
        self.open(path, create=False)

    def open_folder(self, folder: str | None, then: Callable[[str], None]) -> None:
        """A project for a folder straight away, kept in the app's data folder so the
        image folder itself is never written to; opening the same folder again reopens it.
        ``then(folder)`` runs once the project is open."""
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self.dialog_parent, "Folder of images to label")
            if not folder:
                return
        folder = str(Path(folder).resolve())
        base = Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)) / "projects"
        base.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha1(folder.encode()).hexdigest()[:8]
        path = base / f"{Path(folder).name or 'images'}-{digest}.fewshot"
        self.open(str(path), create=not path.exists(), then=lambda: then(folder))

    def open(self, path: str, create: bool, then: Callable[[], None] | None = None) -> None:
        def done(result: tuple[Any, str | None]) -> None:
            project, model_spec = result
            self.remember(str(project.path))
            self.opened.emit(project, model_spec)
            if then is not None:
                then()

        self.submit("Opening project", lambda ctx, h: jobs.open_project(ctx, h, path, create), done=done,
                    kind="project")

    def close(self) -> None:
        self.submit("Closing project", jobs.close_project, kind="project")

    def recent_projects(self) -> list[str]:
        value = self.settings.value("recent", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def remember(self, path: str) -> None:
        recent = [path] + [p for p in self.recent_projects() if p != path]
        self.settings.setValue("recent", recent[:MAX_RECENT])
        self.announce_recent()

    def announce_recent(self) -> None:
        self.recent_changed.emit([p for p in self.recent_projects() if Path(p).exists()])

    def fill_menu(self, menu: QMenu, recent: list[str]) -> None:
        menu.clear()
        for p in recent:
            menu.addAction(p, lambda p=p: self.open_project(p))
        menu.setEnabled(bool(recent))
