"""The labeling project: one SQLite file (layout and reasons in ``schema.py``).

Every user action is one short transaction committed before the call returns, in
WAL mode with ``synchronous=FULL``: killing the app, or a power cut, loses nothing
a user did. Only one process may have a project open (``lock.py``). Within the
process a :class:`Project` may be shared between the GUI thread and the worker
thread: each call holds a re-entrant lock, and scanning (the one slow call) takes
it only while writing each chunk of results.

Invariant kept by every action: an example of class C is human-labelled C. So
``add_examples`` also confirms the images as C, ``remove_example`` removes that
label too, and labelling or clearing an example as something else stops it being
an example. All four are undoable; class operations are not (deleting a class
clears the undo history, since older steps refer to it). The four, their undo and
redo, and deleting a class also append to each image's :meth:`Project.label_history`.
"""
from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import re
import sqlite3
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from engine.errors import ProjectError
from engine.labeling import schema
from engine.labeling.history import (ACCEPTED, CLASS_DELETED, CLEARED, EXAMPLE, LABEL, LABELLED, MADE_EXAMPLE,
                                     NONE_OF_THESE, REMOVED_EXAMPLE, Change, History, LabelEvent)
from engine.labeling.lock import ProjectLock
from engine.labeling.records import AddReport, ClassInfo, ImageRecord, PredictionRow
from engine.labeling.scan import ProgressFn, ScannedFile, collect, probe_all
from engine.labeling.sort_index import SortIndex

log = logging.getLogger(__name__)

SUFFIX = ".fewshot"
# Tableau 10: distinct on screen and for the common colour-vision deficiencies.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
           "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
_REGISTER_CHUNK = 256  # scanned files per transaction: a kill mid-scan keeps what is done
_IN_CHUNK = 500  # ids per "IN (...)" list, well under SQLite's bound-parameter limit
_IMAGE_COLUMNS = ("id, path, hash, width, height, status, error, label_class_id, label_source, "
                  "predicted_class_id, confidence, entropy, margin, mutual_info, ood_score")


def _locked(method):
    """Run a public method under the project's lock, on an open project."""
    @functools.wraps(method)
    def wrapper(self: "Project", *args, **kwargs):
        with self._lock:
            self._check_open()
            return method(self, *args, **kwargs)
    return wrapper


def _with_suffix(path: Path) -> Path:
    return path if path.suffix.lower() == SUFFIX else path.with_name(path.name + SUFFIX)


class Project:
    """An open labeling project. Use :meth:`create` or :meth:`open`, and close it
    (or use it as a context manager) to let another process open it."""

    def __init__(self, path: Path, conn: sqlite3.Connection, file_lock: ProjectLock):
        self.path = path
        self._conn = conn
        self._file_lock = file_lock
        self._lock = threading.RLock()
        self._history = History(conn)
        self._sort_index = SortIndex()
        self._touched: set[int] = set()  # images the open transaction changed
        self._touched_all = False
        self._closed = False

    # ---------------------------------------------------------------- open / close

    @classmethod
    def create(cls, path: str | Path) -> "Project":
        """Create a new project file (``.fewshot`` is appended when missing)."""
        path = _with_suffix(Path(path)).absolute()
        if path.exists():
            raise ProjectError(f"{path} already exists; open it instead, or choose another name")
        if not path.parent.is_dir():
            raise ProjectError(f"folder {path.parent} does not exist; create it first or choose another place")
        return cls._open(path, new=True)

    @classmethod
    def open(cls, path: str | Path, create: bool = False) -> "Project":
        """Open a project; with ``create``, make it when it does not exist yet.
        Raises :class:`ProjectLockedError` when another process has it open."""
        path = Path(path).absolute()
        if not path.exists():
            if _with_suffix(path).exists():
                path = _with_suffix(path)
            elif create:
                return cls.create(path)
            else:
                raise ProjectError(f"no project at {path}; check the path, or create a new project")
        if path.is_dir():
            raise ProjectError(f"{path} is a folder; give the project's .fewshot file")
        return cls._open(path, new=False)

    @classmethod
    def _open(cls, path: Path, new: bool) -> "Project":
        file_lock = ProjectLock.acquire(path)
        try:
            if new and path.exists():  # another process created it while we checked
                raise ProjectError(f"{path} already exists; open it instead, or choose another name")
            conn = _connect(path)
            try:
                schema.check_and_migrate(conn, path)
                conn.execute("CREATE TEMP TABLE refresh_ids (id INTEGER PRIMARY KEY)")
            except sqlite3.Error as e:
                conn.close()
                raise ProjectError(f"cannot open {path} ({e}); check that the file and its folder are writable")
            except BaseException:
                conn.close()
                raise
        except BaseException:
            file_lock.release()
            raise
        log.info("%s project %s", "created" if new else "opened", path)
        project = cls(path, conn, file_lock)
        project._sort_index.warm_up(path)
        return project

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._sort_index.close()
                self._conn.close()  # the last connection checkpoints and removes the WAL file
            finally:
                self._file_lock.release()

    def __enter__(self) -> "Project":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Project({str(self.path)!r}{', closed' if self._closed else ''})"

    def _check_open(self) -> None:
        if self._closed:
            raise ProjectError(f"the project {self.path} is closed; open it again")

    @contextmanager
    def _tx(self, durable: bool = True) -> Iterator[None]:
        """A write transaction. ``durable``: the commit is flushed to the disk before
        returning (what a user did survives a power cut). Data the machine computed and
        can compute again (predictions, embeddings, scan results) skips that flush:
        it still survives the app being killed, and the flush costs more than the
        writing of a prediction batch on some disks."""
        if not durable:
            self._conn.execute("PRAGMA synchronous = NORMAL")
        # IMMEDIATE takes the write lock up front, so a transaction never fails half-way
        # for lack of it.
        self._conn.execute("BEGIN IMMEDIATE")
        self._touched, self._touched_all = set(), False
        try:
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")  # nothing changed: the sort index stays exact
                raise
            try:
                self._conn.execute("COMMIT")
            except BaseException:  # disk full or I/O error: whatever state results, re-read it
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                self._sort_index.invalidate()
                raise
            self._sort_index.update(self._conn, None if self._touched_all else self._touched)
        finally:
            if not durable:
                self._conn.execute("PRAGMA synchronous = FULL")

    def _touch(self, image_ids: Iterable[int] | None) -> None:
        """Note images whose status, class or uncertainties the open transaction changes."""
        if image_ids is None:
            self._touched_all = True
        else:
            self._touched.update(image_ids)

    # ---------------------------------------------------------------- classes

    @_locked
    def add_class(self, name: str, color: str | None = None) -> int:
        name = _check_class_name(name)
        with self._tx():
            self._check_name_free(name)
            color = _check_color(color) if color is not None else self._next_color()
            order = self._conn.execute("SELECT coalesce(max(ord) + 1, 0) FROM classes").fetchone()[0]
            cur = self._conn.execute("INSERT INTO classes(name, color, ord) VALUES (?, ?, ?)", (name, color, order))
        return int(cur.lastrowid)

    @_locked
    def rename_class(self, class_id: int, name: str) -> None:
        name = _check_class_name(name)
        with self._tx():
            self._require_class(class_id)
            self._check_name_free(name, except_id=class_id)
            self._conn.execute("UPDATE classes SET name = ? WHERE id = ?", (name, class_id))

    @_locked
    def set_class_color(self, class_id: int, color: str) -> None:
        with self._tx():
            self._require_class(class_id)
            self._conn.execute("UPDATE classes SET color = ? WHERE id = ?", (_check_color(color), class_id))

    @_locked
    def delete_class(self, class_id: int) -> None:
        """Delete a class with its examples, its human labels and the predictions that
        chose it (those images go back to unlabeled until the next labeling run).
        Not undoable; clears the undo history."""
        with self._tx():
            self._require_class(class_id)
            affected = [r[0] for r in self._conn.execute(
                "SELECT id FROM images WHERE label_class_id = ?1 OR predicted_class_id = ?1 "
                "UNION SELECT image_id FROM examples WHERE class_id = ?1", (class_id,))]
            # Only what a person did is history; losing the model's guess of the class is not.
            self._history.log_events([(r[0], CLASS_DELETED, class_id) for r in self._conn.execute(
                "SELECT image_id FROM labels WHERE class_id = ?1 AND source = 'human' "
                "UNION SELECT image_id FROM examples WHERE class_id = ?1", (class_id,))], "human", None)
            self._conn.execute("DELETE FROM examples WHERE class_id = ?", (class_id,))
            self._conn.execute("DELETE FROM labels WHERE class_id = ?", (class_id,))
            self._conn.execute("DELETE FROM predictions WHERE class_id = ?", (class_id,))
            self._conn.execute("DELETE FROM classes WHERE id = ?", (class_id,))
            self._conn.executemany("UPDATE classes SET ord = ? WHERE id = ?", [
                (i, cid) for i, (cid,) in enumerate(self._conn.execute("SELECT id FROM classes ORDER BY ord"))])
            self._history.clear()
            self._refresh(affected)

    @_locked
    def reorder_classes(self, class_ids: list[int]) -> None:
        """Set the display order; ``class_ids`` must name every class once."""
        with self._tx():
            current = {r[0] for r in self._conn.execute("SELECT id FROM classes")}
            if len(class_ids) != len(current) or set(class_ids) != current:
                raise ProjectError(f"a new class order must list each of the {len(current)} classes exactly once "
                                   f"(got ids {list(class_ids)}); reload the class list and try again")
            self._conn.executemany("UPDATE classes SET ord = ? WHERE id = ?",
                                   [(i, cid) for i, cid in enumerate(class_ids)])

    @_locked
    def classes(self) -> list[ClassInfo]:
        return [ClassInfo(*r) for r in self._conn.execute("SELECT id, name, color, ord FROM classes ORDER BY ord")]

    @_locked
    def class_by_name(self, name: str) -> ClassInfo | None:
        """The class called ``name`` (ignoring case), or None."""
        row = self._conn.execute("SELECT id, name, color, ord FROM classes WHERE name = ?", (name.strip(),)).fetchone()
        return ClassInfo(*row) if row else None

    def _require_class(self, class_id: int) -> str:
        row = self._conn.execute("SELECT name FROM classes WHERE id = ?", (class_id,)).fetchone()
        if row is None:
            raise ProjectError(f"no class with id {class_id} in this project (was it deleted?); reload the class list")
        return row[0]

    def _check_name_free(self, name: str, except_id: int | None = None) -> None:
        row = self._conn.execute("SELECT id, name FROM classes WHERE name = ?", (name,)).fetchone()
        if row is not None and row[0] != except_id:
            raise ProjectError(f"a class named {row[1]!r} already exists (names ignore upper/lower case); "
                               "choose another name")

    def _next_color(self) -> str:
        used = {r[0].lower() for r in self._conn.execute("SELECT color FROM classes")}
        for color in PALETTE:
            if color not in used:
                return color
        return PALETTE[len(used) % len(PALETTE)]

    # ---------------------------------------------------------------- images and examples

    def add_images(self, paths: Sequence[str | Path] | str | Path, recursive: bool = True,
                   progress: ProgressFn | None = None) -> AddReport:
        """Register image files and folders (see ``scan.py``). ``progress(done, total)``
        is called while files are read. Bad files are recorded with their reason."""
        self._check_open()
        report = AddReport()
        registered, report.skipped = self._register(_as_list(paths), recursive, progress)
        for f, image_id, new in registered:
            if not new:
                report.duplicates.append(f.path)
            elif f.error is not None:
                report.errors.append((f.path, f.error))
            else:
                report.added.append(image_id)
        log.info("added %d images (%d duplicates, %d bad, %d skipped)", len(report.added), len(report.duplicates),
                 len(report.errors), len(report.skipped))
        return report

    def add_examples(self, class_id: int, paths: Sequence[str | Path | int] | str | Path) -> AddReport:
        """Make images examples of a class (and confirm them as that class), as one
        undoable action. Items are files, folders (scanned recursively) or ids of images
        already in the project. In the report, ``added`` holds the image ids that became
        examples of the class, ``duplicates`` the items that already were (or repeat an
        earlier item), ``errors`` the unusable files."""
        self._check_open()
        with self._lock:
            self._require_class(class_id)
        items = _as_list(paths)
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

    @_locked
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

    @_locked
    def examples(self) -> list[tuple[int, int]]:
        """(image_id, class_id) of the examples that can be used (no error), in class order."""
        return [(r[0], r[1]) for r in self._conn.execute(
            "SELECT e.image_id, e.class_id FROM examples e JOIN images i ON i.id = e.image_id "
            "JOIN classes c ON c.id = e.class_id WHERE i.error IS NULL ORDER BY c.ord, e.image_id")]

    @_locked
    def image(self, image_id: int) -> ImageRecord:
        row = self._conn.execute(f"SELECT {_IMAGE_COLUMNS} FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise ProjectError(f"no image with id {image_id} in this project; reload the view")
        return self._records([row])[0]

    def _register(self, paths: list[str | Path], recursive: bool, progress: ProgressFn | None
                  ) -> tuple[list[tuple[ScannedFile, int, bool]], list[tuple[str, str]]]:
        """Scan ``paths`` and record every file found: (file, image id, newly recorded),
        plus the skipped entries. Reading files happens without the project lock."""
        found = collect(paths, recursive)
        out: list[tuple[ScannedFile, int, bool]] = []
        chunk: list[ScannedFile] = []
        for f in probe_all(found.paths, progress):
            chunk.append(f)
            if len(chunk) >= _REGISTER_CHUNK:
                out += self._register_chunk(chunk)
                chunk = []
        if chunk:
            out += self._register_chunk(chunk)
        return out, found.skipped

    @_locked
    def _register_chunk(self, files: list[ScannedFile]) -> list[tuple[ScannedFile, int, bool]]:
        out = []
        revived = []
        with self._tx(durable=False):
            for f in files:
                if f.hash is not None:
                    row = self._conn.execute("SELECT id FROM images WHERE hash = ?", (f.hash,)).fetchone()
                    if row is not None:
                        out.append((f, row[0], False))
                        continue
                # A file that was bad when last seen (same path) gets its record replaced,
                # so fixing a file and rescanning does not leave a stale error behind.
                row = self._conn.execute("SELECT id FROM images WHERE path = ? AND error IS NOT NULL",
                                         (f.path,)).fetchone()
                values = (f.path, f.hash, f.size, f.width, f.height, f.format, f.error, time.time())
                if row is not None:
                    self._conn.execute("UPDATE images SET path = ?, hash = ?, size = ?, width = ?, height = ?, "
                                       "format = ?, error = ?, added = ? WHERE id = ?", (*values, row[0]))
                    revived.append(row[0])
                    out.append((f, row[0], True))
                else:
                    cur = self._conn.execute(
                        "INSERT INTO images(path, hash, size, width, height, format, error, added, status) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (*values, "error" if f.error else "unlabeled"))
                    out.append((f, int(cur.lastrowid), True))
            self._touch(image_id for _, image_id, new in out if new)
            self._refresh(revived)
        return out

    # ---------------------------------------------------------------- labels and undo

    @_locked
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

    @_locked
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

    @_locked
    def undo(self) -> str | None:
        """Undo the last label or example action; returns its description, or None."""
        return self._step(self._history.undo)

    @_locked
    def redo(self) -> str | None:
        """Redo the last undone action; returns its description, or None."""
        return self._step(self._history.redo)

    def _step(self, step: Callable[[Any], tuple[str, list[Change]] | None]) -> str | None:
        with self._tx():
            done = step(self._apply)
            if done is not None:
                self._refresh({c.image_id for c in done[1]})
        return done[0] if done else None

    @_locked
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

    @_locked
    def undo_text(self) -> str | None:
        """What :meth:`undo` would undo (for the Edit menu), or None."""
        return self._history.next_undo()

    @_locked
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

    def _image_row(self, image_id: int) -> dict[str, str | None]:
        row = self._conn.execute("SELECT path, error FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise ProjectError(f"no image with id {image_id} in this project; reload the view")
        return {"path": row[0], "error": row[1]}

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
        c.execute(
            "UPDATE images SET "
            "(label_class_id, label_source) = (SELECT class_id, source FROM labels WHERE image_id = images.id), "
            "(predicted_class_id, confidence, entropy, margin, mutual_info, ood_score) = "
            "(SELECT class_id, confidence, entropy, margin, mutual_info, ood_score FROM predictions "
            " WHERE image_id = images.id), "
            "status = CASE WHEN error IS NOT NULL THEN 'error' "
            "WHEN EXISTS (SELECT 1 FROM labels WHERE image_id = images.id AND source = 'human') THEN 'confirmed' "
            "WHEN EXISTS (SELECT 1 FROM predictions WHERE image_id = images.id) THEN 'predicted' "
            f"ELSE 'unlabeled' END {f'WHERE id {only}' if only else ''}")
        if only:
            c.execute("DELETE FROM temp.refresh_ids")

    # ---------------------------------------------------------------- queries

    @_locked
    def query(self, *, class_id: int | None = None, status: str | None = None, sort: str = "name",
              descending: bool = False, offset: int = 0, limit: int = 100) -> list[ImageRecord]:
        """One page of images. Filters: ``class_id`` (current label, human or model) and
        ``status``. Sorts: name (path, ignoring case), confidence, entropy, margin,
        mutual_info, ood; ties in the sort direction by id. Images without a value for the
        sort key (no prediction, or a method without mutual information) come last
        either way, in the order added."""
        if sort not in schema.SORT_COLUMNS:
            raise ProjectError(f"unknown sort {sort!r}; use one of {', '.join(schema.SORT_COLUMNS)}")
        if offset < 0 or limit < 0:
            raise ProjectError(f"a page needs offset >= 0 and limit >= 0 (got {offset}, {limit})")
        where, params = self._filter(class_id, status)
        col = schema.SORT_COLUMNS[sort]
        if col != "path":
            ids = self._sort_index.order(self._conn, col, class_id, status, descending)[offset:offset + limit]
            return self._records_by_id(ids.tolist())
        d = "DESC" if descending else "ASC"
        # Name the index (schema._page_indexes): without statistics the planner may pick
        # one that matches the filter but not the order, and sort the whole filtered set.
        index = {(False, False): "images_by_name", (False, True): "images_status_name",
                 (True, False): "images_class_name", (True, True): "images_class_status_name"}[
            (class_id is not None, status is not None)]
        rows = self._conn.execute(
            f"SELECT {_IMAGE_COLUMNS} FROM images INDEXED BY {index} {_where(where)} "
            f"ORDER BY path COLLATE NOCASE {d}, id {d} LIMIT ? OFFSET ?", (*params, limit, offset)).fetchall()
        return self._records(rows)

    @_locked
    def count(self, *, class_id: int | None = None, status: str | None = None) -> int:
        where, params = self._filter(class_id, status)
        return self._conn.execute(f"SELECT count(*) FROM images {_where(where)}", params).fetchone()[0]

    def iter_images(self, chunk: int = 1000) -> Iterator[ImageRecord]:
        """Every image in the order added, read in chunks (for exports). Images changed
        while iterating show their state at the time their chunk was read."""
        last = 0
        while True:
            with self._lock:
                self._check_open()
                rows = self._conn.execute(f"SELECT {_IMAGE_COLUMNS} FROM images WHERE id > ? ORDER BY id LIMIT ?",
                                          (last, chunk)).fetchall()
                records = self._records(rows)
            if not records:
                return
            yield from records
            last = records[-1].id

    def _filter(self, class_id: int | None, status: str | None) -> tuple[list[str], list]:
        terms, params = [], []
        if status is not None:
            if status not in schema.STATUSES:
                raise ProjectError(f"unknown status {status!r}; use one of {', '.join(schema.STATUSES)}")
            terms.append("status = ?")
            params.append(status)
        if class_id is not None:
            terms.append("label_class_id = ?")
            params.append(class_id)
        return terms, params

    def _records_by_id(self, ids: list[int]) -> list[ImageRecord]:
        rows: dict[int, tuple] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            part = ids[start:start + _IN_CHUNK]
            rows.update((r[0], r) for r in self._conn.execute(
                f"SELECT {_IMAGE_COLUMNS} FROM images WHERE id IN ({','.join('?' * len(part))})", part))
        return self._records([rows[i] for i in ids if i in rows])

    def _records(self, rows: list[tuple]) -> list[ImageRecord]:
        probs: dict[int, dict[int, float]] = {}
        ids = [r[0] for r in rows]
        if ids:
            existing = {r[0] for r in self._conn.execute("SELECT id FROM classes")}
            for start in range(0, len(ids), _IN_CHUNK):
                part = ids[start:start + _IN_CHUNK]
                for image_id, p, cids in self._conn.execute(
                        f"SELECT image_id, probs, class_ids FROM predictions WHERE image_id IN "
                        f"({','.join('?' * len(part))})", part):
                    values = np.frombuffer(p, dtype=np.float32)
                    keys = np.frombuffer(cids, dtype=np.int64)
                    probs[image_id] = {int(k): float(v) for k, v in zip(keys, values) if int(k) in existing}
        return [ImageRecord(*r, probs=probs.get(r[0])) for r in rows]

    # ---------------------------------------------------------------- models and predictions

    @_locked
    def set_model(self, spec: str, meta: dict) -> int:
        """Record the model that labels now and make it current. The same (spec, meta)
        as a model recorded before gives that model's id back, so a labeling run that
        was interrupted can resume (see :meth:`predicted_image_ids`)."""
        try:
            meta_json = json.dumps(meta, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError) as e:
            raise ProjectError(f"model metadata must be plain JSON data ({e})") from None
        with self._tx():
            row = self._conn.execute("SELECT id FROM models WHERE spec = ? AND meta = ?", (spec, meta_json)).fetchone()
            if row is not None:
                model_id = row[0]
            else:
                model_id = int(self._conn.execute("INSERT INTO models(spec, meta, created) VALUES (?, ?, ?)",
                                                  (spec, meta_json, time.time())).lastrowid)
            self._conn.execute("INSERT INTO settings(key, value) VALUES ('current_model', ?) "
                               "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (str(model_id),))
        return model_id

    @_locked
    def current_model(self) -> tuple[int, str, dict] | None:
        row = self._conn.execute("SELECT m.id, m.spec, m.meta FROM settings s JOIN models m "
                                 "ON m.id = CAST(s.value AS INTEGER) WHERE s.key = 'current_model'").fetchone()
        return (row[0], row[1], json.loads(row[2])) if row else None

    @_locked
    def write_predictions(self, model_id: int, rows: Sequence[PredictionRow]) -> None:
        """Store one batch of predictions in one transaction. Rows for images marked as
        errors meanwhile are dropped; class ids must all exist (a class deleted since
        the model adapted raises: adapt again)."""
        if not rows:
            return
        now = time.time()
        with self._tx(durable=False):
            if self._conn.execute("SELECT 1 FROM models WHERE id = ?", (model_id,)).fetchone() is None:
                raise ProjectError(f"no model with id {model_id} in this project; call set_model first")
            existing = {r[0] for r in self._conn.execute("SELECT id FROM classes")}
            usable = self._usable_ids([r.image_id for r in rows])
            preds, model_labels, summaries = [], [], []
            for r in rows:
                if r.image_id not in usable:
                    continue
                probs = np.asarray(r.probs, dtype=np.float32).reshape(-1)
                class_ids = np.asarray(r.class_ids, dtype=np.int64).reshape(-1)
                if probs.size == 0 or probs.shape != class_ids.shape:
                    raise ValueError(f"image {r.image_id}: {probs.size} probabilities for {class_ids.size} class ids")
                unknown = set(class_ids.tolist()) - existing
                if unknown:
                    raise ProjectError(f"predictions name classes that are no longer in the project "
                                       f"(ids {sorted(unknown)}); adapt the model again and relabel")
                k = int(probs.argmax())
                cls, conf = int(class_ids[k]), float(probs[k])
                metrics = (_opt(r.entropy), _opt(r.margin), _opt(r.mutual_info), _opt(r.ood_score))
                preds.append((r.image_id, model_id, cls, probs.tobytes(), class_ids.tobytes(), conf, *metrics, now))
                model_labels.append((r.image_id, cls, now))
                summaries.append((cls, conf, *metrics, cls, r.image_id))
            self._store_predictions(preds, model_labels, summaries)

    @_locked
    def write_prediction_arrays(self, model_id: int, image_ids: np.ndarray, class_ids: Sequence[int],
                                probs: np.ndarray, entropy: np.ndarray, margin: np.ndarray,
                                mutual_info: np.ndarray | None, ood_score: np.ndarray) -> None:
        """:meth:`write_predictions` for predictions that share one class list (a whole
        run of one adapted task): the same rows, built with array operations. Refreshing
        10,000 predictions spent a third of its time building rows one by one."""
        ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            return
        probs = np.ascontiguousarray(probs, dtype=np.float32)
        cids = np.asarray(class_ids, dtype=np.int64).reshape(-1)
        if probs.shape != (ids.size, cids.size) or cids.size == 0:
            raise ValueError(f"probabilities shaped {probs.shape} for {ids.size} images and {cids.size} class ids")
        now = time.time()
        with self._tx(durable=False):
            if self._conn.execute("SELECT 1 FROM models WHERE id = ?", (model_id,)).fetchone() is None:
                raise ProjectError(f"no model with id {model_id} in this project; call set_model first")
            unknown = set(cids.tolist()) - {r[0] for r in self._conn.execute("SELECT id FROM classes")}
            if unknown:
                raise ProjectError(f"predictions name classes that are no longer in the project "
                                   f"(ids {sorted(unknown)}); adapt the model again and relabel")
            usable = self._usable_ids(ids.tolist())
            keep = np.fromiter((i in usable for i in ids.tolist()), dtype=bool, count=ids.size)
            ids, probs = ids[keep], probs[keep]
            top = probs.argmax(axis=1)
            cls = cids[top].tolist()
            conf = probs[np.arange(len(top)), top].tolist()
            metrics = [_opt_array(np.asarray(a).reshape(-1)[keep] if a is not None else None, ids.size)
                       for a in (entropy, margin, mutual_info, ood_score)]
            cids_blob = cids.tobytes()
            id_list = ids.tolist()
            blobs = [row.tobytes() for row in probs]
            preds = [(i, model_id, c, b, cids_blob, f, e, m, u, o, now)
                     for i, c, b, f, e, m, u, o in zip(id_list, cls, blobs, conf, *metrics)]
            model_labels = [(i, c, now) for i, c in zip(id_list, cls)]
            summaries = [(c, f, e, m, u, o, c, i) for i, c, f, e, m, u, o in zip(id_list, cls, conf, *metrics)]
            self._store_predictions(preds, model_labels, summaries)

    def _store_predictions(self, preds: list[tuple], model_labels: list[tuple], summaries: list[tuple]) -> None:
        """The three writes behind every batch of predictions (inside the caller's transaction)."""
        self._touch(s[-1] for s in summaries)
        self._conn.executemany(
            "INSERT INTO predictions(image_id, model_id, class_id, probs, class_ids, confidence, entropy, margin, "
            "mutual_info, ood_score, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(image_id) DO "
            "UPDATE SET model_id = excluded.model_id, class_id = excluded.class_id, probs = excluded.probs, "
            "class_ids = excluded.class_ids, confidence = excluded.confidence, entropy = excluded.entropy, "
            "margin = excluded.margin, mutual_info = excluded.mutual_info, ood_score = excluded.ood_score, "
            "time = excluded.time", preds)
        # Most rows of a refresh keep their class: for those only the uncertainty columns
        # change, which no SQLite index covers. Rewriting the class and status columns
        # too (indexed three times) tripled the cost of a 10,000-image refresh.
        same = self._unchanged_class(summaries)
        moved = [r for r in summaries if r[-1] not in same]
        kept = [r[1:6] + r[-1:] for r in summaries if r[-1] in same]
        # The model's label never replaces a human one.
        self._conn.executemany(
            "INSERT INTO labels(image_id, class_id, source, time) VALUES (?, ?, 'model', ?) "
            "ON CONFLICT(image_id) DO UPDATE SET class_id = excluded.class_id, time = excluded.time "
            "WHERE labels.source = 'model'", [m for m in model_labels if m[0] not in same])
        # The same update _refresh would make, without its subqueries (this is the hot path).
        self._conn.executemany(
            "UPDATE images SET predicted_class_id = ?, confidence = ?, entropy = ?, margin = ?, mutual_info = ?, "
            "ood_score = ?, "
            "label_class_id = CASE WHEN label_source = 'human' THEN label_class_id ELSE ? END, "
            "status = CASE WHEN label_source = 'human' THEN 'confirmed' ELSE 'predicted' END, "
            "label_source = CASE WHEN label_source = 'human' THEN 'human' ELSE 'model' END "
            "WHERE id = ?", moved)
        self._conn.executemany(
            "UPDATE images SET confidence = ?, entropy = ?, margin = ?, mutual_info = ?, ood_score = ? "
            "WHERE id = ?", kept)

    def _unchanged_class(self, summaries: list[tuple]) -> set[int]:
        """Images of ``summaries`` (rows ``(class, ..., image id)``) whose predicted class,
        label and status the new prediction leaves as they are."""
        new_class = {r[-1]: r[0] for r in summaries}
        if len(new_class) > 2000:
            rows = self._conn.execute("SELECT id, predicted_class_id, label_source, label_class_id, status "
                                      "FROM images WHERE predicted_class_id IS NOT NULL")
        else:
            ids = list(new_class)
            rows = itertools.chain.from_iterable(
                self._conn.execute("SELECT id, predicted_class_id, label_source, label_class_id, status FROM images "
                                   f"WHERE id IN ({','.join('?' * len(part))})", part)
                for part in (ids[k:k + 900] for k in range(0, len(ids), 900)))
        return {i for i, predicted, source, label, status in rows
                if new_class.get(i, -1) == predicted
                and (source == "human" or (source == "model" and label == predicted and status == "predicted"))}

    @_locked
    def predicted_image_ids(self, model_id: int) -> set[int]:
        """Images whose current prediction comes from ``model_id`` (done, when resuming)."""
        return {r[0] for r in self._conn.execute("SELECT image_id FROM predictions WHERE model_id = ?", (model_id,))}

    @_locked
    def clear_predictions(self) -> None:
        """Forget every prediction (human labels and examples stay)."""
        with self._tx():
            self._conn.execute("DELETE FROM predictions")
            self._refresh(None)

    @_locked
    def mark_errors(self, items: Sequence[tuple[int, str]]) -> None:
        """Record images that failed to decode during labeling, with the reason. Their
        predictions go; they are left out of examples and embedding until re-added."""
        if not items:
            return
        with self._tx():
            self._conn.executemany("UPDATE images SET error = ? WHERE id = ?", [(reason, i) for i, reason in items])
            self._conn.executemany("DELETE FROM predictions WHERE image_id = ?", [(i,) for i, _ in items])
            self._refresh(i for i, _ in items)

    def _usable_ids(self, image_ids: list[int]) -> set[int]:
        usable: set[int] = set()
        for start in range(0, len(image_ids), _IN_CHUNK):
            part = image_ids[start:start + _IN_CHUNK]
            usable.update(r[0] for r in self._conn.execute(
                f"SELECT id FROM images WHERE error IS NULL AND id IN ({','.join('?' * len(part))})", part))
        return usable

    # ---------------------------------------------------------------- embedding cache

    @_locked
    def images_to_embed(self, backbone_id: str) -> list[tuple[int, str, str]]:
        """(image_id, path, hash) of usable images with no cached embedding for the backbone."""
        return [tuple(r) for r in self._conn.execute(
            "SELECT i.id, i.path, i.hash FROM images i WHERE i.error IS NULL AND i.hash IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM embeddings e WHERE e.backbone_id = ? AND e.hash = i.hash) ORDER BY i.id", (backbone_id,))]

    @_locked
    def put_embeddings(self, backbone_id: str, items: Sequence[tuple[str, np.ndarray]]) -> None:
        """Cache embeddings (content hash, float32 vector), all in one transaction."""
        if not items:
            return
        vectors = [np.ascontiguousarray(v, dtype=np.float32).reshape(-1) for _, v in items]
        dims = {v.size for v in vectors}
        with self._tx(durable=False):
            row = self._conn.execute("SELECT dim FROM embeddings WHERE backbone_id = ? LIMIT 1",
                                     (backbone_id,)).fetchone()
            if row is not None:
                dims.add(row[0])
            if len(dims) != 1:
                raise ValueError(f"embeddings for backbone {backbone_id!r} must all have one size, got {sorted(dims)}")
            self._conn.executemany(
                "INSERT INTO embeddings(backbone_id, hash, dim, vector) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(backbone_id, hash) DO UPDATE SET dim = excluded.dim, vector = excluded.vector",
                [(backbone_id, h, v.size, v.tobytes()) for (h, _), v in zip(items, vectors)])

    @_locked
    def get_embeddings(self, backbone_id: str, hashes: Sequence[str] | None = None
                       ) -> tuple[list[str], np.ndarray]:
        """Cached embeddings: (hashes, (n, d) float32 matrix). With ``hashes``, those that
        are cached, in the order asked; with None, all of the backbone's."""
        if hashes is None:
            rows = self._conn.execute("SELECT hash, vector, dim FROM embeddings WHERE backbone_id = ? ORDER BY id",
                                      (backbone_id,)).fetchall()
        else:
            found: dict[str, tuple] = {}
            wanted = list(dict.fromkeys(hashes))
            for start in range(0, len(wanted), _IN_CHUNK):
                part = wanted[start:start + _IN_CHUNK]
                for r in self._conn.execute(f"SELECT hash, vector, dim FROM embeddings WHERE backbone_id = ? AND hash "
                                            f"IN ({','.join('?' * len(part))})", (backbone_id, *part)):
                    found[r[0]] = r
            rows = [found[h] for h in wanted if h in found]
        if not rows:
            row = self._conn.execute("SELECT dim FROM embeddings WHERE backbone_id = ? LIMIT 1",
                                     (backbone_id,)).fetchone()
            return [], np.zeros((0, row[0] if row else 0), dtype=np.float32)
        dim = rows[0][2]
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim).copy()
        return [r[0] for r in rows], matrix


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10)
    except sqlite3.Error as e:
        raise ProjectError(f"cannot open {path} ({e}); check that the file and its folder are writable") from None
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        # FULL: a commit is on disk before the call returns, so even a power cut keeps
        # every label a user confirmed (a few ms per commit on an SSD).
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        # Every prediction batch updates about 20 index entries per image, spread over the
        # whole file; SQLite's default 2 MB cache makes that 3x slower on 100k images.
        conn.execute("PRAGMA cache_size = -65536")
    except sqlite3.DatabaseError as e:
        conn.close()
        raise ProjectError(f"{path} is not a few-shot project file, or it is damaged ({e}); "
                           "open a .fewshot file made by this app, or create a new project") from None
    if str(mode).lower() != "wal":
        conn.close()
        raise ProjectError(f"cannot use write-ahead logging for {path} (journal mode {mode}); network shares and "
                           "some removable disks do not support it: keep projects on a local disk")
    return conn


def _check_class_name(name: str) -> str:
    name = name.strip() if isinstance(name, str) else ""
    if not name:
        raise ProjectError("a class needs a name; type one")
    if any(ord(ch) < 32 for ch in name):
        raise ProjectError(f"class name {name!r} holds control characters (tab, newline ...); remove them")
    return name


def _check_color(color: str) -> str:
    if not isinstance(color, str) or not _COLOR.match(color):
        raise ProjectError(f"colour {color!r} is not of the form #rrggbb (e.g. #4e79a7)")
    return color.lower()


def _where(terms: list[str]) -> str:
    return "WHERE " + " AND ".join(terms) if terms else ""


def _opt(value: Any) -> float | None:
    """A metric as stored: NaN becomes NULL (SQLite's own rule) and infinities the largest
    finite float, so that they sort where they belong and +inf never reads as missing."""
    if value is None:
        return None
    value = float(value)
    return max(min(value, sys.float_info.max), -sys.float_info.max) if not math.isnan(value) else None


def _opt_array(values: np.ndarray | None, n: int) -> list[float | None]:
    """:func:`_opt` over an array: NaN as None, infinities clipped to the largest float."""
    if values is None:
        return [None] * n
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    arr = np.clip(arr, -sys.float_info.max, sys.float_info.max)  # keeps NaN
    out = arr.tolist()
    if np.isnan(arr).any():
        out = [None if v != v else v for v in out]
    return out


def _as_list(paths: Any) -> list:
    return [paths] if isinstance(paths, (str, Path)) else list(paths)
