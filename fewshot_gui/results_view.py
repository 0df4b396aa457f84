"""The results grid: a virtualised QListView whose tiles are painted by a delegate.

No widget per image: the delegate paints each visible tile from its record
(thumbnail, class colour, confidence, uncertainty badge), so the grid costs the
same with 20 images or 20,000.

The view paints its tiles itself, in one Python call per paint event, rather than
letting QListView call the (Python) delegate once per tile. Each call from Qt into
Python takes the GIL anew, and while the engine's threads run Python (scanning a
folder, decoding images) each take waits for them: 35 tiles meant 35 waits, and a
repaint took 100-400 ms. One call waits once.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PySide6.QtCore import QModelIndex, QPoint, QRect, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QPainter, QPaintEvent, QPen, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QListView, QStyle, QStyledItemDelegate, QStyleOptionViewItem

from fewshot_gui.plain_words import flagged
from fewshot_gui.results_model import RecordRole
from fewshot_gui.thumbnails import ThumbnailLoader

THUMB = 112
TILE = QSize(THUMB + 20, THUMB + 44)
FRAME_PAD = 3  # room around a tile's frame for its widest pen (4 px, half outside) and antialiasing
# Below this confidence a prediction gets the "?" badge: the top class is less
# likely than all the others together, or barely more so.
UNCERTAIN_CONFIDENCE = 0.6


_SHORT_REASONS = (("too large", "too large"), ("truncated", "truncated or corrupt"), ("corrupt", "corrupt"),
                  ("not an image", "not an image"), ("permission", "not allowed to read it"),
                  ("empty", "empty file"), ("not found", "file missing"), ("symbolic link", "broken link"),
                  ("regular file", "not a file"), ("NaN", "the model failed on it"))


def short_reason(error: str) -> str:
    """A few words for a tile; the whole reason is in the tooltip and the detail pane."""
    for key, words in _SHORT_REASONS:
        if key in error:
            return words
    return " ".join(error.split()[:4])


def is_uncertain(rec: Any) -> bool:
    """Worth a look: a low top probability, or (at any probability) an image the plain line
    calls none of the classes: a blank pixel read "100%" with no badge."""
    if rec.status != "predicted" or rec.confidence is None:
        return False
    return rec.confidence < UNCERTAIN_CONFIDENCE or flagged(rec, "ood_score")


class TileDelegate(QStyledItemDelegate):
    def __init__(self, loader: ThumbnailLoader, parent=None):
        super().__init__(parent)
        self.loader = loader
        self.classes: dict[int, Any] = {}  # id -> ClassInfo
        # Built once, not per tile: a page down repaints ~35 tiles in Python, and every
        # object made per tile shows in the frame time.
        self._colors: dict[str, QColor] = {}
        self._caption_font: tuple[str, QFont] | None = None
        self._elided: dict[tuple[str, int], str] = {}
        self._frames: dict[tuple, QPixmap] = {}

    def _color(self, name: str) -> QColor:
        color = self._colors.get(name)
        if color is None:
            color = self._colors[name] = QColor(name)
        return color

    def _font(self, base: QFont) -> QFont:
        key = base.key()
        if self._caption_font is None or self._caption_font[0] != key:
            font = QFont(base)
            font.setPointSizeF(max(7.0, font.pointSizeF() * 0.9))
            self._caption_font = (key, font)
        return self._caption_font[1]

    def _elide(self, p: QPainter, text: str, width: int) -> str:
        key = (text, width)
        out = self._elided.get(key)
        if out is None:
            if len(self._elided) > 2000:  # class names are few; widths change with the font
                self._elided.clear()
            out = self._elided[key] = p.fontMetrics().elidedText(text, Qt.TextElideMode.ElideMiddle, width)
        return out

    def _frame(self, p: QPainter, r: QRect, fill: QColor, pen: QPen) -> None:
        """The tile's rounded, antialiased frame, drawn once per look and then blitted:
        drawing it each time was half of a tile's paint time."""
        dpr = p.device().devicePixelRatioF() if p.device() is not None else 1.0
        key = (r.width(), r.height(), fill.rgba(), pen.color().rgba(), pen.widthF(), pen.style(), dpr)
        pm = self._frames.get(key)
        pad = FRAME_PAD
        if pm is None:
            if len(self._frames) > 256:  # classes x statuses x selection: a few dozen in use
                self._frames.clear()
            pm = QPixmap(round((r.width() + 2 * pad) * dpr), round((r.height() + 2 * pad) * dpr))
            pm.setDevicePixelRatio(dpr)
            pm.fill(Qt.GlobalColor.transparent)
            q = QPainter(pm)
            q.setRenderHint(QPainter.RenderHint.Antialiasing)
            q.setBrush(fill)
            q.setPen(pen)
            q.drawRoundedRect(QRectF(pad, pad, r.width(), r.height()), 8, 8)
            q.end()
            self._frames[key] = pm
        p.drawPixmap(r.topLeft() - QPoint(pad, pad), pm)

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
        color = self._color(cls.color) if cls is not None else pal.mid().color()
        fill = pal.highlight().color().lighter(170) if selected else pal.base().color()
        if cls is not None:
            # Confirmed labels get a solid frame; the model's guesses a thinner, paler one.
            confirmed = rec.status == "confirmed"
            pen_color = color
            if not confirmed:
                pen_color = QColor(color)
                pen_color.setAlpha(150)
            pen = QPen(pen_color, 4 if confirmed else 2)
        else:
            pen = QPen(pal.highlight().color() if selected else pal.mid().color(), 2 if selected else 1)
        self._frame(p, r, fill, pen)
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
                if size != pm.size() / pm.devicePixelRatio():
                    p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)  # images smaller than a tile
                p.drawPixmap(target, pm)
            else:
                p.fillRect(thumb_rect, pal.alternateBase().color())
                if rec.error is not None or self.loader.failed(rec.path):
                    # Which file, and what is wrong with it, on the tile itself.
                    p.setPen(pal.text().color())
                    name = self._elide(p, Path(rec.path).name, thumb_rect.width() - 8)
                    why = short_reason(rec.error) if rec.error else "cannot be shown"
                    p.drawText(thumb_rect.adjusted(4, 4, -4, -4), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                               f"{name}\n\n{why}")
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
        p.setFont(self._font(option.font))
        if cls is not None:
            p.setBrush(color)
            p.setPen(Qt.PenStyle.NoPen)
            p.drawEllipse(QRect(rect.left(), rect.center().y() - 5, 10, 10))
            text_rect = rect.adjusted(14, 0, 0, 0)
            conf = "" if rec.confidence is None or rec.status == "confirmed" else f"{rec.confidence:.0%}"
            p.setPen(pal.text().color())
            name_w = text_rect.width() - (p.fontMetrics().horizontalAdvance(conf) + 6 if conf else 0)
            p.drawText(QRect(text_rect.left(), text_rect.top(), name_w, text_rect.height()),
                       Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, self._elide(p, cls.name, name_w))
            if conf:
                p.setPen(pal.placeholderText().color())
                p.drawText(text_rect, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, conf)
        else:
            text = {"error": "unreadable", "unlabeled": "not labeled yet"}.get(rec.status, "none of these")
            p.setPen(pal.placeholderText().color())
            p.drawText(rect, Qt.AlignmentFlag.AlignCenter, self._elide(p, text, rect.width()))

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
        self._arrived: set[str] = set()
        self._arrived_timer = QTimer(self, singleShot=True, interval=0)
        self._arrived_timer.timeout.connect(self._repaint_arrived)
        loader.ready.connect(self._thumbnail_ready)

    def setModel(self, model) -> None:  # noqa: N802 - Qt override
        super().setModel(model)
        self.selectionModel().currentChanged.connect(self._on_current)
        model.dataChanged.connect(self._current_loaded)
        if hasattr(model, "rows_stale"):
            model.rows_stale.connect(self.viewport().update)
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

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        """Tiles spread over the whole width: as many columns as fit, widened to fill it
        (a fixed grid left a gutter of up to a tile on the right)."""
        width = self.viewport().width()
        columns = max(1, width // TILE.width())
        grid = QSize(max(TILE.width(), width // columns), TILE.height())
        if grid != self.gridSize():
            self.setGridSize(grid)
        super().resizeEvent(event)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt override
        """What QListView.paintEvent does for this grid (every item enabled, no hover
        look, no drop indicator), with the delegate called from here."""
        if self.state() == QAbstractItemView.State.DragSelectingState:
            super().paintEvent(event)  # Qt's own paint draws the rubber band, which it alone knows
            return
        selection = self.selectionModel()
        option = QStyleOptionViewItem()
        self.initViewItemOption(option)
        state = option.state
        current = self.currentIndex()
        focus = (self.hasFocus() or self.viewport().hasFocus()) and current.isValid()
        painter = QPainter(self.viewport())
        try:
            for index, rect in self._tiles(event.rect()):
                option.rect = rect
                option.state = state
                if selection is not None and selection.isSelected(index):
                    option.state |= QStyle.StateFlag.State_Selected
                if focus and index == current:
                    option.state |= QStyle.StateFlag.State_HasFocus
                self.delegate.paint(painter, option, index)
        finally:
            painter.end()

    def selected_records(self) -> list[Any]:
        out = []
        for index in sorted(self.selectionModel().selectedIndexes(), key=lambda i: i.row()):
            rec = index.data(RecordRole)
            if rec is not None:
                out.append(rec)
        return out

    def selected_ids(self) -> list[int]:
        return [r.id for r in self.selected_records()]

    def _thumbnail_ready(self, path: str) -> None:
        # Thumbnails arrive one signal each, dozens per page scrolled: collect them and
        # repaint their tiles once per pass of the event loop.
        self._arrived.add(path)
        if not self._arrived_timer.isActive():
            self._arrived_timer.start()

    def _repaint_arrived(self) -> None:
        """Repaint the tiles on screen whose thumbnail arrived, and only those: repainting
        the whole grid for each arrival redrew about 35 tiles each time while scrolling.
        A tile scrolled away meanwhile is painted with its thumbnail when it comes back."""
        arrived, self._arrived = self._arrived, set()
        shown = False
        for index, rect in self._tiles(self.viewport().rect()):
            shown = True
            rec = index.data(RecordRole)
            if rec is not None and rec.path in arrived:
                self.viewport().update(rect)
        if not shown:
            self.viewport().update()

    def _tiles(self, area: QRect) -> Iterator[tuple[QModelIndex, QRect]]:
        """Index and rectangle of each tile that meets ``area`` (viewport coordinates), in
        row order: the visible rows only, never a walk over the whole model."""
        model = self.model()
        first = self.indexAt(QPoint(self.gridSize().width() // 2, max(area.top(), 0)))
        if model is None or not first.isValid():
            return
        for row in range(first.row(), model.rowCount()):
            index = model.index(row, 0)
            rect = self.visualRect(index)
            if rect.top() > area.bottom():
                return
            if rect.intersects(area):
                yield index, rect
