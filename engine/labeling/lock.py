"""One writer per project: an OS lock on the project file itself.

SQLite's own locking would let two app instances interleave writes, with each
one's cached view (and undo history) going stale under it. Instead the first
process to open a project takes an exclusive OS lock on the open file: on its
identity (device and inode), not its name, so every path to it -- a hard link, a
symlink, another spelling -- meets the same lock. The OS drops the lock when the
process dies, even by SIGKILL: no stale lock to detect, and no side file to leave
behind.

POSIX: ``flock``, a BSD lock, which Linux and macOS keep apart from the POSIX
record locks SQLite takes on the same file (projects on network shares are refused
anyway: they cannot do WAL). Windows: one byte far past every byte SQLite locks.
Who holds a project is written into it (the ``opened_by`` setting), so the second
process can say so.
"""
from __future__ import annotations

import errno
import logging
import os
import sqlite3
import sys
from pathlib import Path

from engine.errors import ProjectError, ProjectLockedError

log = logging.getLogger(__name__)

if sys.platform == "win32":
    import msvcrt
else:
    import fcntl

_WINDOWS_LOCK_OFFSET = 1 << 40  # SQLite locks bytes near 1 GiB; this is far past them


def file_error(path: Path, e: OSError, doing: str) -> ProjectError:
    """A user-facing error for an OS error on a project file."""
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ProjectError(f"cannot {doing} {path}: it is read-only ({e.strerror}); copy the project to a folder "
                            "you can write to and open the copy")
    if e.errno == errno.ENAMETOOLONG:
        return ProjectError(f"cannot {doing} the project: its path is longer than this file system allows "
                            f"({len(str(path))} characters); choose a shorter name or folder")
    if e.errno == errno.ENOSPC:
        return ProjectError(f"cannot {doing} {path}: the disk is full; free some space and try again")
    if e.errno == errno.EEXIST:
        return ProjectError(f"{path} already exists; open it instead, or choose another name")
    return ProjectError(f"cannot {doing} {path} ({e.strerror or e}); check the path and its folder")


class ProjectLock:
    """An exclusive, non-blocking lock on a project file, held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, project_path: Path, create: bool = False) -> "ProjectLock":
        """Lock the file (``create``: a new, empty one; it must not exist)."""
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        try:
            fd = os.open(project_path, flags, 0o666)
        except OSError as e:
            raise file_error(project_path, e, "create" if create else "open") from None
        try:
            _lock(fd)
        except OSError:
            os.close(fd)
            raise ProjectLockedError(
                f"{project_path} is already open in another window or program ({read_owner(project_path)}); "
                "close it there first, or make a copy of the project file to work on separately") from None
        return cls(project_path, fd)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            _unlock(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None


def owner_text() -> str:
    import socket
    return f"pid {os.getpid()} on {socket.gethostname()}"


def read_owner(path: Path) -> str:
    """Who holds the project, as its ``opened_by`` setting says (read-only)."""
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=1)
        try:
            row = conn.execute("SELECT value FROM settings WHERE key = 'opened_by'").fetchone()
        finally:
            conn.close()
        return str(row[0]) if row else "owner unknown"
    except sqlite3.Error:
        return "owner unknown"


def _lock(fd: int) -> None:
    if sys.platform == "win32":
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock(fd: int) -> None:
    if sys.platform == "win32":
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
