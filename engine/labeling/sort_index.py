"""An in-memory index of each image's status, class and uncertainties, for sorted pages.

Why not SQLite indexes: one index per (filter, uncertainty) pair is 15 indexes whose
keys change with every prediction, and on a 100,000-image project each prediction
batch then rewrites thousands of scattered pages (measured: about 3,000 predictions
written per second, and 1.2 s to store a relabel of 10,000 images). Instead this
keeps the few numbers per image in NumPy arrays indexed by image id (about 50
bytes an image), sorts the filtered subset on demand (about 10 ms for 100,000
images) and caches each order until the next write.

Only this process writes the project (lock.py), so updating the arrays from the
rows each committed transaction touched keeps them exact. Loading them costs about
0.3 s per 100,000 images (turning SQLite rows into Python objects), so a thread
with its own read-only connection loads them as the project opens; rows committed
meanwhile are read again when the load is taken up. A sorted query that comes
before the load is done waits for it.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Iterable

import numpy as np

from engine.labeling.schema import METRIC_COLUMNS, STATUSES
from engine.methods import uncertainty

log = logging.getLogger(__name__)

_STATUS_CODE = {s: i for i, s in enumerate(STATUSES)}
_NO_CLASS = -1
_IN_CHUNK = 500
_SELECT = ("SELECT id, CASE status " + " ".join(f"WHEN '{s}' THEN {i}" for s, i in _STATUS_CODE.items())
           + " END, ifnull(label_class_id, -1), "
           # 9e999 reads as +inf: a missing value (the store never writes +inf, see store._opt);
           # all-number rows convert to NumPy twice as fast as rows holding 'nan' strings.
           + ", ".join(f"ifnull({c}, 9e999)" for c in METRIC_COLUMNS) + " FROM images")
_WIDTH = 3 + len(METRIC_COLUMNS)


class SortIndex:
    """Sorted image ids for a filter and an uncertainty column; see the module doc."""

    def __init__(self) -> None:
        self._loaded = False
        self._present = np.zeros(0, dtype=bool)
        self._status = np.zeros(0, dtype=np.int8)
        self._class = np.zeros(0, dtype=np.int64)
        self._metrics = np.zeros((0, len(METRIC_COLUMNS)), dtype=np.float64)
        self._orders: dict[tuple, np.ndarray] = {}
        # Background load: the thread, its connection and result, and what changed meanwhile.
        self._loader: threading.Thread | None = None
        self._loader_conn: sqlite3.Connection | None = None
        self._loader_table: np.ndarray | None = None
        self._pending: set[int] = set()
        self._pending_all = False

    def warm_up(self, path: Path) -> None:
        """Start loading the arrays from ``path`` in a background thread."""
        self._pending, self._pending_all, self._loader_table = set(), False, None

        def load() -> None:
            try:
                conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, check_same_thread=False)
                self._loader_conn = conn
                try:
                    self._loader_table = _fetch(conn)
                finally:
                    self._loader_conn = None
                    conn.close()
            except sqlite3.Error as e:  # interrupted by close(), or unreadable: load on demand instead
                log.debug("sort index not preloaded: %s", e)

        self._loader = threading.Thread(target=load, name="sort-index-load", daemon=True)
        self._loader.start()

    def close(self) -> None:
        loader, self._loader = self._loader, None
        if loader is not None:
            conn = self._loader_conn
            if conn is not None:
                try:
                    conn.interrupt()
                except sqlite3.Error:
                    pass
            loader.join()

    def order(self, conn: sqlite3.Connection, column: str, class_id: int | None, status: str | None,
              descending: bool, flag: str | None = None, hide_confirmed: bool = False) -> np.ndarray:
        """Ids of the images passing the filter, by ``column`` (ties by id, in the same
        direction), then those without a value, by id. ``flag``: only images past that
        score's threshold (engine.methods.uncertainty)."""
        key = (column, class_id, status, descending, flag, hide_confirmed)
        if key not in self._orders:
            if not self._loaded:
                self._load(conn)
            mask = self._present.copy()
            if status is not None:
                mask &= self._status == _STATUS_CODE[status]
            if class_id is not None:
                mask &= self._class == class_id
            if hide_confirmed:
                mask &= self._status != _STATUS_CODE["confirmed"]
            if flag is not None:
                score = uncertainty.score(flag)
                values = self._metrics[:, METRIC_COLUMNS.index(score.name)]
                with np.errstate(invalid="ignore"):
                    mask &= values > score.flag if score.descending else values < score.flag
            ids = np.flatnonzero(mask)
            values = self._metrics[ids, METRIC_COLUMNS.index(column)]
            valued = ~np.isnan(values)
            ranked = ids[valued][np.argsort(values[valued], kind="stable")]  # stable: ties stay in id order
            if descending:
                ranked = ranked[::-1]
            self._orders[key] = np.concatenate([ranked, ids[~valued]])
        return self._orders[key]

    def update(self, conn: sqlite3.Connection, image_ids: Iterable[int] | None) -> None:
        """Re-read the rows of ``image_ids`` (None: all) after a commit."""
        self._orders.clear()
        if self._loader is not None:  # the background load may predate this commit
            if image_ids is None:
                self._pending_all = True
            else:
                self._pending.update(image_ids)
            return
        if not self._loaded:
            return
        if image_ids is None:
            self._loaded = False
            return
        ids = sorted(set(image_ids))
        known = np.array([i for i in ids if i < len(self._present)], dtype=np.int64)
        self._present[known] = False  # removed images are not read back; the rest are, below
        for start in range(0, len(ids), _IN_CHUNK):
            part = ids[start:start + _IN_CHUNK]
            self._store(_fetch(conn, f" WHERE id IN ({','.join('?' * len(part))})", part))

    def invalidate(self) -> None:
        self._loaded = False
        self._orders.clear()
        if self._loader is not None:
            self._pending_all = True

    def _load(self, conn: sqlite3.Connection) -> None:
        table = None
        if self._loader is not None:
            self._loader.join()
            self._loader = None
            table = None if self._pending_all else self._loader_table
            self._loader_table = None
        self._install(table if table is not None else _fetch(conn))
        self._loaded = True
        if table is not None and self._pending:
            self.update(conn, self._pending)
        self._pending = set()

    def _install(self, table: np.ndarray) -> None:
        size = int(table[:, 0].max()) + 1 if len(table) else 0
        self._present = np.zeros(size, dtype=bool)
        self._status = np.zeros(size, dtype=np.int8)
        self._class = np.full(size, _NO_CLASS, dtype=np.int64)
        self._metrics = np.full((size, len(METRIC_COLUMNS)), np.nan)
        self._store(table)

    def _store(self, table: np.ndarray) -> None:
        if not len(table):
            return
        ids = table[:, 0].astype(np.int64)
        need = int(ids.max()) + 1
        if need > len(self._present):
            grow = max(need, 2 * len(self._present))
            self._present = np.concatenate([self._present, np.zeros(grow - len(self._present), dtype=bool)])
            self._status = np.concatenate([self._status, np.zeros(grow - len(self._status), dtype=np.int8)])
            self._class = np.concatenate([self._class, np.full(grow - len(self._class), _NO_CLASS, dtype=np.int64)])
            self._metrics = np.concatenate([self._metrics, np.full((grow - len(self._metrics),
                                                                    len(METRIC_COLUMNS)), np.nan)])
        self._present[ids] = True
        self._status[ids] = table[:, 1].astype(np.int8)
        self._class[ids] = table[:, 2].astype(np.int64)
        metrics = table[:, 3:]
        self._metrics[ids] = np.where(np.isposinf(metrics), np.nan, metrics)


def _fetch(conn: sqlite3.Connection, where: str = "", params: list | tuple = ()) -> np.ndarray:
    rows = conn.execute(_SELECT + where, params).fetchall()
    return np.array(rows, dtype=np.float64).reshape(-1, _WIDTH)
