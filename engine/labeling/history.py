"""Undo and redo of label and example actions, kept in the project file.

Each user action is one history entry: a description for the Edit menu and the
list of state changes it made, each with the state before and after. Undo writes
the "before" states back (last change first), redo the "after" states. Storing
states rather than inverse operations makes undo exact whatever the action was
(a label that replaced a label, an example moved from another class ...), and
keeping the log in the project lets a user undo after reopening it.

What is recorded is the *human* state only (a human label or none, an example or
none). The model's labels are derived from the predictions, so after an undo the
image shows whatever the current model predicts for it, not what it predicted at
the time of the action.

Entries are written in the same transaction as the action, so the log can never
disagree with the data. A new action drops the redo entries, as in any editor.
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass
from typing import Callable

HISTORY_LIMIT = 1000  # entries kept; older ones are dropped

LABEL = "label"
EXAMPLE = "example"


@dataclass(frozen=True)
class Change:
    """One image's state before and after an action.

    ``kind`` ``label``: ``before``/``after`` is the human label as ``{"class": id}``
    (id None = "none of these classes") or None when there is no human label.
    ``kind`` ``example``: the class the image is an example of, or None.
    """

    kind: str
    image_id: int
    before: dict | int | None
    after: dict | int | None


ApplyFn = Callable[[Change, "dict | int | None"], None]


class History:
    """The undo log of one project connection. Call inside the store's transactions."""

    def __init__(self, conn: sqlite3.Connection, limit: int = HISTORY_LIMIT):
        self._conn = conn
        self._limit = limit

    def record(self, description: str, changes: list[Change]) -> None:
        if not changes:
            return
        self._conn.execute("DELETE FROM history WHERE undone = 1")
        self._conn.execute("INSERT INTO history(description, changes, undone, time) VALUES (?, ?, 0, ?)",
                           (description, json.dumps([asdict(c) for c in changes]), time.time()))
        self._conn.execute("DELETE FROM history WHERE id <= (SELECT max(id) FROM history) - ?", (self._limit,))

    def undo(self, apply: ApplyFn) -> tuple[str, list[Change]] | None:
        """Apply the last entry's "before" states; returns its description and changes."""
        row = self._conn.execute(
            "SELECT id, description, changes FROM history WHERE undone = 0 ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        changes = _decode(row[2])
        for change in reversed(changes):
            apply(change, change.before)
        self._conn.execute("UPDATE history SET undone = 1 WHERE id = ?", (row[0],))
        return row[1], changes

    def redo(self, apply: ApplyFn) -> tuple[str, list[Change]] | None:
        """Apply the first undone entry's "after" states; returns its description and changes."""
        row = self._conn.execute(
            "SELECT id, description, changes FROM history WHERE undone = 1 ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return None
        changes = _decode(row[2])
        for change in changes:
            apply(change, change.after)
        self._conn.execute("UPDATE history SET undone = 0 WHERE id = ?", (row[0],))
        return row[1], changes

    def next_undo(self) -> str | None:
        row = self._conn.execute(
            "SELECT description FROM history WHERE undone = 0 ORDER BY id DESC LIMIT 1").fetchone()
        return row[0] if row else None

    def next_redo(self) -> str | None:
        row = self._conn.execute("SELECT description FROM history WHERE undone = 1 ORDER BY id LIMIT 1").fetchone()
        return row[0] if row else None

    def clear(self) -> None:
        self._conn.execute("DELETE FROM history")


def _decode(text: str) -> list[Change]:
    return [Change(**c) for c in json.loads(text)]
