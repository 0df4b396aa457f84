"""The results grid's model: every project image, read page by page on demand.

Rows are fetched in pages of ``PAGE`` only when the view asks for them (the
view asks only for visible tiles), and a bounded number of pages is kept, so
20,000 images cost a few pages of records, not 20,000 objects.

Reads never happen on the main thread: the store serialises every call under
one lock, and while the worker commits a batch (an fsync, 50-250 ms on a busy
disk) a read on the main thread would freeze the window. ``fetch(read, done)``
(given by the main window) runs ``read`` in the project-reader thread and calls
``done`` back on the main thread. Until a page arrives its tiles paint as
placeholders; after a refresh the old page keeps being shown until the new one
is in, so tiles update in place instead of flickering.
"""
from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractListModel, QMimeData, QModelIndex, QPersistentModelIndex, Qt, QUrl, Signal

log = logging.getLogger(__name__)

Fetch = Callable[[Callable[[], Any], Callable[[Any], None]], None]

PAGE = 200
MAX_PAGES = 40
IDS_MIME = "application/x-fewshot-image-ids"
RecordRole = Qt.ItemDataRole.UserRole + 1
IdRole = Qt.ItemDataRole.UserRole + 2

# (label in the status box, store status)
STATUSES = (("All images", None), ("Predicted", "predicted"), ("Confirmed", "confirmed"),
            ("Not labeled yet", "unlabeled"), ("Unreadable", "error"))


class ResultsModel(QAbstractListModel):
    # Any row may have changed (a refresh is on its way): views repaint what they show,
    # which asks again for those pages. Not dataChanged over every row: for that a
    # QListView in icon mode walks all its items, 20 ms per refresh at 20,000 images.
    rows_stale = Signal()

    def __init__(self, fetch: Fetch, parent=None):
        super().__init__(parent)
        self.fetch = fetch
        self.project: Any = None
        self.class_id: int | None = None
        self.status: str | None = None
        self.flag: str | None = None  # a score name: only images flagged by it
        self.hide_confirmed = False
        self.sort = "name"
        self.descending = False
        self._count = 0
        self._pages: OrderedDict[int, list] = OrderedDict()
        self._stale: set[int] = set()
        self._requested: set[int] = set()
        # Bumped whenever what the rows mean changes (project, filter, sort) or the
        # project changed: replies to older requests are dropped.
        self._generation = 0
        # Predictions computed but not yet written (fewshot_gui/fresh_view.py): records are
        # shown through this, each page patched once, when first read.
        self._patch: Callable[[Any], Any] | None = None
        self._patched: set[int] = set()

    # ------------------------------------------------------------ configuration

    def set_project(self, project: Any) -> None:
        self.beginResetModel()
        self.project = project
        self._generation += 1
        self._pages.clear()
        self._stale.clear()
        self._requested.clear()
        self._patched.clear()
        self._count = 0
        self.endResetModel()
        self._request_count()

    def set_filter(self, class_id: int | None, status: str | None, flag: str | None = None,
                   hide_confirmed: bool = False) -> None:
        if (class_id, status, flag, hide_confirmed) != (self.class_id, self.status, self.flag, self.hide_confirmed):
            self.class_id, self.status, self.flag, self.hide_confirmed = class_id, status, flag, hide_confirmed
            self.set_project(self.project)

    def set_sort(self, sort: str, descending: bool) -> None:
        if (sort, descending) != (self.sort, self.descending):
            self.sort, self.descending = sort, descending
            self.set_project(self.project)

    def filters(self) -> dict[str, Any]:
        """The filter as ``Project.query``/``count`` keywords."""
        return {"class_id": self.class_id, "status": self.status, "flag": self.flag,
                "hide_confirmed": self.hide_confirmed}

    def refresh(self) -> None:
        """Re-read after the project changed, keeping rows (and so selection and
        scroll position) where the count allows: tiles fill in as batches land."""
        if self.project is None:
            return
        self._generation += 1
        self._stale = set(self._pages)
        self._requested.clear()
        self._request_count()

    def show_fresh(self, patch: Callable[[Any], Any] | None) -> None:
        """Show every record through ``patch`` (None again: records as read; pages patched
        already stay so until the window re-reads them). The views repaint what they show,
        so only the pages on screen are patched now."""
        self._patch = patch
        self._patched.clear()
        if patch is not None and self._pages:
            self.rows_stale.emit()

    @property
    def loading(self) -> bool:
        return bool(self._requested) or bool(self._stale & set(self._pages))

    # ------------------------------------------------------------ reads (in the reader thread)

    def _request_count(self) -> None:
        project, gen = self.project, self._generation
        if project is None:
            return
        filters = self.filters()
        self.fetch(lambda: project.count(**filters), lambda n: self._count_arrived(gen, n))

    def _count_arrived(self, gen: int, new: int) -> None:
        if gen != self._generation or not isinstance(new, int):
            return
        old = self._count
        if new > old:
            self.beginInsertRows(QModelIndex(), old, new - 1)
            self._count = new
            self.endInsertRows()
        elif new < old:
            self.beginRemoveRows(QModelIndex(), new, old - 1)
            self._count = new
            self.endRemoveRows()
        # Pages past the end would never be asked for again, so they would stay stale
        # (and the grid "loading") for ever after the rows under them went.
        for number in [n for n in self._pages if n * PAGE >= self._count]:
            del self._pages[number]
            self._stale.discard(number)
        if self._count:
            self.rows_stale.emit()

    def _request_page(self, number: int) -> None:
        if number in self._requested or self.project is None:
            return
        self._requested.add(number)
        project, gen = self.project, self._generation
        args = dict(**self.filters(), sort=self.sort, descending=self.descending,
                    offset=number * PAGE, limit=PAGE)
        self.fetch(lambda: project.query(**args), lambda page: self._page_arrived(gen, number, page))

    def _page_arrived(self, gen: int, number: int, page: Any) -> None:
        if gen != self._generation:
            return
        self._requested.discard(number)
        self._stale.discard(number)
        self._pages[number] = list(page or [])
        self._patched.discard(number)
        self._pages.move_to_end(number)
        while len(self._pages) > MAX_PAGES:
            self._pages.popitem(last=False)
        first, last = number * PAGE, min(self._count, (number + 1) * PAGE) - 1
        if last >= first:
            self.dataChanged.emit(self.index(first), self.index(last))

    def record(self, row: int) -> Any:
        """The record at ``row`` if its page is in (asking for it otherwise), else None."""
        if self.project is None or not 0 <= row < self._count:
            return None
        number = row // PAGE
        page = self._pages.get(number)
        if page is None or number in self._stale:
            self._request_page(number)
        if page is None:
            return None
        if self._patch is not None and number not in self._patched:
            page[:] = [self._patch(r) for r in page]
            self._patched.add(number)
        i = row % PAGE
        return page[i] if i < len(page) else None

    # ------------------------------------------------------------ Qt model

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else self._count

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        rec = self.record(index.row())
        if rec is None:
            return None
        if role == RecordRole:
            return rec
        if role == IdRole:
            return rec.id
        if role == Qt.ItemDataRole.DisplayRole:
            return Path(rec.path).name
        if role == Qt.ItemDataRole.ToolTipRole:
            return rec.path if rec.error is None else f"{rec.path}\n{rec.error}"
        return None

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        base = super().flags(index)
        return base | Qt.ItemFlag.ItemIsDragEnabled if index.isValid() else base

    def mimeTypes(self) -> list[str]:
        return [IDS_MIME, "text/uri-list"]

    def mimeData(self, indexes) -> QMimeData:
        """Images dragged from the grid carry their ids (a drop on a class makes them
        examples without rescanning) and their files (for other applications)."""
        records = [r for r in (self.record(i.row()) for i in indexes) if r is not None]
        mime = QMimeData()
        mime.setData(IDS_MIME, json.dumps([r.id for r in records]).encode())
        mime.setUrls([QUrl.fromLocalFile(r.path) for r in records])
        return mime

    def supportedDragActions(self) -> Qt.DropAction:
        return Qt.DropAction.CopyAction
