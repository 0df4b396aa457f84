"""Small JSON files the engine keeps for the user (settings, measured choices): read as a
dict whatever state they are in, written whole so that a crash never leaves half a file."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def read_json_dict(path: Path) -> dict[str, Any]:
    """The file's object, or {} when it is missing, unreadable or not an object (a damaged
    file is then rewritten by the next write)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable %s (%s)", path, e)
        return {}
    return data if isinstance(data, dict) else {}


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to a temporary file beside ``path``, then move it over ``path``.
    Raises OSError when that fails (the temporary file is removed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
