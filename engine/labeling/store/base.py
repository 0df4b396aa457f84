"""A project's connection, process lock and transactions (see the package doc).

Every user action is one short transaction committed before the call returns, in
WAL mode with ``synchronous=FULL``: killing the app, or a power cut, loses nothing
a user did. Only one process may have a project open (``lock.py``). Within the
process a project may be shared between the GUI thread and the worker thread: each
call holds a re-entrant lock, and scanning (the one slow call) takes it only while
writing each chunk of results.
"""
from __future__ import annotations

import functools
import logging
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from engine.errors import ProjectError
from engine.labeling import schema
from engine.labeling.history import History
from engine.labeling.lock import ProjectLock, file_error, owner_text
from engine.labeling.sort_index import SortIndex
from engine.labeling.store import health
from engine.labeling.store.backup import backup_file, write_backup

log = logging.getLogger(__name__)

SUFFIX = ".fewshot"
IN_CHUNK = 500  # ids per "IN (...)" list, well under SQLite's bound-parameter limit


def locked(method):
    """Run a public method under the project's lock, on an open project."""
    @functools.wraps(method)
    def wrapper(self: "ProjectBase", *args, **kwargs):
        with self._lock:
            self._check_open()
            return method(self, *args, **kwargs)
    return wrapper


def _with_suffix(path: Path) -> Path:
    return path if path.suffix.lower() == SUFFIX else path.with_name(path.name + SUFFIX)


class ProjectBase:
    """What every part of a project shares: the connection, the locks, transactions.
    :class:`engine.labeling.store.Project` composes it with the parts by concern."""

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
        self._backed_up = False  # False: close() writes a backup (backup.py)

    # ---------------------------------------------------------------- open / close

    @classmethod
    def create(cls, path: str | Path) -> "Any":
        """Create a new project file (``.fewshot`` is appended when missing)."""
        path = _with_suffix(Path(path)).absolute()
        if path.exists():
            raise ProjectError(f"{path} already exists; open it instead, or choose another name")
        if not path.parent.is_dir():
            raise ProjectError(f"folder {path.parent} does not exist; create it first or choose another place")
        return cls._open(path, new=True)

    @staticmethod
    def exists(path: str | Path) -> bool:
        """Whether :meth:`open` would find a file at ``path`` (as given, or with ``.fewshot``)."""
        path = Path(path)
        try:
            return path.exists() or _with_suffix(path).exists()
        except OSError:
            return False

    @classmethod
    def open(cls, path: str | Path, create: bool = False, use_empty: bool = False) -> "Any":
        """Open a project; with ``create``, make it when it does not exist yet; with
        ``use_empty``, make an empty (0-byte) file a new project (else that is an
        :class:`EmptyProjectFileError`). Nothing is written to a file that is not a
        project. Raises :class:`ProjectLockedError` when another process has it open,
        :class:`DamagedProjectError` when it fails SQLite's check."""
        path = Path(path).absolute()
        try:
            exists = path.exists()
        except OSError as e:
            raise file_error(path, e, "open") from None
        if not exists:
            if _with_suffix(path).exists():
                path = _with_suffix(path)
            elif create:
                return cls.create(path)
            else:
                raise ProjectError(f"no project at {path}; check the path, or create a new project")
        if path.is_dir():
            raise ProjectError(f"{path} is a folder; give the project's .fewshot file")
        kind = health.identify(path)
        if not (kind == health.PROJECT or (kind == health.EMPTY and use_empty)):
            health.refuse_unless_project(path, kind)
        return cls._open(path, new=False)

    @classmethod
    def _open(cls, path: Path, new: bool) -> "Any":
        file_lock = ProjectLock.acquire(path, create=new)
        try:
            conn = _connect(path)
            try:
                if not new:
                    problems = health.check_integrity(conn, path)
                    if problems:
                        raise health.damaged_error(path, problems)
                schema.check_and_migrate(conn, path)
                conn.execute("INSERT INTO settings(key, value) VALUES ('opened_by', ?) "
                             "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (owner_text(),))
                conn.execute("CREATE TEMP TABLE refresh_ids (id INTEGER PRIMARY KEY)")
            except sqlite3.Error as e:
                conn.close()
                raise database_error(path, e, "open") from None
            except BaseException:
                conn.close()
                raise
        except BaseException:
            file_lock.release()
            if new:
                Path(path).unlink(missing_ok=True)  # a project that could not be made is not left half-made
            raise
        log.info("%s project %s", "created" if new else "opened", path)
        project = cls(path, conn, file_lock)
        project._backed_up = new is False and backup_file(path).is_file()
        project._sort_index.warm_up(path)
        return project

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._sort_index.close()
                if not self._backed_up:  # a person changed something, or there is no backup yet
                    write_backup(self._conn, self.path)
                self._conn.close()  # the last connection checkpoints and removes the WAL file
            finally:
                self._file_lock.release()

    def __enter__(self) -> "Any":
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
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise database_error(self.path, e, "write to") from None
        self._touched, self._touched_all = set(), False
        try:
            try:
                yield
            except BaseException as e:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")  # nothing changed: the sort index stays exact
                if isinstance(e, sqlite3.Error):
                    raise database_error(self.path, e, "write to") from None
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as e:  # disk full or I/O error: whatever state results, re-read it
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                self._sort_index.invalidate()
                raise database_error(self.path, e, "write to") from None
            if durable:
                self._backed_up = False  # a person's change: the backup is behind
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


def database_error(path: Path, e: sqlite3.Error, doing: str) -> ProjectError:
    """What a person needs to know about an SQLite failure on the project."""
    name = getattr(e, "sqlite_errorname", "") or ""
    text = str(e)
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return ProjectError(f"cannot {doing} {path}: the disk is full. Free some space and try again; everything "
                            "saved before is kept")
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return ProjectError(f"cannot {doing} {path}: the file or its folder is read-only; copy the project to a "
                            "folder you can write to and open the copy")
    if name.startswith("SQLITE_CORRUPT") or "malformed" in text:
        return health.damaged_error(path, [text])
    if name.startswith("SQLITE_BUSY") or "locked" in text:
        return ProjectError(f"cannot {doing} {path}: another program is using the file; close it and try again")
    return ProjectError(f"cannot {doing} {path} ({text}); check the disk, and that the file and its folder are "
                        "writable")


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
        raise database_error(path, e, "open") from None
    if str(mode).lower() != "wal":
        conn.close()
        raise ProjectError(f"cannot use write-ahead logging for {path} (journal mode {mode}); network shares and "
                           "some removable disks do not support it: keep projects on a local disk")
    return conn


