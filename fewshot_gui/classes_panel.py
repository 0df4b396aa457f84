"""The classes panel: one card per class with its colour, name and example thumbnails.

Each card is a drop target: image files or folders from the file manager, or
tiles dragged from the results grid, dropped on a card become that class's
examples. A card dragged above or below another changes the class order (and so
the number keys); see class_order.py. The panel never touches the project
itself; it emits requests that the main window turns into worker jobs.
"""
from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import QMimeData, QPoint, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QDrag, QDragEnterEvent, QDropEvent, QMouseEvent
from PySide6.QtWidgets import (QApplication, QColorDialog, QFileDialog, QFrame, QHBoxLayout, QInputDialog, QLabel,
                               QMenu, QMessageBox, QPushButton, QScrollArea, QSizePolicy, QToolButton, QVBoxLayout,
                               QWidget)

from fewshot_gui.elided_label import ElidedLabel
from fewshot_gui.class_order import ClassList, class_drag_mime, drag_pixmap, moved
from fewshot_gui.folders import last_folder, remember_folder
from fewshot_gui.project_state import EXAMPLE_PATHS_SHOWN as MAX_SHOWN_EXAMPLES
from fewshot_gui.results_model import IDS_MIME
from fewshot_gui.thumbnails import ThumbnailLoader

EXAMPLE_THUMB = 36
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.bmp *.gif *.webp *.tif *.tiff *.ppm *.pgm *.pbm)"


def dropped_items(mime: QMimeData) -> tuple[list[str], list[int]]:
    """(local file paths, project image ids) a drop carries. Ids win: a tile from the
    grid names an image already in the project, so it needs no rescan."""
    if mime.hasFormat(IDS_MIME):
        try:
            ids = [int(i) for i in json.loads(bytes(mime.data(IDS_MIME).data()).decode())]
        except (ValueError, TypeError):
            ids = []
        return [], ids
    paths = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]
    return paths, []


def _set_style(widget: QWidget, sheet: str) -> None:
    # Setting a style sheet re-polishes the widget even when it is unchanged, and the
    # panel is refreshed after every edit: only touch it when it differs.
    if widget.styleSheet() != sheet:
        widget.setStyleSheet(sheet)


class ClassCard(QFrame):
    dropped = Signal(int, list, list)  # class id, paths, image ids
    menu_requested = Signal(int, object)  # class id, global pos
    rename_requested = Signal(int)
    drag_started = Signal(int, QPoint)  # class id, where in the card the pointer holds it

    def __init__(self, info: Any, loader: ThumbnailLoader, parent=None):
        super().__init__(parent)
        self.info = info
        self.loader = loader
        self.order_list: ClassList | None = None  # takes card drags over this card (set by the panel)
        self.example_paths: list[str] = []
        self.setObjectName("classCard")
        self.setAcceptDrops(True)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self._press: QPoint | None = None
        self.grip = QLabel("\u2261")
        self.grip.setToolTip("Drag the card to change the class order (the number keys follow it)")
        self.grip.setCursor(Qt.CursorShape.OpenHandCursor)
        self.grip.setStyleSheet("color: palette(mid);")
        self.swatch = QLabel()
        self.swatch.setFixedSize(14, 14)
        self.name = ElidedLabel()
        font = self.name.font()
        font.setBold(True)
        self.name.setFont(font)
        self.count = QLabel()
        self.count.setStyleSheet("color: palette(placeholder-text);")
        self.key = QLabel()
        self.key.setToolTip("Key that assigns this class in review mode")
        self.key.setStyleSheet("border: 1px solid palette(mid); border-radius: 3px; padding: 0 4px;")
        self.more = QToolButton(text="\u22ef", autoRaise=True)
        self.more.setToolTip("Rename, colour, order, delete")
        self.more.clicked.connect(lambda: self.menu_requested.emit(
            self.info.id, self.more.mapToGlobal(self.more.rect().bottomLeft())))
        head = QHBoxLayout()
        head.setContentsMargins(0, 0, 0, 0)
        head.addWidget(self.grip)
        head.addWidget(self.swatch)
        head.addWidget(self.name, 1)
        head.addWidget(self.key)
        head.addWidget(self.more)
        self.strip = QHBoxLayout()
        self.strip.setContentsMargins(0, 0, 0, 0)
        self.strip.setSpacing(3)
        self.thumbs = [QLabel() for _ in range(MAX_SHOWN_EXAMPLES)]
        for t in self.thumbs:
            t.setFixedSize(EXAMPLE_THUMB, EXAMPLE_THUMB)
            t.setAlignment(Qt.AlignmentFlag.AlignCenter)
            self.strip.addWidget(t)
        # The count beside the thumbnails, not the name: the name gets the head's width.
        self.strip.addStretch(1)
        self.strip.addWidget(self.count)
        self.hint = QLabel("Drop example images here")
        self.hint.setStyleSheet("color: palette(placeholder-text); font-style: italic;")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        layout.addLayout(head)
        layout.addLayout(self.strip)
        layout.addWidget(self.hint)
        loader.ready.connect(self._thumbnail_ready)
        self.set_info(info, [], None)
        self._set_highlight(False)

    def set_info(self, info: Any, example_paths: list[str], key: int | None) -> None:
        self.info = info
        self.example_paths = example_paths
        _set_style(self.swatch, f"background: {info.color}; border-radius: 7px;")
        self.name.setText(info.name)
        n = len(example_paths)
        self.count.setText(f"{n} example{'s' if n != 1 else ''}")
        self.key.setText(str(key) if key is not None else "")
        self.key.setVisible(key is not None)
        self.hint.setVisible(n == 0)
        self._show_thumbs()

    def _show_thumbs(self) -> None:
        for label, path in zip(self.thumbs, self.example_paths[:MAX_SHOWN_EXAMPLES] +
                               [""] * MAX_SHOWN_EXAMPLES):
            if not path:
                label.clear()
                label.setVisible(False)
                continue
            label.setVisible(True)
            label.setToolTip(path)
            pm = self.loader.pixmap(path, EXAMPLE_THUMB * 2)
            if pm is None:
                label.clear()
                _set_style(label, "background: palette(alternate-base);")
            else:
                _set_style(label, f"border: 1px solid {self.info.color};")
                label.setPixmap(pm.scaled(EXAMPLE_THUMB - 2, EXAMPLE_THUMB - 2, Qt.AspectRatioMode.KeepAspectRatio,
                                          Qt.TransformationMode.SmoothTransformation))

    def _thumbnail_ready(self, path: str) -> None:
        if path in self.example_paths[:MAX_SHOWN_EXAMPLES]:
            self._show_thumbs()

    def _set_highlight(self, on: bool) -> None:
        color = QColor(self.info.color)
        border = f"2px solid {color.name()}" if on else "1px solid palette(mid)"
        bg = color.lighter(185).name() if on else "palette(base)"
        _set_style(self, f"#classCard {{ border: {border}; border-radius: 6px; background: {bg}; }}")

    def _card_drag(self, event, drop: bool = False) -> bool:
        """Hand a card drag to the list, in its coordinates; True when it was one."""
        if self.order_list is None:
            return False
        pos = self.mapTo(self.order_list, event.position().toPoint())
        return self.order_list.drop(event, pos) if drop else self.order_list.track(event, pos)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        if self._card_drag(event):
            return
        if event.mimeData().hasUrls() or event.mimeData().hasFormat(IDS_MIME):
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
            self._set_highlight(True)
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:  # noqa: N802 - Qt override
        if self._card_drag(event):
            return
        if event.mimeData().hasUrls() or event.mimeData().hasFormat(IDS_MIME):
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()

    def dragLeaveEvent(self, _event) -> None:  # noqa: N802 - Qt override
        self._set_highlight(False)
        if self.order_list is not None:
            self.order_list.clear_line()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        self._set_highlight(False)
        if self._card_drag(event, drop=True):
            return
        paths, ids = dropped_items(event.mimeData())
        if not paths and not ids:
            event.ignore()
            return
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()
        self.dropped.emit(self.info.id, paths, ids)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if event.button() == Qt.MouseButton.LeftButton:
            self._press = event.position().toPoint()
            event.accept()  # the moves that follow come here, and may become a drag
        else:
            super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        # A press that travels further than the platform's drag distance is a drag, not a click.
        if (self._press is not None and event.buttons() & Qt.MouseButton.LeftButton
                and (event.position().toPoint() - self._press).manhattanLength() >= QApplication.startDragDistance()):
            press, self._press = self._press, None
            self.drag_started.emit(self.info.id, press)
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        self._press = None
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, _event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        self.rename_requested.emit(self.info.id)

    def contextMenuEvent(self, event) -> None:  # noqa: N802 - Qt override
        self.menu_requested.emit(self.info.id, event.globalPos())


class ClassesPanel(QWidget):
    """Emits requests; the main window runs them as jobs and calls :meth:`set_classes` back."""

    add_requested = Signal(str)
    rename_requested = Signal(int, str)
    color_requested = Signal(int, str)
    delete_requested = Signal(int)
    reorder_requested = Signal(list)
    examples_dropped = Signal(int, list, list)  # class id, paths, image ids
    folders_dropped = Signal(list)  # folders of class sub-folders, dropped between the cards

    def __init__(self, loader: ThumbnailLoader, settings: Any = None, parent=None):
        super().__init__(parent)
        self.loader = loader
        self.settings = settings
        self.classes: list[Any] = []
        self.cards: dict[int, ClassCard] = {}
        title = QLabel("<b>Classes</b>")
        self.add_button = QPushButton("Add class\u2026")
        self.add_button.setToolTip("Add a class, then drop a few example images on it")
        self.add_button.clicked.connect(self.ask_new_class)
        head = QHBoxLayout()
        head.addWidget(title, 1)
        head.addWidget(self.add_button)
        self.body = ClassList(self)
        self.body.card_dropped.connect(self._card_dropped)
        self.body.folders_dropped.connect(self.folders_dropped)
        self.list = QVBoxLayout(self.body)
        self.list.setContentsMargins(0, 0, 0, 0)
        self.list.setSpacing(6)
        self.empty = QLabel("No classes yet.\nAdd one, then drop a few example images of it here; or drop a "
                            "folder with one sub-folder per class.")
        self.empty.setWordWrap(True)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setStyleSheet("color: palette(placeholder-text); padding: 20px;")
        self.list.addWidget(self.empty)
        self.list.addStretch(1)
        scroll = self.scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        # Cards fit the panel's width (their thumbnails are capped): never scroll sideways.
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self.body)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(head)
        layout.addWidget(scroll, 1)
        self.setMinimumWidth(220)  # long class names shorten (elided_label.py)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)

    def set_classes(self, classes: list[Any], examples: dict[int, list[str]]) -> None:
        new = [c.id for c in classes if c.id not in self.cards] if self.cards or len(classes) == 1 else []
        self.classes = list(classes)
        for cid in [c for c in self.cards if c not in {c.id for c in classes}]:
            card = self.cards.pop(cid)
            card.setParent(None)
            card.deleteLater()
        for i, info in enumerate(classes):
            card = self.cards.get(info.id)
            if card is None:
                card = ClassCard(info, self.loader)
                card.dropped.connect(self.examples_dropped)
                card.menu_requested.connect(self._menu)
                card.rename_requested.connect(self.ask_rename)
                card.drag_started.connect(self._start_drag)
                card.order_list = self.body
                self.cards[info.id] = card
            self.list.insertWidget(i, card)  # re-inserting moves it: cards follow the class order
            card.set_info(info, examples.get(info.id, []), (i + 1) % 10 if i < 10 else None)
        self.body.cards = [self.cards[c.id] for c in classes]
        self.empty.setVisible(not classes)
        if new:  # a class just added: its card in view, once the layout has placed it
            card = self.cards[new[-1]]
            QTimer.singleShot(0, lambda: self.scroll.ensureWidgetVisible(card))

    # ------------------------------------------------------------ drag to reorder

    def _start_drag(self, class_id: int, hot_spot: QPoint) -> None:
        card = self.cards.get(class_id)
        if card is None or len(self.classes) < 2:
            return
        drag = QDrag(self)  # not the card: a reload during the drag may replace it
        drag.setMimeData(class_drag_mime(self, class_id))
        pm = drag_pixmap(card)
        drag.setPixmap(pm)
        drag.setHotSpot(QPoint(hot_spot.x() * pm.width() // max(card.width(), 1),
                               hot_spot.y() * pm.height() // max(card.height(), 1)))
        drag.exec(Qt.DropAction.MoveAction)  # runs until the drop; _card_dropped has done the work by then

    def _card_dropped(self, class_id: int, gap: int) -> None:
        ids = [c.id for c in self.classes]
        if class_id not in ids:
            return  # deleted while being dragged
        order = moved(ids, class_id, gap)
        if order != ids:
            self.reorder_requested.emit(order)

    # ------------------------------------------------------------ user requests

    def ask_new_class(self) -> None:
        name, ok = QInputDialog.getText(self, "Add class", "Name of the new class:")
        if ok and name.strip():
            self.add_requested.emit(name.strip())

    def ask_rename(self, class_id: int) -> None:
        info = self._info(class_id)
        name, ok = QInputDialog.getText(self, "Rename class", "New name:", text=info.name)
        if ok and name.strip() and name.strip() != info.name:
            self.rename_requested.emit(class_id, name.strip())

    def ask_color(self, class_id: int) -> None:
        info = self._info(class_id)
        color = QColorDialog.getColor(QColor(info.color), self, f"Colour of {info.name}")
        if color.isValid():
            self.color_requested.emit(class_id, color.name())

    def ask_delete(self, class_id: int) -> None:
        info = self._info(class_id)
        answer = QMessageBox.question(
            self, "Delete class",
            f"Delete the class \u201c{info.name}\u201d with its examples and labels?\n"
            "The images you had labelled as it lose their label, and every image is predicted again "
            "among the other classes. This cannot be undone.")
        if answer == QMessageBox.StandardButton.Yes:
            self.delete_requested.emit(class_id)

    def ask_examples(self, class_id: int) -> None:
        start = last_folder(self.settings, "examples") if self.settings is not None else ""
        paths, _ = QFileDialog.getOpenFileNames(self, f"Examples of {self._info(class_id).name}", start, IMAGE_FILTER)
        if paths:
            if self.settings is not None:
                remember_folder(self.settings, "examples", paths[0])
            self.examples_dropped.emit(class_id, paths, [])

    def move(self, class_id: int, step: int) -> None:
        ids = [c.id for c in self.classes]
        i = ids.index(class_id)
        j = i + step
        if 0 <= j < len(ids):
            ids[i], ids[j] = ids[j], ids[i]
            self.reorder_requested.emit(ids)

    def _info(self, class_id: int) -> Any:
        return next(c for c in self.classes if c.id == class_id)

    def _menu(self, class_id: int, pos) -> None:
        menu = QMenu(self)
        menu.addAction("Add examples\u2026", lambda: self.ask_examples(class_id))
        menu.addAction("Rename\u2026", lambda: self.ask_rename(class_id))
        menu.addAction("Colour\u2026", lambda: self.ask_color(class_id))
        menu.addSeparator()
        up = menu.addAction("Move up", lambda: self.move(class_id, -1))
        down = menu.addAction("Move down", lambda: self.move(class_id, 1))
        ids = [c.id for c in self.classes]
        up.setEnabled(ids.index(class_id) > 0)
        down.setEnabled(ids.index(class_id) < len(ids) - 1)
        menu.addSeparator()
        menu.addAction("Delete\u2026", lambda: self.ask_delete(class_id))
        menu.exec(pos)
