"""Removing images from a project (never their files), undoably.

A removal deletes the image's rows (the image, its human label, its example status, its
prediction and its label history) and records them in the undo log, so undo puts them
back under the same image id. Ids of removed images are never given to new images
(``image_id_floor``), which keeps that promise whatever is added meanwhile. Predictions
are not restored (the next refresh recomputes them); embeddings are keyed by content
and stay cached.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from engine.errors import ProjectError
from engine.labeling.history import Change
from engine.labeling.store.base import locked

REMOVED = "removed"  # Change.kind: ``before`` the image's rows, ``after`` None
FLOOR_KEY = "image_id_floor"
_IMAGE_FIELDS = ("id", "path", "hash", "size", "width", "height", "format", "error", "added")
_EVENT_FIELDS = ("image_id", "time", "action", "class_id", "class_name", "source", "history_id")


class RemovalPart:
    @locked
    def remove_images(self, image_ids: list[int]) -> int:
        """Remove images from the project (files on disk are untouched); one undoable
        action. Returns how many were removed."""
        ids = sorted({int(i) for i in image_ids})
        if not ids:
            return 0
        with self._tx():
            changes = [Change(REMOVED, i, self._image_state(i), None) for i in ids if self._exists(i)]
            if not changes:
                raise ProjectError("those images are no longer in the project; reload the view")
            for c in changes:
                self._delete_image(c.image_id)
            self._raise_floor(max(c.image_id for c in changes))
            n = len(changes)
            self._history.record(f"remove {n} image{'s' if n != 1 else ''} from the project", changes, [])
            self._touch(c.image_id for c in changes)
        return len(changes)

    @locked
    def image_ids_under(self, folder: str | Path) -> list[int]:
        """Every image whose file is in ``folder`` or below it (as it was recorded)."""
        prefix = os.path.join(os.path.abspath(folder), "")
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return [r[0] for r in self._conn.execute("SELECT id FROM images WHERE path LIKE ? ESCAPE '\\' ORDER BY id",
                                                 (pattern,))]

    def _exists(self, image_id: int) -> bool:
        return self._conn.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is not None

    def _image_state(self, image_id: int) -> dict[str, Any]:
        c = self._conn
        image = dict(zip(_IMAGE_FIELDS, c.execute(f"SELECT {', '.join(_IMAGE_FIELDS)} FROM images WHERE id = ?",
                                                  (image_id,)).fetchone()))
        label = c.execute("SELECT class_id, time FROM labels WHERE image_id = ? AND source = 'human'",
                          (image_id,)).fetchone()
        example = c.execute("SELECT class_id, added FROM examples WHERE image_id = ?", (image_id,)).fetchone()
        events = [list(r) for r in c.execute(f"SELECT {', '.join(_EVENT_FIELDS)} FROM label_events "
                                             "WHERE image_id = ? ORDER BY id", (image_id,))]
        return {"image": image, "label": list(label) if label else None, "example": list(example) if example else None,
                "events": events}

    def _delete_image(self, image_id: int) -> None:
        for table in ("label_events", "predictions", "labels", "examples"):
            self._conn.execute(f"DELETE FROM {table} WHERE image_id = ?", (image_id,))
        self._conn.execute("DELETE FROM images WHERE id = ?", (image_id,))

    def _restore_image(self, state: dict[str, Any]) -> None:
        image = state["image"]
        cols = ", ".join(image)
        self._conn.execute(f"INSERT INTO images({cols}, status) VALUES ({', '.join('?' * len(image))}, ?)",
                           (*image.values(), "error" if image.get("error") else "unlabeled"))
        image_id = image["id"]
        if state["label"] is not None:
            self._conn.execute("INSERT INTO labels(image_id, class_id, source, time) VALUES (?, ?, 'human', ?)",
                               (image_id, *state["label"]))
        if state["example"] is not None:
            self._conn.execute("INSERT INTO examples(image_id, class_id, added) VALUES (?, ?, ?)",
                               (image_id, *state["example"]))
        self._conn.executemany(f"INSERT INTO label_events({', '.join(_EVENT_FIELDS)}) VALUES "
                               f"({', '.join('?' * len(_EVENT_FIELDS))})", state["events"])

    def _apply_removal(self, change: Change, state: Any) -> None:
        if state is None:
            if self._exists(change.image_id):
                self._delete_image(change.image_id)
        elif not self._exists(change.image_id):
            self._restore_image(state)

    def _raise_floor(self, image_id: int) -> None:
        self._conn.execute(f"INSERT INTO settings(key, value) VALUES ('{FLOOR_KEY}', ?) ON CONFLICT(key) DO UPDATE "
                           "SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))", (str(image_id),))

    def next_image_id(self) -> int:
        """The id the next new image gets: past every image there is or was removed."""
        row = self._conn.execute(
            f"SELECT max(ifnull((SELECT max(id) FROM images), 0), ifnull((SELECT CAST(value AS INTEGER) "
            f"FROM settings WHERE key = '{FLOOR_KEY}'), 0))").fetchone()
        return int(row[0]) + 1

    @locked
    def image_generation(self) -> tuple[int, ...]:
        """Changes whenever the set of images does (added, marked unusable, removed, restored)."""
        c = self._conn
        return (c.execute("SELECT count(*), max(id) FROM images").fetchone()
                + c.execute("SELECT count(*) FROM images WHERE error IS NOT NULL").fetchone())
