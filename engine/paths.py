"""Checks on paths the user names on the command line (no torch here: `fewshot predict` uses them)."""
from __future__ import annotations

from pathlib import Path

from engine.errors import FewShotError


def check_new_output(path: Path, option: str) -> None:
    """``path`` (given as ``option``) must not exist yet and its folder must: outputs never
    replace a file silently."""
    if path.exists():
        raise FewShotError(f"{option} {path} already exists; choose another file name or remove it")
    if not path.absolute().parent.is_dir():
        raise FewShotError(f"{option}: folder {path.absolute().parent} does not exist; create it first")
