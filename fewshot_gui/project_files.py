"""Which project file is open: new, open, a folder of images, a folder of example folders,
close, and the recent list.

Opening happens in the engine worker (it reads and may migrate the file); when it is
done, :attr:`ProjectFiles.opened` says which project and which model it was last
labeled with, and the window shows it.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QSettings, Signal
from PySide6.QtWidgets import QFileDialog, QMenu, QMessageBox, QWidget

from fewshot_gui import jobs
from fewshot_gui.folders import last_folder, remember_folder

PROJECT_FILTER = "Few-shot projects (*.fewshot)"
MAX_RECENT = 8


class ProjectFiles(QObject):
    opened = Signal(object, object)  # the project, the model spec it was last labeled with (or None)
    recent_changed = Signal(list)  # recent project paths that still exist, newest first

    def __init__(self, settings: QSettings, submit: Callable[..., int], dialog_parent: QWidget, parent=None):
        super().__init__(parent)
        self.settings, self.submit, self.dialog_parent = settings, submit, dialog_parent

    def ask_new_path(self, title: str, suggested: Path) -> str | None:
        path, _ = QFileDialog.getSaveFileName(self.dialog_parent, title, str(suggested), PROJECT_FILTER)
        if not path:
            return None
        remember_folder(self.settings, "projects", path)
        if not path.lower().endswith(".fewshot"):
            path += ".fewshot"
        Path(path).unlink(missing_ok=True)  # the dialog already asked before replacing it
        return path

    def new_project(self, path: str | None = None) -> None:
        if path is None:
            path = self.ask_new_path("New project", Path(last_folder(self.settings, "projects")) / "labels.fewshot")
            if path is None:
                return
        self.open(path, create=True)

    def open_project(self, path: str | None = None) -> None:
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self.dialog_parent, "Open project",
                                                  last_folder(self.settings, "projects"), PROJECT_FILTER)
            if not path:
                return
            remember_folder(self.settings, "projects", path)
        self.open(path, create=False)

    def open_folder(self, folder: str | None, label: Callable[[str], None], use_classes: Callable[[str], None],
                    project_path: str | None = None, as_classes: bool | None = None) -> None:
        """A new project for a folder of images. It asks where the project goes (beside the
        folder by default) and, when the folder has sub-folders of images, whether those
        are classes (their images become examples, ``use_classes(folder)``) or images to
        label (``label(folder)``). ``project_path``/``as_classes`` given: no questions."""
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self.dialog_parent, "Folder of images to label",
                                                      last_folder(self.settings, "images"))
            if not folder:
                return
        folder = str(Path(folder).resolve())
        remember_folder(self.settings, "images", folder)
        if as_classes is not None:
            self._open_folder_as(folder, label, use_classes, project_path, as_classes)
            return

        def listed(subfolders: list[str]) -> None:
            names = [Path(d).name for d in subfolders]
            use = bool(names) and QMessageBox.question(
                self.dialog_parent, "Sub-folders as classes?",
                f"{Path(folder).name} has {len(names)} sub-folder{'s' if len(names) != 1 else ''} of images "
                f"({', '.join(names[:5])}{' ...' if len(names) > 5 else ''}).\n\n"
                "Use them as classes? Their images become each class's examples. (No: label all of them.)"
            ) == QMessageBox.StandardButton.Yes
            self._open_folder_as(folder, label, use_classes, project_path, use)

        # Listing the folder reads the disk: in the worker, between the batches of a run.
        self.submit("Looking at the folder", lambda ctx, h: jobs.class_folders(ctx, h, folder), quick=True,
                    done=listed)

    def _open_folder_as(self, folder: str, label: Callable[[str], None], use_classes: Callable[[str], None],
                        project_path: str | None, as_classes: bool) -> None:
        if project_path is None:
            where = Path(folder)
            project_path = self.ask_new_path("Where the project goes", where.parent / f"{where.name}.fewshot")
            if project_path is None:
                return
        then = use_classes if as_classes else label
        self.open(project_path, create=not Path(project_path).exists(), then=lambda: then(folder))

    def new_from_examples(self, use_classes: Callable[[str], None], folder: str | None = None,
                          project_path: str | None = None) -> None:
        """A new project from a folder with one sub-folder of examples per class."""
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self.dialog_parent, "Folder with one sub-folder per class",
                                                      last_folder(self.settings, "examples"))
            if not folder:
                return
        remember_folder(self.settings, "examples", folder)
        if project_path is None:
            where = Path(folder)
            project_path = self.ask_new_path("Where the project goes", where.parent / f"{where.name}.fewshot")
            if project_path is None:
                return
        self.open(project_path, create=not Path(project_path).exists(), then=lambda: use_classes(folder))

    def open(self, path: str, create: bool, then: Callable[[], None] | None = None, use_empty: bool = False) -> None:
        def done(result: tuple[Any, str | None]) -> None:
            project, model_spec = result
            if project is None:  # an empty file: ask before making it a project
                answer = QMessageBox.question(
                    self.dialog_parent, "Empty file",
                    f"{path} is an empty file (0 bytes), not a project.\n\nStart a new project in it?")
                if answer == QMessageBox.StandardButton.Yes:
                    self.open(path, create=False, then=then, use_empty=True)
                return
            self.remember(str(project.path))
            self.opened.emit(project, model_spec)
            if then is not None:
                then()

        self.submit("Opening project", lambda ctx, h: jobs.open_project(ctx, h, path, create, use_empty), done=done,
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
