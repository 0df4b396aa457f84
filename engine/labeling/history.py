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

Beside the undo log, every action also appends one :class:`LabelEvent` per image
to ``label_events``, which is never trimmed: the per-image history a person reads
("labelled cat", "undone: labelled cat"). An undo or redo copies the events of the
entry it replays, with source ``undo``/``redo``, so the wording follows the action
the person remembers rather than the state changes it was stored as.
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

# LabelEvent.action values.
LABELLED = "label"  # a human label of a class the model did not predict (or with no prediction)
ACCEPTED = "accept"  # a human label equal to the model's prediction at the time
NONE_OF_THESE = "none"
CLEARED = "clear"  # the human label removed (class_id: the class it had, or None)
MADE_EXAMPLE = "example"
REMOVED_EXAMPLE = "unexample"
CLASS_DELETED = "class_deleted"  # the image's label or example went with its class

EventSpec = tuple[int, str, "int | None"]  # image id, action, class id


@dataclass(frozen=True)
class LabelEvent:
    """One thing that happened to one image. ``time`` is seconds since the epoch;
    ``class_name`` is the name the class had then (the class may be gone since);
    ``source`` is ``human`` (the action itself), ``undo`` or ``redo`` (the action
    named by ``action`` was undone or redone)."""

    image_id: int
    time: float
    action: str
    class_id: int | None
    class_name: str | None
    source: str


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

    def record(self, description: str, changes: list[Change], events: list[EventSpec]) -> None:
        """Log an action: its undo entry and its per-image events. Nothing when nothing changed."""
        if not changes:
            return
        self._conn.execute("DELETE FROM history WHERE undone = 1")
        history_id = self._conn.execute(
            "INSERT INTO history(description, changes, undone, time) VALUES (?, ?, 0, ?)",
            (description, json.dumps([asdict(c) for c in changes]), time.time())).lastrowid
        self._conn.execute("DELETE FROM history WHERE id <= (SELECT max(id) FROM history) - ?", (self._limit,))
        self.log_events(events, "human", history_id)

    def log_events(self, events: list[EventSpec], source: str, history_id: int | None) -> None:
        """Append events, naming each class as it is called now (call before deleting one)."""
        now = time.time()
        self._conn.executemany(
            "INSERT INTO label_events(image_id, time, action, class_id, class_name, source, history_id) "
            "VALUES (?, ?, ?, ?, (SELECT name FROM classes WHERE id = ?), ?, ?)",
            [(image_id, now, action, class_id, class_id, source, history_id) for image_id, action, class_id in events])

    def events(self, image_id: int) -> list[LabelEvent]:
        """The image's events, oldest first."""
        return [LabelEvent(*r) for r in self._conn.execute(
            "SELECT image_id, time, action, class_id, class_name, source FROM label_events "
            "WHERE image_id = ? ORDER BY id", (image_id,))]

    def _replayed(self, history_id: int, source: str, changes: list[Change]) -> None:
        copied = self._conn.execute(
            "INSERT INTO label_events(image_id, time, action, class_id, class_name, source, history_id) "
            "SELECT image_id, ?, action, class_id, coalesce((SELECT name FROM classes c WHERE c.id = e.class_id), "
            "class_name), ?, history_id FROM label_events e WHERE history_id = ? AND source = 'human' ORDER BY id",
            (time.time(), source, history_id)).rowcount
        if copied <= 0:  # an entry recorded before the project had label_events
            self.log_events(_derived_events(changes), source, history_id)

    def undo(self, apply: ApplyFn) -> tuple[str, list[Change]] | None:
        """Apply the last entry's "before" states; returns its description and changes."""
        return self._replay(apply, forward=False)

    def redo(self, apply: ApplyFn) -> tuple[str, list[Change]] | None:
        """Apply the first undone entry's "after" states; returns its description and changes."""
        return self._replay(apply, forward=True)

    def _replay(self, apply: ApplyFn, forward: bool) -> tuple[str, list[Change]] | None:
        row = self._conn.execute(
            "SELECT id, description, changes FROM history WHERE undone = ? ORDER BY id "
            + ("LIMIT 1" if forward else "DESC LIMIT 1"), (1 if forward else 0,)).fetchone()
        if row is None:
            return None
        changes = _decode(row[2])
        for change in (changes if forward else reversed(changes)):  # undo unwinds last change first
            apply(change, change.after if forward else change.before)
        self._conn.execute("UPDATE history SET undone = ? WHERE id = ?", (0 if forward else 1, row[0]))
        self._replayed(row[0], "redo" if forward else "undo", changes)
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


def _derived_events(changes: list[Change]) -> list[EventSpec]:
    """The action an entry's changes stand for, per image. Only for entries older than
    label_events; it cannot tell an accepted prediction from a label, nor clearing an
    example's label from removing the example (they change the same states)."""
    by_image: dict[int, dict[str, Change]] = {}
    for c in changes:
        by_image.setdefault(c.image_id, {})[c.kind] = c
    out: list[EventSpec] = []
    for image_id, kinds in by_image.items():
        example, label = kinds.get(EXAMPLE), kinds.get(LABEL)
        if example is not None and example.after is not None:
            out.append((image_id, MADE_EXAMPLE, example.after))
        elif label is not None and label.after is not None:
            cls = label.after["class"]
            out.append((image_id, LABELLED if cls is not None else NONE_OF_THESE, cls))
        elif example is not None:
            out.append((image_id, REMOVED_EXAMPLE, example.before))
        elif label is not None:
            out.append((image_id, CLEARED, label.before["class"] if label.before else None))
    return out
