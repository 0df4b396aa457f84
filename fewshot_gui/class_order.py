"""Reordering classes by dragging their cards.

A card drag carries its own MIME type, so it can never be taken for a file drop
(which adds examples) or for tiles dragged from the grid (image ids). The list
of cards draws a line where the card would land and, on drop, reports the new
order. Drags over a card are handed to the list by the card itself, in the
list's coordinates: Qt passes an ignored drag-enter on to the parent but not
always its position mapped. The payload names this process and this panel: a
card dragged in from another window of the app (another project) is refused.
"""
from __future__ import annotations

import json
import os
from typing import Any

from PySide6.QtCore import QMimeData, QPoint, Qt, Signal
from PySide6.QtGui import QColor, QDragEnterEvent, QDragMoveEvent, QDropEvent, QPainter, QPen
from PySide6.QtWidgets import QWidget

CLASS_MIME = "application/x-fewshot-class-card"


def class_drag_mime(panel: QWidget, class_id: int) -> QMimeData:
    mime = QMimeData()
    mime.setData(CLASS_MIME, json.dumps({"pid": os.getpid(), "panel": id(panel), "class": class_id}).encode())
    return mime


def dragged_class(mime: QMimeData, panel: QWidget) -> int | None:
    """The class id a card drag from ``panel`` carries; None for anything else."""
    if not mime.hasFormat(CLASS_MIME):
        return None
    try:
        data = json.loads(bytes(mime.data(CLASS_MIME).data()).decode())
        if data["pid"] != os.getpid() or data["panel"] != id(panel):
            return None
        return int(data["class"])
    except (ValueError, TypeError, KeyError):
        return None


def moved(order: list[int], class_id: int, slot: int) -> list[int]:
    """``order`` with ``class_id`` put at gap ``slot`` (0: before the first card,
    len(order): after the last), gaps counted in the order before the move."""
    i = order.index(class_id)
    out = order[:i] + order[i + 1:]
    out.insert(slot - 1 if slot > i else slot, class_id)
    return out


class ClassList(QWidget):
    """The column the cards sit in; takes card drags and reports where they were dropped."""

    card_dropped = Signal(int, int)  # class id, gap (see :func:`moved`)
    folders_dropped = Signal(list)  # folders dropped between the cards: trees of class sub-folders

    def __init__(self, owner: QWidget, parent=None):
        super().__init__(parent)
        self.owner = owner  # the panel whose cards these are (drags name it)
        self.cards: list[QWidget] = []  # in display order, kept by the panel
        self._gap: int | None = None
        self.setAcceptDrops(True)

    def gap_at(self, pos: QPoint) -> int:
        """The gap between cards nearest to ``pos``: a card's upper half means before it."""
        for i, card in enumerate(self.cards):
            if pos.y() < card.geometry().center().y():
                return i
        return len(self.cards)

    def _gap_y(self, gap: int) -> int:
        spacing = max(self.layout().spacing(), 0) if self.layout() is not None else 0
        if not self.cards:
            return 0
        if gap < len(self.cards):
            return self.cards[gap].geometry().top() - spacing // 2 - 1
        return self.cards[-1].geometry().bottom() + spacing // 2 + 1

    def track(self, event: QDragMoveEvent, pos: QPoint) -> bool:
        """A drag-enter or -move at ``pos`` (this widget's coordinates): accepts card
        drags and moves the drop line; returns whether it was a card drag."""
        if dragged_class(event.mimeData(), self.owner) is None:
            return False
        event.setDropAction(Qt.DropAction.MoveAction)
        event.accept()
        gap = self.gap_at(pos)
        if gap != self._gap:
            self._gap = gap
            self.update()
        return True

    def drop(self, event: QDropEvent, pos: QPoint) -> bool:
        """A drop at ``pos``: reports a card drop (and returns True), else leaves it."""
        self.clear_line()
        class_id = dragged_class(event.mimeData(), self.owner)
        if class_id is None:
            return False
        event.setDropAction(Qt.DropAction.MoveAction)
        event.accept()
        self.card_dropped.emit(class_id, self.gap_at(pos))
        return True

    def clear_line(self) -> None:
        if self._gap is not None:
            self._gap = None
            self.update()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        if _folders(event.mimeData()):
            event.acceptProposedAction()
        elif not self.track(event, event.position().toPoint()):
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802 - Qt override
        if _folders(event.mimeData()):
            event.acceptProposedAction()
        elif not self.track(event, event.position().toPoint()):
            event.ignore()

    def dragLeaveEvent(self, _event) -> None:  # noqa: N802 - Qt override
        self.clear_line()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        folders = _folders(event.mimeData())
        if folders:
            event.acceptProposedAction()
            self.folders_dropped.emit(folders)
        elif not self.drop(event, event.position().toPoint()):
            event.ignore()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().paintEvent(event)
        if self._gap is None or not self.cards:
            return
        p = QPainter(self)
        p.setPen(QPen(QColor(self.palette().highlight().color()), 3, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
        y = self._gap_y(self._gap)
        p.drawLine(4, y, self.width() - 4, y)


def _folders(mime: QMimeData) -> list[str]:
    """Local folders a drop from the file manager carries (a card takes files; the list
    between the cards takes folders of class sub-folders)."""
    if mime.hasFormat(CLASS_MIME) or not mime.hasUrls():
        return []
    return [u.toLocalFile() for u in mime.urls() if u.isLocalFile() and os.path.isdir(u.toLocalFile())]


def drag_pixmap(card: Any):
    """A half-size picture of the card under the pointer while it is dragged."""
    pm = card.grab()
    return pm.scaledToWidth(max(1, pm.width() // 2), Qt.TransformationMode.SmoothTransformation)
