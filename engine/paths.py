"""Paths the user names for outputs (no torch here: `fewshot predict` and the app's main thread use them)."""
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


def export_target(out: str | Path, bundle: bool) -> Path:
    """Where a model export goes: ``out``, with a ``.zip`` suffix for a bundle that lacks one."""
    path = Path(out)
    if bundle and path.suffix.lower() != ".zip":
        path = path.with_suffix(".zip") if path.suffix else path.with_name(path.name + ".zip")
    return path


DATA_ENV = "FEWSHOT_DATA_DIR"


def default_data_dir() -> Path:
    """``$FEWSHOT_DATA_DIR`` if set, else the platform's user data folder (project backups live there)."""
    import os
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    from platformdirs import user_data_dir
    return Path(user_data_dir("fewshot-labeler"))
