"""The project file's tables, and the migrations that bring an older file up to date.

A project is one SQLite file. ``PRAGMA user_version`` holds its schema version:
migration ``i`` of :data:`MIGRATIONS` takes a file from version ``i`` to ``i + 1``,
each in its own transaction, so a file is always at some whole version.
``PRAGMA application_id`` marks the file as ours, so that opening some other
SQLite database as a project is refused instead of writing tables into it.

Layout (version 1):

- ``images``: one row per distinct file content (``hash``; NULL when the bytes
  could not be read at all), the path it was first found at, its header size and
  the reason it is unusable (``error``). It also carries a copy of the image's
  current label and prediction summary (``status``, ``label_*``, ``confidence`` ...):
  the truth is in ``labels`` and ``predictions``, but every page of the grid filters
  and sorts on these, and one table answers a page of a 100,000-image project in a
  few milliseconds where a join cannot. The store updates the copy in the same
  transaction as the truth.
- ``classes``: name (unique ignoring case, since the names become folder names on
  case-insensitive disks), colour, display order. Ids are never reused
  (AUTOINCREMENT) because stored probability vectors refer to them.
- ``examples``: image -> class, the support set the model adapts on.
- ``labels``: each image's current label: ``human`` (a confirmed label; class NULL
  means "none of these classes") or ``model`` (the current prediction's class).
- ``predictions``: one per image, from the model ``model_id``: the full probability
  vector (float32 BLOB) over ``class_ids`` (int64 BLOB, same order), and its
  uncertainties.
- ``models``: the models (spec + JSON metadata) predictions came from.
- ``embeddings``: cached backbone features per (backbone id, content hash).
- ``history``: the undo/redo log of label and example actions.
- ``settings``: small key/value facts (the current model).

Version 3 adds a column to ``images`` and ``predictions`` for every score of
:mod:`engine.methods.uncertainty` (``aleatoric``); a score registered later gets
its column when the file is next opened (:func:`add_score_columns`).

Version 2 adds ``label_events``: what people did to each image, append only, for
the detail pane's history. ``history`` cannot serve: it is capped and a new action
drops its redo entries. Each event keeps the class name as it was (classes get
renamed and deleted, so ``class_id`` has no foreign key) and the undo entry that
recorded it (``history_id``), so that undoing it can say what was undone.
"""
from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Callable

from engine.errors import ProjectError
from engine.methods import uncertainty

log = logging.getLogger(__name__)

APPLICATION_ID = 0x46534C42  # "FSLB": few-shot labeler

STATUSES = ("unlabeled", "predicted", "confirmed", "error")

#: The prediction summary kept per image, in ``predictions`` and (copied) in ``images``:
#: the top probability and one column per score of engine.methods.uncertainty.
METRIC_COLUMNS: tuple[str, ...] = ("confidence", *uncertainty.NAMES)
# Sort keys of Project.query -> images column ("ood" is the first name of ood_score).
SORT_COLUMNS = {"name": "path", "confidence": "confidence", **{n: n for n in uncertainty.NAMES},
                **uncertainty.SORT_ALIASES}

_V1_TABLES = [
    """CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL)""",
    """CREATE TABLE classes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE COLLATE NOCASE,
        color TEXT NOT NULL,
        ord INTEGER NOT NULL)""",
    f"""CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL,
        hash TEXT UNIQUE,
        size INTEGER,
        width INTEGER,
        height INTEGER,
        format TEXT,
        error TEXT,
        added REAL NOT NULL,
        status TEXT NOT NULL DEFAULT 'unlabeled' CHECK (status IN {STATUSES!r}),
        label_class_id INTEGER,
        label_source TEXT CHECK (label_source IN ('human', 'model')),
        predicted_class_id INTEGER,
        confidence REAL,
        entropy REAL,
        margin REAL,
        mutual_info REAL,
        ood_score REAL)""",
    """CREATE TABLE examples (
        image_id INTEGER PRIMARY KEY REFERENCES images(id),
        class_id INTEGER NOT NULL REFERENCES classes(id),
        added REAL NOT NULL)""",
    """CREATE TABLE labels (
        image_id INTEGER PRIMARY KEY REFERENCES images(id),
        class_id INTEGER REFERENCES classes(id),
        source TEXT NOT NULL CHECK (source IN ('human', 'model')),
        time REAL NOT NULL,
        CHECK (source = 'human' OR class_id IS NOT NULL))""",
    """CREATE TABLE models (
        id INTEGER PRIMARY KEY,
        spec TEXT NOT NULL,
        meta TEXT NOT NULL,
        created REAL NOT NULL,
        UNIQUE (spec, meta))""",
    """CREATE TABLE predictions (
        image_id INTEGER PRIMARY KEY REFERENCES images(id),
        model_id INTEGER NOT NULL REFERENCES models(id),
        class_id INTEGER NOT NULL,
        probs BLOB NOT NULL,
        class_ids BLOB NOT NULL,
        confidence REAL NOT NULL,
        entropy REAL,
        margin REAL,
        mutual_info REAL,
        ood_score REAL,
        time REAL NOT NULL)""",
    """CREATE TABLE embeddings (
        id INTEGER PRIMARY KEY,
        backbone_id TEXT NOT NULL,
        hash TEXT NOT NULL,
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL,
        UNIQUE (backbone_id, hash))""",
    """CREATE TABLE history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        description TEXT NOT NULL,
        changes TEXT NOT NULL,
        undone INTEGER NOT NULL DEFAULT 0,
        time REAL NOT NULL)""",
    "CREATE INDEX predictions_model ON predictions(model_id)",
    "CREATE INDEX examples_class ON examples(class_id)",
    "CREATE INDEX labels_class ON labels(class_id)",
    # Re-scanning a fixed file finds the error row it replaces by path.
    "CREATE INDEX images_error_path ON images(path) WHERE error IS NOT NULL",
]


def _page_indexes() -> list[str]:
    """Indexes for pages sorted by name, one per filter, so each page is an index range
    walk with no sort step. Pages sorted by an uncertainty use sort_index.py instead:
    indexes on those columns would be rewritten by every prediction batch."""
    return [
        "CREATE INDEX images_by_name ON images(path COLLATE NOCASE)",
        "CREATE INDEX images_status_name ON images(status, path COLLATE NOCASE)",
        "CREATE INDEX images_class_name ON images(label_class_id, path COLLATE NOCASE)",
        "CREATE INDEX images_class_status_name ON images(label_class_id, status, path COLLATE NOCASE)",
    ]


def _migrate_to_v1(conn: sqlite3.Connection) -> None:
    for statement in _V1_TABLES + _page_indexes():
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")


def _migrate_to_v2(conn: sqlite3.Connection) -> None:
    # Actions as written by store.py; source 'undo'/'redo' copies the undone action's events.
    conn.execute("""CREATE TABLE label_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        image_id INTEGER NOT NULL REFERENCES images(id),
        time REAL NOT NULL,
        action TEXT NOT NULL,
        class_id INTEGER,
        class_name TEXT,
        source TEXT NOT NULL CHECK (source IN ('human', 'undo', 'redo')),
        history_id INTEGER)""")
    conn.execute("CREATE INDEX label_events_image ON label_events(image_id, id)")
    conn.execute("CREATE INDEX label_events_history ON label_events(history_id) WHERE history_id IS NOT NULL")


def missing_score_columns(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """(table, score) for every registered score whose column ``images`` or ``predictions`` lacks."""
    out = []
    for table in ("images", "predictions"):
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        out += [(table, name) for name in uncertainty.NAMES if name not in have]
    return out


def add_score_columns(conn: sqlite3.Connection) -> None:
    """Give ``images`` and ``predictions`` a column for every registered score they lack
    (a score added to engine.methods.uncertainty needs no migration of its own)."""
    for table, name in missing_score_columns(conn):
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} REAL")


#: MIGRATIONS[i] upgrades a file at schema version i to version i + 1. Append only.
#: Version 3: the scores of the uncertainty registry (aleatoric was the first added).
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migrate_to_v1, _migrate_to_v2, add_score_columns]
SCHEMA_VERSION = len(MIGRATIONS)


def check_and_migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse files that are not projects (or are from a newer app), then bring the
    file to :data:`SCHEMA_VERSION`. ``conn`` must be in autocommit mode."""
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        has_tables = conn.execute("SELECT count(*) FROM sqlite_schema WHERE type = 'table'").fetchone()[0] > 0
    except sqlite3.DatabaseError as e:
        raise ProjectError(f"{path} is not a few-shot project file, or it is damaged ({e}); "
                           "open a .fewshot file made by this app, or create a new project") from None
    if app_id != APPLICATION_ID and (has_tables or version != 0):
        raise ProjectError(f"{path} is an SQLite database but not a few-shot labeling project; "
                           "open a .fewshot file made by this app, or create a new project")
    if version > SCHEMA_VERSION:
        raise ProjectError(f"{path} was written by a newer version of this app (project format {version}, "
                           f"this app reads up to {SCHEMA_VERSION}); update the app to open it")
    for v in range(version, SCHEMA_VERSION):
        log.info("upgrading project %s from format %d to %d", path, v, v + 1)
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[v](conn)
            conn.execute(f"PRAGMA user_version = {v + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    if missing_score_columns(conn):  # scores registered since the file's last upgrade
        conn.execute("BEGIN IMMEDIATE")
        try:
            add_score_columns(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
