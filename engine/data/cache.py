"""On-disk cache of decoded datasets (uint8 tensors), so a second load takes a moment.

Entries are written with ``torch.save`` and read back with ``weights_only=True``:
a cache file is data, never code, even if someone replaced it. A file that
fails to load or validate is deleted and rebuilt, never trusted.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)

APP_NAME = "fewshot-labeler"
CACHE_ENV = "FEWSHOT_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$FEWSHOT_CACHE_DIR`` if set (e.g. a bigger disk), else the platform's user cache."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    from platformdirs import user_cache_dir
    return Path(user_cache_dir(APP_NAME))


def cache_key(fields: dict[str, Any]) -> str:
    """A file-name-safe digest of everything that determines the cached content."""
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


class TensorCache:
    """A folder of ``<key>.pt`` files holding dicts of tensors, strings and numbers."""

    def __init__(self, folder: str | Path | None = None, namespace: str = "datasets"):
        self.folder = Path(folder) if folder is not None else default_cache_dir() / namespace

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.pt"

    def load(self, key: str, validate: Callable[[dict], bool]) -> dict | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            ok = isinstance(obj, dict) and validate(obj)
        except Exception as e:  # any failure means the entry is unusable, whatever broke it
            log.warning("dataset cache %s is unreadable (%s); rebuilding it", path, e)
            ok = False
        if not ok:
            log.warning("dataset cache %s is invalid; rebuilding it", path)
            path.unlink(missing_ok=True)
            return None
        return obj

    def save(self, key: str, obj: dict) -> None:
        """Write atomically, so a crash or a second process never leaves half a file."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.folder)
            try:
                with os.fdopen(fd, "wb") as fh:
                    torch.save(obj, fh)
                os.replace(tmp, self.path(key))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:  # a read-only or full disk costs speed, not the load
            log.warning("cannot write dataset cache in %s (%s); the next load will decode again", self.folder, e)
