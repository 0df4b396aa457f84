"""Typed errors for everything a user can cause.

Every message says what went wrong *and* what to do about it; the CLI prints
``str(error)`` and exits non-zero, the GUI shows it in a dialog.
"""
from __future__ import annotations

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
