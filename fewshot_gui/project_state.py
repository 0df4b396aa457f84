"""The open project as the window knows it: its classes, examples, counts and undo text.

All reads run in the project-reader thread (``fetch``); what comes back is announced
with signals, and every part that shows some of it listens. Reads asked for while one
is on its way are merged into one more read after it, so a burst of edits costs two
reads, not one per edit.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

log = logging.getLogger(__name__)

EXAMPLE_PATHS_SHOWN = 4  # as many as a class card shows: with its example count, they fit the panel's width
Fetch = Callable[[Callable[[], Any], Callable[[Any], None], Callable[[str], None] | None], None]


def read_counts(project: Any, filters: dict | None = None) -> dict[str, int]:
    """Runs in the reader thread: the numbers for the status bar and the grid header
    (``filters``: the grid's, as ``Project.count`` keywords)."""
    n = {s: project.count(status=s) for s in ("predicted", "confirmed", "error", "unlabeled")}
    n["total"] = project.count()
    n["shown"] = project.count(**(filters or {}))
    current = project.current_model()
    # Predictions of a method that adapts the backbone, shown from cached features until
    # every image has been through the adapted network (engine.labeling.pixel_labeling).
    n["provisional"] = int(bool(current and current[2].get("provisional")))
    return n


def read_snapshot(project: Any, filters: dict | None) -> dict:
    """Runs in the reader thread: what the panels show besides the grid."""
    examples: dict[int, list[str]] = {}
    for image_id, cid in project.examples():
        paths = examples.setdefault(cid, [])
        # Paths only for the thumbnails shown; the rest are counted.
        paths.append(project.image(image_id).path if len(paths) < EXAMPLE_PATHS_SHOWN else "")
    return {"classes": project.classes(), "examples": examples, "counts": read_counts(project, filters),
            "undo": project.undo_text(), "redo": project.redo_text()}


class ProjectState(QObject):
    """The main thread's view of the open project (see the module doc)."""

    project_changed = Signal(object)  # the project, or None when closed
    snapshot_changed = Signal(object)  # read_snapshot's dict, or None when closed
    counts_changed = Signal(object)  # read_counts's dict

    def __init__(self, fetch: Fetch, parent=None):
        super().__init__(parent)
        self.fetch = fetch
        self.project: Any = None
        self.classes: list[Any] = []
        self.examples: dict[int, list[str]] = {}
        self.counts: dict[str, int] = {}
        self.undo_text: str | None = None
        self.redo_text: str | None = None
        self._pending = False
        self._again: dict | None = None

    @property
    def has_examples(self) -> bool:
        return any(self.examples.values())

    def set_project(self, project: Any) -> None:
        self.project = project
        self.classes, self.examples, self.counts = [], {}, {}
        self.undo_text = self.redo_text = None
        self.project_changed.emit(project)

    def reload(self, filters: dict | None = None) -> None:
        """Read everything the panels show (``filters``: the grid's, for its count)."""
        project = self.project
        if project is None:
            self._apply(None, None)
            return
        if self._pending:
            self._again = dict(filters or {})
            return
        self._pending = True

        def done(snap: Any) -> None:
            self._pending = False
            if project is self.project:
                self._apply(project, snap)
            if self._again is not None:
                again, self._again = self._again, None
                self.reload(again)

        def failed(message: str) -> None:
            log.info("reload failed: %s", message)
            done(None)

        self.fetch(lambda: read_snapshot(project, filters), done, failed)

    def reload_counts(self, filters: dict | None = None) -> None:
        project = self.project
        if project is None:
            return

        def done(counts: Any) -> None:
            if project is self.project and counts is not None:
                self.counts = counts
                self.counts_changed.emit(counts)

        self.fetch(lambda: read_counts(project, filters), done, None)

    def _apply(self, project: Any, snap: dict | None) -> None:
        if snap is None:
            self.undo_text = self.redo_text = None
            self.snapshot_changed.emit(None)
            return
        self.classes, self.examples = snap["classes"], snap["examples"]
        self.undo_text, self.redo_text = snap["undo"], snap["redo"]
        self.counts = snap["counts"]
        self.snapshot_changed.emit(snap)
        self.counts_changed.emit(snap["counts"])
