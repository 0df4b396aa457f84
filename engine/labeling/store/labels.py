"""Human labels, examples and their undo: what people did, and each image's summary.

Invariant kept by every action: an example of class C is human-labelled C. So
``add_examples`` also confirms the images as C, ``remove_example`` removes that
label too, and labelling or clearing an example as something else stops it being
an example. All four are undoable; the four, their undo and redo, and deleting a
class also append to each image's :meth:`label_history`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from engine.errors import ProjectError
from engine.labeling.history import (
    ACCEPTED,
    CLEARED,
    EXAMPLE,
    LABEL,
    LABELLED,
    MADE_EXAMPLE,
    NONE_OF_THESE,
    REMOVED_EXAMPLE,
    Change,
    LabelEvent,
)
from engine.labeling.records import AddReport
from engine.labeling.store.base import locked
from engine.labeling.store.images import as_list
from engine.labeling.store.removal import REMOVED
from engine.labeling.store.status import SUMMARY_COLUMNS, status_sql


class LabelsPart:
    def add_examples(self, class_id: int, paths: Sequence[str | Path | int] | str | Path) -> AddReport:
        """Make images examples of a class (and confirm them as that class), as one
        undoable action. Items are files, folders (scanned recursively) or ids of images
        already in the project. In the report, ``added`` holds the image ids that became
        examples of the class, ``duplicates`` the items that already were (or repeat an
        earlier item), ``errors`` the unusable files."""
        self._check_open()
        with self._lock:
            self._require_class(class_id)
        items = as_list(paths)
        report = AddReport()
        file_items = [p for p in items if not isinstance(p, int) or isinstance(p, bool)]
        registered, report.skipped = self._register(file_items, True, None) if file_items else ([], [])
        candidates: list[tuple[str, int]] = []
        for f, image_id, _new in registered:
            if f.error is not None:
                report.errors.append((f.path, f.error))
            else:
                candidates.append((f.path, image_id))
        with self._lock:
            self._check_open()
            for image_id in (p for p in items if isinstance(p, int) and not isinstance(p, bool)):
                rec = self._image_row(image_id)
                if rec["error"] is not None:
                    report.errors.append((rec["path"], rec["error"]))
                else:
                    candidates.append((rec["path"], image_id))
            with self._tx():
                name = self._require_class(class_id)
                changes: list[Change] = []
                seen: set[int] = set()
                for path, image_id in candidates:
                    before = self._example_class(image_id)
                    if image_id in seen or before == class_id:
                        report.duplicates.append(path)
                        continue
                    seen.add(image_id)
                    changes.append(Change(EXAMPLE, image_id, before, class_id))
                    label = self._human_label(image_id)
                    if label != {"class": class_id}:
                        changes.append(Change(LABEL, image_id, label, {"class": class_id}))
                    report.added.append(image_id)
                self._apply_changes(changes, forward=True)
                n = len(report.added)
                self._history.record(f"add {n} example{'s' if n != 1 else ''} to {name}", changes,
                                     [(i, MADE_EXAMPLE, class_id) for i in report.added])
        return report

    @locked
    def remove_example(self, class_id: int, image_id: int) -> None:
        """Stop an image being an example of the class (and drop its label of that class). Undoable."""
        with self._tx():
            name = self._require_class(class_id)
            path = self._image_row(image_id)["path"]
            if self._example_class(image_id) != class_id:
                raise ProjectError(f"{Path(path).name} is not an example of {name}; nothing to remove")
            changes = [Change(EXAMPLE, image_id, class_id, None)]
            label = self._human_label(image_id)
            if label == {"class": class_id}:
                changes.append(Change(LABEL, image_id, label, None))
            self._apply_changes(changes, forward=True)
            self._history.record(f"remove example {Path(path).name} from {name}", changes,
                                 [(image_id, REMOVED_EXAMPLE, class_id)])

    @locked
    def examples(self) -> list[tuple[int, int]]:
        """(image_id, class_id) of the examples that can be used (no error), in class order."""
        return [(r[0], r[1]) for r in self._conn.execute(
            "SELECT e.image_id, e.class_id FROM examples e JOIN images i ON i.id = e.image_id "
            "JOIN classes c ON c.id = e.class_id WHERE i.error IS NULL ORDER BY c.ord, e.image_id")]


    @locked
    def set_label(self, image_id: int, class_id: int | None) -> None:
        """Confirm an image as a class, or as "none of these classes" (None). Undoable."""
        with self._tx():
            path = self._image_row(image_id)["path"]
            name = self._require_class(class_id) if class_id is not None else "none of these classes"
            changes = []
            before = self._human_label(image_id)
            if before != {"class": class_id}:
                changes.append(Change(LABEL, image_id, before, {"class": class_id}))
            example_of = self._example_class(image_id)
            if example_of is not None and example_of != class_id:
                changes.append(Change(EXAMPLE, image_id, example_of, None))
            self._apply_changes(changes, forward=True)
            self._history.record(f"label {Path(path).name} as {name}", changes,
                                 [(image_id, self._label_action(image_id, class_id), class_id)])

    @locked
    def clear_label(self, image_id: int) -> None:
        """Remove the human label (and example status); the model's label shows again. Undoable."""
        with self._tx():
            path = self._image_row(image_id)["path"]
            changes = []
            before = self._human_label(image_id)
            if before is not None:
                changes.append(Change(LABEL, image_id, before, None))
            example_of = self._example_class(image_id)
            if example_of is not None:
                changes.append(Change(EXAMPLE, image_id, example_of, None))
            self._apply_changes(changes, forward=True)
            self._history.record(f"clear label of {Path(path).name}", changes,
                                 [(image_id, CLEARED, before["class"] if before else None)])

    @locked
    def undo(self) -> str | None:
        """Undo the last label or example action; returns its description, or None."""
        return self._step(self._history.undo)

    @locked
    def redo(self) -> str | None:
        """Redo the last undone action; returns its description, or None."""
        return self._step(self._history.redo)

    def _step(self, step: Callable[[Any], tuple[str, list[Change]] | None]) -> str | None:
        with self._tx():
            done = step(self._apply)
            if done is not None:
                self._refresh({c.image_id for c in done[1]})
        return done[0] if done else None

    @locked
    def label_history(self, image_id: int) -> list[LabelEvent]:
        """What people did to the image (labels, examples, undo and redo), oldest first.
        Unlike the undo log it is never trimmed."""
        self._image_row(image_id)
        return self._history.events(image_id)

    def _label_action(self, image_id: int, class_id: int | None) -> str:
        if class_id is None:
            return NONE_OF_THESE
        row = self._conn.execute("SELECT class_id FROM predictions WHERE image_id = ?", (image_id,)).fetchone()
        return ACCEPTED if row is not None and row[0] == class_id else LABELLED

    @locked
    def undo_text(self) -> str | None:
        """What :meth:`undo` would undo (for the Edit menu), or None."""
        return self._history.next_undo()

    @locked
    def redo_text(self) -> str | None:
        return self._history.next_redo()

    def _apply_changes(self, changes: list[Change], forward: bool) -> None:
        for change in changes:
            self._apply(change, change.after if forward else change.before)
        self._refresh({c.image_id for c in changes})

    def _apply(self, change: Change, state: Any) -> None:
        if change.kind == LABEL:
            if state is None:
                self._conn.execute("DELETE FROM labels WHERE image_id = ? AND source = 'human'", (change.image_id,))
            else:
                self._conn.execute(
                    "INSERT INTO labels(image_id, class_id, source, time) VALUES (?, ?, 'human', ?) "
                    "ON CONFLICT(image_id) DO UPDATE SET class_id = excluded.class_id, source = 'human', "
                    "time = excluded.time", (change.image_id, state["class"], time.time()))
        elif change.kind == EXAMPLE:
            if state is None:
                self._conn.execute("DELETE FROM examples WHERE image_id = ?", (change.image_id,))
            else:
                self._conn.execute(
                    "INSERT INTO examples(image_id, class_id, added) VALUES (?, ?, ?) "
                    "ON CONFLICT(image_id) DO UPDATE SET class_id = excluded.class_id, added = excluded.added",
                    (change.image_id, state, time.time()))
        elif change.kind == REMOVED:
            self._apply_removal(change, state)
        else:
            raise ProjectError(f"the undo history holds an unknown step {change.kind!r}; "
                               "the project was written by another version of the app")

    def _human_label(self, image_id: int) -> dict | None:
        row = self._conn.execute("SELECT class_id FROM labels WHERE image_id = ? AND source = 'human'",
                                 (image_id,)).fetchone()
        return {"class": row[0]} if row else None

    def _example_class(self, image_id: int) -> int | None:
        row = self._conn.execute("SELECT class_id FROM examples WHERE image_id = ?", (image_id,)).fetchone()
        return row[0] if row else None

    def _refresh(self, image_ids: Iterable[int] | None) -> None:
        """Recompute the model labels and the images table's copy of each image's label,
        prediction and status from ``labels``, ``predictions`` and ``error``
        (None: every image). Call inside a transaction."""
        if image_ids is None:
            only = ""
        else:
            ids = list(image_ids)
            if not ids:
                return
            self._conn.execute("DELETE FROM temp.refresh_ids")
            self._conn.executemany("INSERT OR IGNORE INTO temp.refresh_ids(id) VALUES (?)", [(i,) for i in ids])
            only = "IN (SELECT id FROM temp.refresh_ids)"
        self._touch(None if image_ids is None else ids)
        c = self._conn
        c.execute(f"DELETE FROM labels WHERE source = 'model' {f'AND image_id {only}' if only else ''}")
        c.execute("INSERT INTO labels(image_id, class_id, source, time) "
                  "SELECT p.image_id, p.class_id, 'model', p.time "
                  "FROM predictions p JOIN images i ON i.id = p.image_id "
                  f"WHERE i.error IS NULL {f'AND p.image_id {only}' if only else ''} "
                  "AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.image_id = p.image_id)")
        summary = ", ".join(SUMMARY_COLUMNS)
        status = status_sql(
            error="error",
            human="EXISTS (SELECT 1 FROM labels WHERE image_id = images.id AND source = 'human')",
            predicted="EXISTS (SELECT 1 FROM predictions WHERE image_id = images.id)")
        c.execute(
            "UPDATE images SET "
            "(label_class_id, label_source) = (SELECT class_id, source FROM labels WHERE image_id = images.id), "
            f"(predicted_class_id, {summary}) = (SELECT class_id, {summary} FROM predictions "
            " WHERE image_id = images.id), "
            f"status = {status} {f'WHERE id {only}' if only else ''}")
        if only:
            c.execute("DELETE FROM temp.refresh_ids")

