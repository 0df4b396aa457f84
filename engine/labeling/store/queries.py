"""Reading a project: pages of the grid (filtered, sorted), counts, every image in turn."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from engine.errors import ProjectError
from engine.labeling import schema
from engine.labeling.records import ImageRecord
from engine.methods import uncertainty
from engine.labeling.store.base import IN_CHUNK, locked
from engine.labeling.store.status import IMAGE_COLUMNS, record_of


class QueriesPart:
    @locked
    def query(self, *, class_id: int | None = None, status: str | None = None, sort: str = "name",
              descending: bool = False, offset: int = 0, limit: int = 100, flag: str | None = None,
              hide_confirmed: bool = False) -> list[ImageRecord]:
        """One page of images. Filters: ``class_id`` (current label, human or model),
        ``status`` and ``flag`` (a score's name: only images past its threshold in
        engine.methods.uncertainty, e.g. ``margin`` for close calls), ``hide_confirmed``
        (leave out images a person labelled). Sorts: name (path, ignoring case), confidence, entropy, margin,
        mutual_info, ood; ties in the sort direction by id. Images without a value for the
        sort key (no prediction, or a method without mutual information) come last
        either way, in the order added."""
        if sort not in schema.SORT_COLUMNS:
            raise ProjectError(f"unknown sort {sort!r}; use one of {', '.join(schema.SORT_COLUMNS)}")
        if offset < 0 or limit < 0:
            raise ProjectError(f"a page needs offset >= 0 and limit >= 0 (got {offset}, {limit})")
        where, params = self._filter(class_id, status, flag, hide_confirmed)
        col = schema.SORT_COLUMNS[sort]
        if col != "path":
            ids = self._sort_index.order(self._conn, col, class_id, status, descending, flag,
                                         hide_confirmed)[offset:offset + limit]
            return self._records_by_id(ids.tolist())
        d = "DESC" if descending else "ASC"
        # Name the index (schema._page_indexes): without statistics the planner may pick
        # one that matches the filter but not the order, and sort the whole filtered set.
        index = {(False, False): "images_by_name", (False, True): "images_status_name",
                 (True, False): "images_class_name", (True, True): "images_class_status_name"}[
            (class_id is not None, status is not None)]
        rows = self._conn.execute(
            f"SELECT {IMAGE_COLUMNS} FROM images INDEXED BY {index} {_where(where)} "
            f"ORDER BY path COLLATE NOCASE {d}, id {d} LIMIT ? OFFSET ?", (*params, limit, offset)).fetchall()
        return self._records(rows)

    @locked
    def count(self, *, class_id: int | None = None, status: str | None = None, flag: str | None = None,
              hide_confirmed: bool = False) -> int:
        where, params = self._filter(class_id, status, flag, hide_confirmed)
        return self._conn.execute(f"SELECT count(*) FROM images {_where(where)}", params).fetchone()[0]

    def iter_images(self, chunk: int = 1000) -> Iterator[ImageRecord]:
        """Every image in the order added, read in chunks (for exports). Images changed
        while iterating show their state at the time their chunk was read."""
        last = 0
        while True:
            with self._lock:
                self._check_open()
                rows = self._conn.execute(f"SELECT {IMAGE_COLUMNS} FROM images WHERE id > ? ORDER BY id LIMIT ?",
                                          (last, chunk)).fetchall()
                records = self._records(rows)
            if not records:
                return
            yield from records
            last = records[-1].id

    def _filter(self, class_id: int | None, status: str | None, flag: str | None = None,
                hide_confirmed: bool = False) -> tuple[list[str], list]:
        terms, params = [], []
        if hide_confirmed:
            terms.append("status != 'confirmed'")
        if flag is not None:
            try:
                terms.append(uncertainty.flag_condition(flag))
            except KeyError:
                flags = [s.name for s in uncertainty.SCORES if s.flag is not None]
                raise ProjectError(f"unknown flag {flag!r}; use one of {', '.join(flags)}") from None
        if status is not None:
            if status not in schema.STATUSES:
                raise ProjectError(f"unknown status {status!r}; use one of {', '.join(schema.STATUSES)}")
            terms.append("status = ?")
            params.append(status)
        if class_id is not None:
            terms.append("label_class_id = ?")
            params.append(class_id)
        return terms, params

    def _records_by_id(self, ids: list[int]) -> list[ImageRecord]:
        rows: dict[int, tuple] = {}
        for start in range(0, len(ids), IN_CHUNK):
            part = ids[start:start + IN_CHUNK]
            rows.update((r[0], r) for r in self._conn.execute(
                f"SELECT {IMAGE_COLUMNS} FROM images WHERE id IN ({','.join('?' * len(part))})", part))
        return self._records([rows[i] for i in ids if i in rows])

    def _records(self, rows: list[tuple]) -> list[ImageRecord]:
        probs: dict[int, dict[int, float]] = {}
        ids = [r[0] for r in rows]
        if ids:
            existing = {r[0] for r in self._conn.execute("SELECT id FROM classes")}
            for start in range(0, len(ids), IN_CHUNK):
                part = ids[start:start + IN_CHUNK]
                for image_id, p, cids in self._conn.execute(
                        f"SELECT image_id, probs, class_ids FROM predictions WHERE image_id IN "
                        f"({','.join('?' * len(part))})", part):
                    values = np.frombuffer(p, dtype=np.float32)
                    keys = np.frombuffer(cids, dtype=np.int64)
                    probs[image_id] = {int(k): float(v) for k, v in zip(keys, values) if int(k) in existing}
        return [record_of(r, probs.get(r[0])) for r in rows]



def _where(terms: list[str]) -> str:
    return "WHERE " + " AND ".join(terms) if terms else ""


