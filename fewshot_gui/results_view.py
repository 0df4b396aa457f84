"""The results grid: a virtualised QListView whose tiles are painted by a delegate.

No widget per image: the delegate paints each visible tile from its record
(thumbnail, class colour, confidence, uncertainty badge), so the grid costs the
same with 20 images or 20,000.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import QModelIndex, QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QAbstractItemView, QListView, QStyle, QStyledItemDelegate, QStyleOptionViewItem

from fewshot_gui.results_model import RecordRole
from fewshot_gui.thumbnails import ThumbnailLoader

THUMB = 112
TILE = QSize(THUMB + 20, THUMB + 44)
# Below this confidence a prediction gets the "?" badge: the top class is less
# likely than all the others together, or barely more so.
UNCERTAIN_CONFIDENCE = 0.6


def is_uncertain(rec: Any) -> bool:
    return rec.status == "predicted" and rec.confidence is not None and rec.confidence < UNCERTAIN_CONFIDENCE


class TileDelegate(QStyledItemDelegate):
    def __init__(self, loader: ThumbnailLoader, parent=None):
        super().__init__(parent)
        self.loader = loader
        self.classes: dict[int, Any] = {}  # id -> ClassInfo

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        return TILE

    def paint(self, p: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        rec = index.data(RecordRole)
        r = option.rect.adjusted(4, 4, -4, -4)
        pal = option.palette
        p.save()
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        cls = self.classes.get(rec.label_class_id) if rec is not None and rec.label_class_id is not None else None
        color = QColor(cls.color) if cls is not None else QColor(pal.mid().color())
        frame = QPainterPath()
        frame.addRoundedRect(r, 8, 8)
        p.fillPath(frame, pal.highlight().color().lighter(170) if selected else pal.base().color())
        if cls is not None:
            # Confirmed labels get a solid frame; the model's guesses a thinner, paler one.
            confirmed = rec.status == "confirmed"
            pen_color = QColor(color)
            if not confirmed:
                pen_color.setAlpha(150)
            p.setPen(QPen(pen_color, 4 if confirmed else 2))
        else:
            p.setPen(QPen(pal.highlight().color() if selected else pal.mid().color(), 2 if selected else 1))
        p.drawPath(frame)
        if selected:
            p.setPen(QPen(pal.highlight().color(), 2, Qt.PenStyle.DashLine))
            p.drawRoundedRect(r.adjusted(-2, -2, 2, 2), 9, 9)

        thumb_rect = QRect(r.left() + (r.width() - THUMB) // 2, r.top() + 6, THUMB, THUMB)
        if rec is not None:
            pm = self.loader.pixmap(rec.path, THUMB)
            if pm is not None:
                size = pm.size().scaled(thumb_rect.size(), Qt.AspectRatioMode.KeepAspectRatio)
                target = QRect(QPoint(0, 0), size)
                target.moveCenter(thumb_rect.center())
                p.drawPixmap(target, pm)
            else:
                p.fillRect(thumb_rect, pal.alternateBase().color())
                if rec.error is not None or self.loader.failed(rec.path):
                    p.setPen(pal.text().color())
                    p.drawText(thumb_rect, Qt.AlignmentFlag.AlignCenter, "cannot\nshow")
        self._paint_caption(p, rec, cls, color, QRect(r.left() + 6, thumb_rect.bottom() + 4, r.width() - 12, 26),
                            option)
        if rec is not None:
            self._paint_badge(p, rec, QRect(r.right() - 24, r.top() + 4, 20, 20))
        p.restore()

    def _paint_caption(self, p: QPainter, rec: Any, cls: Any, color: QColor, rect: QRect,
                       option: QStyleOptionViewItem) -> None:
        pal = option.palette
        if rec is None:
            return
        font = QFont(option.font)
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.9))
        p.setFont(font)
        if cls is not None:
            p.setBrush(color)
            p.setPen(Qt.PenStyle.NoPen)
            p.drawEllipse(QRect(rect.left(), rect.center().y() - 5, 10, 10))
            text_rect = rect.adjusted(14, 0, 0, 0)
            conf = "" if rec.confidence is None or rec.status == "confirmed" else f"{rec.confidence:.0%}"
            p.setPen(pal.text().color())
            name_w = text_rect.width() - (p.fontMetrics().horizontalAdvance(conf) + 6 if conf else 0)
            p.drawText(QRect(text_rect.left(), text_rect.top(), name_w, text_rect.height()),
                       Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                       p.fontMetrics().elidedText(cls.name, Qt.TextElideMode.ElideRight, name_w))
            if conf:
                p.setPen(pal.placeholderText().color())
                p.drawText(text_rect, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, conf)
        else:
            text = {"error": "unreadable", "unlabeled": "not labeled yet"}.get(rec.status, "none of these")
            p.setPen(pal.placeholderText().color())
            p.drawText(rect, Qt.AlignmentFlag.AlignCenter,
                       p.fontMetrics().elidedText(text, Qt.TextElideMode.ElideRight, rect.width()))

    def _paint_badge(self, p: QPainter, rec: Any, rect: QRect) -> None:
        if rec.status == "error":
            fill, mark = QColor("#d62728"), "!"
        elif rec.status == "confirmed":
            fill, mark = QColor("#2ca02c"), "\u2713"
        elif is_uncertain(rec):
            fill, mark = QColor("#f0a30a"), "?"
        else:
            return
        p.setPen(QPen(QColor("white"), 1.5))
        p.setBrush(fill)
        p.drawEllipse(rect)
        font = p.font()
        font.setBold(True)
        p.setFont(font)
        p.drawText(rect, Qt.AlignmentFlag.AlignCenter, mark)


class ResultsView(QListView):
    """The grid. Emits ``current_changed(image_id)``; drags carry image ids."""

    current_changed = Signal(object)  # image id or None

    def __init__(self, loader: ThumbnailLoader, parent=None):
        super().__init__(parent)
        self.loader = loader
        self.delegate = TileDelegate(loader, self)
        self.setItemDelegate(self.delegate)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setUniformItemSizes(True)  # lets the view lay out 20,000 tiles without asking each
        self.setLayoutMode(QListView.LayoutMode.Batched)
        self.setBatchSize(500)
        self.setGridSize(TILE)
        self.setSpacing(0)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setDragEnabled(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.setDefaultDropAction(Qt.DropAction.CopyAction)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setWordWrap(False)
        loader.ready.connect(self._thumbnail_ready)

    def setModel(self, model) -> None:  # noqa: N802 - Qt override
        super().setModel(model)
        self.selectionModel().currentChanged.connect(self._on_current)
        model.dataChanged.connect(self._current_loaded)
        self._current_id: int | None = None

    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        rec = current.data(RecordRole) if current.isValid() else None
        self._current_id = rec.id if rec is not None else None
        self.current_changed.emit(self._current_id)

    def _current_loaded(self, first: QModelIndex, last: QModelIndex) -> None:
        # The current tile's page may arrive after it became current (keyboard moves
        # reach tiles not painted yet): announce it once its record is in.
        current = self.currentIndex()
        if current.isValid() and first.row() <= current.row() <= last.row():
            rec = current.data(RecordRole)
            if rec is not None and rec.id != self._current_id:
                self._current_id = rec.id
                self.current_changed.emit(rec.id)

    def selected_ids(self) -> list[int]:
        ids = []
        for index in sorted(self.selectionModel().selectedIndexes(), key=lambda i: i.row()):
            rec = index.data(RecordRole)
            if rec is not None:
                ids.append(rec.id)
        return ids

    def _thumbnail_ready(self, path: str) -> None:
        # Repaint only what is on screen; a tile scrolled away is repainted when it comes back.
        self.viewport().update()
