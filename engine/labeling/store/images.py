"""A project's images: scanning files into records (one per distinct content), and
marking the ones that turn out unreadable."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

from engine.errors import ProjectError
from engine.labeling.records import AddReport, ImageRecord
from engine.labeling.scan import ProgressFn, ScannedFile, collect, probe_all
from engine.labeling.store.base import IN_CHUNK, locked
from engine.labeling.store.status import IMAGE_COLUMNS

log = logging.getLogger(__name__)

_REGISTER_CHUNK = 256  # scanned files per transaction: a kill mid-scan keeps what is done


class ImagesPart:
    def add_images(self, paths: Sequence[str | Path] | str | Path, recursive: bool = True,
                   progress: ProgressFn | None = None) -> AddReport:
        """Register image files and folders (see ``scan.py``). ``progress(done, total)``
        is called while files are read. Bad files are recorded with their reason."""
        self._check_open()
        report = AddReport()
        registered, report.skipped = self._register(as_list(paths), recursive, progress)
        for f, image_id, new in registered:
            if not new:
                report.duplicates.append(f.path)
            elif f.error is not None:
                report.errors.append((f.path, f.error))
            else:
                report.added.append(image_id)
        log.info("added %d images (%d duplicates, %d bad, %d skipped)", len(report.added), len(report.duplicates),
                 len(report.errors), len(report.skipped))
        return report


    @locked
    def image(self, image_id: int) -> ImageRecord:
        row = self._conn.execute(f"SELECT {IMAGE_COLUMNS} FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise ProjectError(f"no image with id {image_id} in this project; reload the view")
        return self._records([row])[0]

    def _register(self, paths: list[str | Path], recursive: bool, progress: ProgressFn | None
                  ) -> tuple[list[tuple[ScannedFile, int, bool]], list[tuple[str, str]]]:
        """Scan ``paths`` and record every file found: (file, image id, newly recorded),
        plus the skipped entries. Reading files happens without the project lock."""
        found = collect(paths, recursive)
        out: list[tuple[ScannedFile, int, bool]] = []
        chunk: list[ScannedFile] = []
        for f in probe_all(found.paths, progress):
            chunk.append(f)
            if len(chunk) >= _REGISTER_CHUNK:
                out += self._register_chunk(chunk)
                chunk = []
        if chunk:
            out += self._register_chunk(chunk)
        return out, found.skipped

    @locked
    def _register_chunk(self, files: list[ScannedFile]) -> list[tuple[ScannedFile, int, bool]]:
        out = []
        revived = []
        with self._tx(durable=False):
            next_id = self.next_image_id()  # never an id a removed image had (removal.py)
            for f in files:
                if f.hash is not None:
                    row = self._conn.execute("SELECT id FROM images WHERE hash = ?", (f.hash,)).fetchone()
                    if row is not None:
                        out.append((f, row[0], False))
                        continue
                else:  # no content to match on: the same file reached through a link is matched by its real path
                    real = os.path.realpath(f.path)
                    row = self._conn.execute("SELECT id FROM images WHERE path = ?", (real,)).fetchone() \
                        if real != f.path else None
                    if row is not None:
                        out.append((f, row[0], False))
                        continue
                # A file that was bad when last seen (same path) gets its record replaced,
                # so fixing a file and rescanning does not leave a stale error behind.
                row = self._conn.execute("SELECT id FROM images WHERE path = ? AND error IS NOT NULL",
                                         (f.path,)).fetchone()
                values = (f.path, f.hash, f.size, f.width, f.height, f.format, f.error, time.time())
                if row is not None:
                    self._conn.execute("UPDATE images SET path = ?, hash = ?, size = ?, width = ?, height = ?, "
                                       "format = ?, error = ?, added = ? WHERE id = ?", (*values, row[0]))
                    revived.append(row[0])
                    out.append((f, row[0], True))
                else:
                    self._conn.execute(
                        "INSERT INTO images(id, path, hash, size, width, height, format, error, added, status) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (next_id, *values, "error" if f.error else "unlabeled"))
                    out.append((f, next_id, True))
                    next_id += 1
            self._touch(image_id for _, image_id, new in out if new)
            self._refresh(revived)
        return out


    @locked
    def mark_errors(self, items: Sequence[tuple[int, str]]) -> None:
        """Record images that failed to decode during labeling, with the reason. Their
        predictions go; they are left out of examples and embedding until re-added."""
        if not items:
            return
        with self._tx():
            self._conn.executemany("UPDATE images SET error = ? WHERE id = ?", [(reason, i) for i, reason in items])
            self._conn.executemany("DELETE FROM predictions WHERE image_id = ?", [(i,) for i, _ in items])
            self._refresh(i for i, _ in items)


    def _usable_ids(self, image_ids: list[int]) -> set[int]:
        usable: set[int] = set()
        for start in range(0, len(image_ids), IN_CHUNK):
            part = image_ids[start:start + IN_CHUNK]
            usable.update(r[0] for r in self._conn.execute(
                f"SELECT id FROM images WHERE error IS NULL AND id IN ({','.join('?' * len(part))})", part))
        return usable


    def _image_row(self, image_id: int) -> dict[str, str | None]:
        row = self._conn.execute("SELECT path, error FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise ProjectError(f"no image with id {image_id} in this project; reload the view")
        return {"path": row[0], "error": row[1]}



def as_list(paths: Any) -> list:
    return [paths] if isinstance(paths, (str, Path)) else list(paths)

