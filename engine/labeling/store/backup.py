"""A copy of what people did in a project, kept where a damaged disk sector cannot reach it.

When a project closes after a person changed something (or has no backup yet), the
classes, images, examples, human labels, undo history, label history, models and
settings are copied to a backup file in the user data folder. Predictions and
embeddings are left out: they are recomputed from the rest, and embeddings can be
most of a project's size. The backup is itself a project file: ``fewshot check
--restore-backup`` moves a damaged project aside and puts the backup in its place,
and labeling it again fills the predictions back in.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import time
from pathlib import Path

from engine.labeling import schema
from engine.labeling.store.status import SUMMARY_COLUMNS, status_sql
from engine.paths import default_data_dir

log = logging.getLogger(__name__)

KEPT_TABLES = ("settings", "classes", "images", "examples", "labels", "models", "history", "label_events")


def backup_file(project_path: Path) -> Path:
    """Where the backup of the project at ``project_path`` lives (one per project path)."""
    resolved = str(Path(project_path).resolve())
    digest = hashlib.sha1(resolved.encode()).hexdigest()[:12]
    return default_data_dir() / "backups" / f"{Path(project_path).stem}-{digest}.fewshot"


def describe_backup(path: Path) -> str:
    """When the backup was written (the project's last close), as local time."""
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))
    except OSError:
        return "at an unknown time"


def write_backup(conn: sqlite3.Connection, project_path: Path) -> Path | None:
    """Copy the people's part of the project open on ``conn`` to :func:`backup_file`.
    A failure only costs the backup (logged), never the project."""
    target = backup_file(project_path)
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        fresh = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            schema.check_and_migrate(fresh, tmp)
        finally:
            fresh.close()
        conn.execute("ATTACH DATABASE ? AS backup", (str(tmp),))
        try:
            conn.execute("BEGIN")
            for table in KEPT_TABLES:
                cols = [r[1] for r in conn.execute(f"PRAGMA main.table_info({table})")]
                have = {r[1] for r in conn.execute(f"PRAGMA backup.table_info({table})")}
                names = ", ".join(c for c in cols if c in have)
                where = " WHERE source = 'human'" if table == "labels" else ""
                conn.execute(f"INSERT INTO backup.{table}({names}) SELECT {names} FROM main.{table}{where}")
            # No predictions in the backup: each image's summary is what people said, no more.
            status = status_sql(error="error", human="label_source = 'human'", predicted="0")
            conn.execute(
                "UPDATE backup.images SET predicted_class_id = NULL, "
                + ", ".join(f"{c} = NULL" for c in SUMMARY_COLUMNS) + ", "
                "(label_class_id, label_source) = (SELECT class_id, source FROM backup.labels l "
                "WHERE l.image_id = images.id), "
                f"status = {status}")
            conn.execute("DELETE FROM backup.settings WHERE key IN ('current_model', 'opened_by')")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.execute("DETACH DATABASE backup")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        return target
    except (OSError, sqlite3.Error) as e:
        log.warning("could not write the backup of %s to %s: %s", project_path, target, e)
        return None
    finally:
        tmp.unlink(missing_ok=True)


def restore_backup(project_path: Path) -> Path:
    """Move the project aside (``<name>.damaged-<time>``) and copy its backup into its place;
    returns where the damaged file went."""
    from engine.errors import ProjectError
    project_path = Path(project_path).absolute()
    backup = backup_file(project_path)
    if not backup.is_file():
        raise ProjectError(f"no backup of {project_path} was kept (it is written when a project closes); "
                           "see 'fewshot check --help' for other ways to recover")
    aside = project_path.with_name(f"{project_path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    tmp = project_path.with_name(f".{project_path.name}.restore.tmp")
    try:
        with open(backup, "rb") as src, open(tmp, "xb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
            dst.flush()
            os.fsync(dst.fileno())
        if project_path.exists():
            os.replace(project_path, aside)
        for suffix in ("-wal", "-shm"):
            extra = project_path.with_name(project_path.name + suffix)
            if extra.exists():
                os.replace(extra, aside.with_name(aside.name + suffix))
        os.replace(tmp, project_path)
    except OSError as e:
        from engine.labeling.lock import file_error
        raise file_error(project_path, e, "restore") from None
    finally:
        tmp.unlink(missing_ok=True)
    return aside
