"""Review mode: one image at a time in the engine's review order, decided from the keyboard.

1-9 and 0 assign the first ten classes, / or a letter opens a search box that
assigns any class by name, Enter accepts the model's prediction, X says "none of
these classes", arrows move, Esc leaves. The panel only says what the user
decided (signals); the main window saves each decision at once as a job and
calls :meth:`refresh` when it is written, so the panel shows what the database
holds, never a guess of it.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (QComboBox, QGridLayout, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout,
                               QWidget)

from fewshot_gui.class_chooser import ClassChooser, class_for_key, opens_chooser
from fewshot_gui.detail_pane import ProbabilityBars, describe_label, probability_rows
from fewshot_gui.thumbnails import ThumbnailLoader

PREVIEW = 384
# (label in the order box, engine review mode)
MODES = (("Most uncertain first", "uncertain"), ("Outliers first", "outliers"),
         ("Most informative first", "informative"))


class ReviewPanel(QWidget):
    assign = Signal(int, int)  # image id, class id (a confirmation or a correction)
    accept = Signal(int)  # image id: the prediction is right
    none_of_these = Signal(int)
    undo_requested = Signal()
    leave = Signal()
    mode_changed = Signal(str)
    showing = Signal(object)  # the image id under review, or None: the detail pane follows it

    def __init__(self, loader: ThumbnailLoader, parent=None):
        super().__init__(parent)
        self.loader = loader
        self.order: list[int] = []
        self.position = 0
        self.record: Any = None
        self.classes: list[Any] = []
        # Set by the main window: reads one image in the reader thread, then calls back.
        self.fetch_record: Callable[[int, Callable[[Any], None]], None] = lambda image_id, done: done(None)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.chooser = ClassChooser(self)
        self.chooser.chosen.connect(self._chosen)

        self.mode = QComboBox()
        self.mode.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)  # its modes follow the method
        for label, mode in MODES:
            self.mode.addItem(label, mode)
        self.mode.currentIndexChanged.connect(lambda _i: self.mode_changed.emit(self.mode.currentData()))
        self.mode.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # keys belong to the review, not the box
        self.where = QLabel()
        leave = QPushButton("Leave review (Esc)")
        leave.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        leave.clicked.connect(self.leave)
        top = QHBoxLayout()
        top.addWidget(QLabel("<b>Review</b>"))
        top.addWidget(self.mode)
        top.addStretch(1)
        top.addWidget(self.where)
        top.addWidget(leave)

        self.preview = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumSize(PREVIEW // 2, PREVIEW // 2)
        self.preview.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.preview.setStyleSheet("background: palette(alternate-base); border-radius: 8px;")
        self.name = QLabel()
        self.verdict = QLabel(wordWrap=True)
        font = self.verdict.font()
        font.setPointSizeF(font.pointSizeF() * 1.3)
        self.verdict.setFont(font)
        self.bars = ProbabilityBars()
        self.keys = QGridLayout()
        side = QVBoxLayout()
        side.addWidget(self.name)
        side.addWidget(self.verdict)
        side.addSpacing(8)
        side.addWidget(QLabel("<b>Class probabilities</b>"))
        side.addWidget(self.bars)
        side.addSpacing(12)
        side.addWidget(QLabel("<b>Keys</b>"))
        side.addLayout(self.keys)
        side.addStretch(1)
        body = QHBoxLayout()
        body.addWidget(self.preview, 3)
        body.addLayout(side, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(body, 1)
        loader.ready.connect(self._thumbnail_ready)

    # ------------------------------------------------------------ state

    def start(self, order: list[int], classes: list[Any]) -> None:
        self.order = list(order)
        self.position = 0
        self.set_classes(classes)
        self.refresh()
        self.setFocus()

    def set_classes(self, classes: list[Any]) -> None:
        self.classes = list(classes)
        while self.keys.count():
            item = self.keys.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        entries = [(str((i + 1) % 10), c.name, c.color) for i, c in enumerate(self.classes[:10])]
        if len(self.classes) > 10:
            entries.append(("/", f"find any of the {len(self.classes)} classes by name", None))
        entries += [("Enter", "accept the prediction", None), ("X", "none of these classes", None),
                    ("\u2190 \u2192", "previous / next", None), ("Ctrl+Z", "undo", None)]
        for row, (key, text, color) in enumerate(entries):
            k = QLabel(key)
            k.setStyleSheet("border: 1px solid palette(mid); border-radius: 3px; padding: 1px 6px;")
            k.setAlignment(Qt.AlignmentFlag.AlignCenter)
            t = QLabel(f"<span style='color:{color}'>\u25cf</span> {text}" if color else text)
            self.keys.addWidget(k, row, 0)
            self.keys.addWidget(t, row, 1)

    def current_id(self) -> int | None:
        return self.order[self.position] if 0 <= self.position < len(self.order) else None

    def refresh(self) -> None:
        """Re-read the current image (after a decision was saved, or predictions refreshed)."""
        image_id = self.current_id()
        self.showing.emit(image_id)
        n = len(self.order)
        last = n and self.position >= n - 1
        self.where.setText((f"{n} of {n}, the last: Esc goes back to the grid" if last else
                            f"{self.position + 1} of {n}") if n else "nothing to review")
        if image_id is None:
            self._show(None)
            return
        if self.record is None or self.record.id != image_id:
            self.preview.setText("Loading\u2026")
        self.fetch_record(image_id, lambda rec: self._show(rec) if self.current_id() == image_id else None)

    def _show(self, rec: Any) -> None:
        self.record = rec
        n = len(self.order)
        if rec is None:
            self.preview.clear()
            self.preview.setText("Nothing to review: label a folder first." if not n else "Review done.")
            self.name.clear()
            self.verdict.clear()
            self.bars.set_rows([])
            return
        self.name.setText(Path(rec.path).name)
        self.name.setToolTip(rec.path)
        self.verdict.setText(describe_label(rec, {c.id: c for c in self.classes}))
        self.bars.set_rows(probability_rows(rec, self.classes))
        self._show_preview()

    def update_record(self, rec: Any) -> None:
        """The image under review with new predictions."""
        if self.record is not None and rec is not None and rec.id == self.record.id:
            self._show(rec)

    def go(self, step: int) -> None:
        if self.order:
            self.position = max(0, min(len(self.order) - 1, self.position + step))
            self.refresh()

    def _show_preview(self) -> None:
        rec = self.record
        if rec is None:
            return
        pm = self.loader.pixmap(rec.path, PREVIEW)
        if pm is None:
            self.preview.setText("Loading\u2026" if rec.error is None else "This file cannot be shown")
            return
        box = self.preview.size()
        self.preview.setPixmap(pm.scaled(min(box.width(), PREVIEW) - 8, min(box.height(), PREVIEW) - 8,
                                         Qt.AspectRatioMode.KeepAspectRatio,
                                         Qt.TransformationMode.SmoothTransformation))

    def _thumbnail_ready(self, path: str) -> None:
        if self.record is not None and self.record.path == path:
            self._show_preview()

    # ------------------------------------------------------------ keys

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt override
        key = event.key()
        mods = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        image_id = self.current_id()
        if key == Qt.Key.Key_Z and mods == Qt.KeyboardModifier.ControlModifier:
            # Edit > Undo's shortcut normally takes Ctrl+Z first; this covers it when it cannot.
            self.undo_requested.emit()
        elif key == Qt.Key.Key_Escape:
            self.leave.emit()
        elif key in (Qt.Key.Key_Right, Qt.Key.Key_Down, Qt.Key.Key_Space):
            self.go(1)
        elif key in (Qt.Key.Key_Left, Qt.Key.Key_Up):
            self.go(-1)
        elif mods != Qt.KeyboardModifier.NoModifier or image_id is None:
            super().keyPressEvent(event)
        elif class_for_key(key, self.classes) is not None:
            self.assign.emit(image_id, class_for_key(key, self.classes).id)
            self.go(1)
        elif key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            # The prediction is read where it is saved (the worker): the record on screen
            # may still be loading when a fast reviewer presses Enter.
            self.accept.emit(image_id)
            self.go(1)
        elif key == Qt.Key.Key_X:
            self.none_of_these.emit(image_id)
            self.go(1)
        elif opens_chooser(event) is not None and self.classes:
            self.chooser.open_for(self.classes, "this image", opens_chooser(event))
        else:
            super().keyPressEvent(event)

    def _chosen(self, class_id: int) -> None:
        image_id = self.current_id()
        if image_id is not None:
            self.assign.emit(image_id, class_id)
            self.go(1)
        self.setFocus()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self._show_preview()
