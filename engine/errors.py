"""Typed errors for everything a user can cause.

Every message says what went wrong *and* what to do about it; the CLI prints
``str(error)`` and exits non-zero, the GUI shows it in a dialog.
"""
from __future__ import annotations

import errno
from pathlib import Path


class FewShotError(Exception):
    """Base class of every error a user can cause (bad input, not a bug)."""


class ImageDecodeError(FewShotError):
    """An image file could not be decoded; names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


class DatasetLayoutError(FewShotError):
    """A folder or archive is not laid out the way the chosen dataset expects."""


class EpisodeError(FewShotError):
    """An episode cannot be drawn (too few classes or too few images per class)."""


class CheckpointError(FewShotError):
    """A model checkpoint is missing, incomplete or for something else."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint asks for arbitrary code to run when loaded; it was refused."""


class ModelInputError(FewShotError):
    """Images do not fit the model (wrong channels or size)."""


class ProjectError(FewShotError):
    """A labeling project cannot be created, opened or changed as asked."""


class ProjectLockedError(ProjectError):
    """The project file is open in another process (or another window of this one)."""


class EmptyProjectFileError(ProjectError):
    """The file is empty (0 bytes): not a project yet. The app asks before making it one."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        super().__init__(f"{path} is an empty file (0 bytes), not a project: start a new project in it "
                         "(the app asks), or delete it and create the project again")


class DamagedProjectError(ProjectError):
    """The project file fails SQLite's integrity check; the message says how to recover."""


class ExportError(FewShotError):
    """Labels cannot be exported as asked (target exists, bad option, unwritable folder)."""


def os_error_text(e: OSError) -> str:
    """One line for an OS error: what failed, on which file, and what to do."""
    where = f" {e.filename}" if getattr(e, "filename", None) else ""
    advice = {errno.ENOSPC: "the disk is full: free some space and run again",
              errno.EDQUOT: "the disk quota is used up: free some space and run again",
              errno.EROFS: "the disk is read-only: write somewhere else",
              errno.EACCES: "permission denied: use a folder you can write to",
              errno.EPERM: "not permitted: use a folder you can write to",
              errno.ENAMETOOLONG: "a name in the path is longer than the file system allows: use a shorter one",
              errno.ENOENT: "no such file or folder: check the path",
              errno.EIO: "the disk reported an input/output error: check the disk"}.get(e.errno)
    if advice is None:
        return f"cannot use{where[:200]} ({e.strerror or e})"
    return f"{advice}{' (' + where.strip()[:200] + ')' if where else ''}"
