"""What a file is, before anything writes to it; and whether a project is intact.

:func:`identify` reads the first 100 bytes only (no SQLite connection, which would
switch another application's database to WAL and leave files beside it): an empty
file, something that is not SQLite, another application's database (SQLite's
header carries our ``application_id``), or a project. :func:`check_integrity` runs
SQLite's check on an open project and turns damage into an error that says how to
recover.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from engine.errors import DamagedProjectError, EmptyProjectFileError, ProjectError
from engine.labeling import schema

SQLITE_HEADER = b"SQLite format 3\x00"
EMPTY, PROJECT, FOREIGN, NOT_SQLITE = "empty", "project", "foreign", "not-sqlite"


def identify(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            head = fh.read(100)
    except OSError as e:
        from engine.labeling.lock import file_error
        raise file_error(path, e, "read") from None
    if not head:
        return EMPTY
    if len(head) < 100 or not head.startswith(SQLITE_HEADER):
        return NOT_SQLITE
    app_id = int.from_bytes(head[68:72], "big")
    if app_id == schema.APPLICATION_ID:
        return PROJECT
    schema_cookie = int.from_bytes(head[40:44], "big")
    wal = path.with_name(path.name + "-wal")
    if schema_cookie == 0 and not (wal.exists() and wal.stat().st_size > 0):
        return EMPTY  # an SQLite file with nothing in it: no one's data
    if wal.exists() and wal.stat().st_size > 0:
        # A project created and killed before its first checkpoint has our id in the WAL
        # only. Reading it read-only writes nothing to the database itself.
        return _identify_through_sqlite(path)
    return FOREIGN


def _identify_through_sqlite(path: Path) -> str:
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=2)
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return FOREIGN
    return PROJECT if app_id == schema.APPLICATION_ID else FOREIGN


def refuse_unless_project(path: Path, kind: str) -> None:
    """Raise the error a person needs for a file that is not (yet) a project."""
    if kind == EMPTY:
        raise EmptyProjectFileError(path)
    if kind == NOT_SQLITE:
        raise ProjectError(f"{path} is not a few-shot project file (it is not a database: "
                           f"{_what_it_looks_like(path)}); open a .fewshot file made by this app, or create a new project")
    if kind == FOREIGN:
        raise ProjectError(f"{path} is an SQLite database but not a few-shot labeling project; it was left as it "
                           "was. Open a .fewshot file made by this app, or create a new project")


def _what_it_looks_like(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return "unreadable"
    for magic, name in ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"PK\x03\x04", "a zip file"),
                        (b"GIF8", "a GIF image"), (b"%PDF", "a PDF")):
        if head.startswith(magic):
            return name
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "some other kind of file"


def check_integrity(conn: sqlite3.Connection, path: Path, full: bool = False) -> list[str]:
    """SQLite's problems with the file (``quick_check``, or ``integrity_check`` with
    ``full``), an empty list when it is intact."""
    try:
        rows = conn.execute("PRAGMA integrity_check" if full else "PRAGMA quick_check(20)").fetchall()
    except sqlite3.DatabaseError as e:
        return [str(e)]
    problems = [str(r[0]) for r in rows if r and r[0] != "ok"]
    return problems


def damaged_error(path: Path, problems: list[str]) -> DamagedProjectError:
    from engine.labeling.store.backup import backup_file, describe_backup
    backup = backup_file(path)
    lines = [f"{path} is damaged: SQLite reports {problems[0].rstrip('.')}"
             + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else "") + "."]
    if backup.is_file():
        lines.append(f"A backup of every class, example and label it held at its last close ({describe_backup(backup)}) is at "
                     f"{backup}: 'fewshot check --project {path} --restore-backup' puts it in place (the damaged "
                     "file is kept beside it); then label again to recompute the predictions")
    else:
        lines.append("No backup of it was kept yet. Copy the file (with any -wal file beside it) before trying "
                     "anything; the sqlite3 tool's '.recover' command can often save what is in it, and a label "
                     "export (CSV or JSON) made earlier holds the labels")
    return DamagedProjectError(" ".join(lines) + ".")
