"""One writer per project: an OS lock on a side file ``<project>.lock``.

SQLite's own locking would let two app instances interleave writes, with each
one's cached view (and undo history) going stale under it. Instead the first
process to open a project takes an exclusive OS lock that the OS drops by itself
when the process dies, even by SIGKILL, so a crash never leaves a stale lock. The
lock file holds the owner's pid and host name, for the message the second process
shows. It is never deleted: deleting it while another process waits to lock it
would let two processes each lock a different file.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path

from engine.errors import ProjectError, ProjectLockedError

log = logging.getLogger(__name__)

if sys.platform == "win32":
    import msvcrt
else:
    import fcntl

# Windows locks byte ranges that then cannot be read; lock one byte far past the
# owner text so a second process can still read who holds the project.
_WINDOWS_LOCK_OFFSET = 1 << 20


def lock_path_for(project_path: Path) -> Path:
    return project_path.with_name(project_path.name + ".lock")


class ProjectLock:
    """An exclusive, non-blocking lock held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, project_path: Path) -> "ProjectLock":
        path = lock_path_for(project_path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise ProjectError(f"cannot create the lock file {path} ({e.strerror or e}); the folder of a project "
                               "must be writable: copy the project to a folder you can write to") from None
        try:
            _lock(fd)
        except OSError:
            owner = _read_owner(fd)
            os.close(fd)
            raise ProjectLockedError(
                f"{project_path} is already open in another window or program ({owner}); close it there "
                "first, or make a copy of the project file to work on separately") from None
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        except OSError as e:  # the lock itself holds; the owner text is only a courtesy
            log.warning("cannot write owner into %s: %s", path, e)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            _unlock(fd)
        finally:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None


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


def _read_owner(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "owner unknown"
