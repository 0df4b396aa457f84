"""``fewshot check``: is a project file intact, and putting its backup in place when it is not.

    fewshot check --project P.fewshot [--restore-backup] [--json]

The check is SQLite's full ``integrity_check`` on a read-only connection: it writes
nothing, and runs while the app has the project open. A damaged project exits with
status 2 and an ``error:`` line that says how to recover; ``--restore-backup`` moves
the damaged file aside and puts the backup kept when it was last closed in its place
(engine/labeling/store/backup.py).
"""
from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

from engine.errors import ProjectError


def add_check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", required=True, help="project file (.fewshot)")
    p.add_argument("--restore-backup", action="store_true",
                   help="move the project aside and put its backup (written when it was last closed) in its place")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


def run_check(args: argparse.Namespace) -> int:
    from engine.labeling.store import health
    from engine.labeling.store.backup import backup_file, describe_backup, restore_backup

    path = Path(args.project).absolute()
    if not path.is_file():
        raise ProjectError(f"no project file at {path}; check the path")
    result: dict = {"project": str(path)}
    if args.restore_backup:
        result["damaged_copy"] = str(restore_backup(path))
    kind = health.identify(path)
    if kind != health.PROJECT:
        health.refuse_unless_project(path, kind)
    # A project closed cleanly has no WAL: read it as immutable, which leaves no -wal or
    # -shm file beside it. One open elsewhere has a WAL that must be read too.
    wal = path.with_name(path.name + "-wal")
    uri = f"{path.as_uri()}?mode=ro" + ("" if wal.exists() else "&immutable=1")
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=10)
        try:
            problems = health.check_integrity(conn, path, full=True)
            counts = {} if problems else {
                "images": conn.execute("SELECT count(*) FROM images").fetchone()[0],
                "classes": conn.execute("SELECT count(*) FROM classes").fetchone()[0],
                "human_labels": conn.execute("SELECT count(*) FROM labels WHERE source = 'human'").fetchone()[0]}
        finally:
            conn.close()
    except sqlite3.Error as e:
        problems = [str(e)]
    if problems:
        raise health.damaged_error(path, problems)
    backup = backup_file(path)
    result.update(counts, intact=True, backup=str(backup) if backup.is_file() else None)
    if args.json:
        print(json.dumps(result))
    else:
        if "damaged_copy" in result:
            print(f"restored {path} from its backup; the damaged file is now {result['damaged_copy']}")
        print(f"ok: {path} is intact ({counts['images']:,} images, {counts['classes']} "
              f"class{'es' if counts['classes'] != 1 else ''}, {counts['human_labels']:,} labels by people)")
        print(f"backup: {backup} (written at its last close, {describe_backup(backup)})" if backup.is_file()
              else "backup: none yet (one is written when the project is closed)")
    return 0
