"""A project's classes: names (unique ignoring case), colours and display order.

Class ids are never reused (AUTOINCREMENT) because stored probability vectors refer
to them. Deleting a class is not undoable and clears the undo history, since older
steps refer to it.
"""
from __future__ import annotations

import re

from engine.errors import ProjectError
from engine.labeling.history import CLASS_DELETED
from engine.labeling.records import ClassInfo
from engine.labeling.store.base import locked

# Tableau 10: distinct on screen and for the common colour-vision deficiencies.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
           "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


class ClassesPart:
    @locked
    def add_class(self, name: str, color: str | None = None) -> int:
        name = _check_class_name(name)
        with self._tx():
            self._check_name_free(name)
            color = _check_color(color) if color is not None else self._next_color()
            order = self._conn.execute("SELECT coalesce(max(ord) + 1, 0) FROM classes").fetchone()[0]
            cur = self._conn.execute("INSERT INTO classes(name, color, ord) VALUES (?, ?, ?)", (name, color, order))
        return int(cur.lastrowid)

    @locked
    def rename_class(self, class_id: int, name: str) -> None:
        name = _check_class_name(name)
        with self._tx():
            self._require_class(class_id)
            self._check_name_free(name, except_id=class_id)
            self._conn.execute("UPDATE classes SET name = ? WHERE id = ?", (name, class_id))

    @locked
    def set_class_color(self, class_id: int, color: str) -> None:
        with self._tx():
            self._require_class(class_id)
            self._conn.execute("UPDATE classes SET color = ? WHERE id = ?", (_check_color(color), class_id))

    @locked
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

    @locked
    def reorder_classes(self, class_ids: list[int]) -> None:
        """Set the display order; ``class_ids`` must name every class once."""
        with self._tx():
            current = {r[0] for r in self._conn.execute("SELECT id FROM classes")}
            if len(class_ids) != len(current) or set(class_ids) != current:
                raise ProjectError(f"a new class order must list each of the {len(current)} classes exactly once "
                                   f"(got ids {list(class_ids)}); reload the class list and try again")
            self._conn.executemany("UPDATE classes SET ord = ? WHERE id = ?",
                                   [(i, cid) for i, cid in enumerate(class_ids)])

    @locked
    def classes(self) -> list[ClassInfo]:
        return [ClassInfo(*r) for r in self._conn.execute("SELECT id, name, color, ord FROM classes ORDER BY ord")]

    @locked
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


