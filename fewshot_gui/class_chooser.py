"""Assign any class by typing: a small search box over the class names.

Number keys reach ten classes (1-9, 0); with more, or when names are easier to type
than to count, ``/`` or any letter opens this box in the grid and in review mode:
type part of a name, Up/Down to pick, Enter to assign, Esc to close.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QFrame, QLabel, QLineEdit, QListWidget, QListWidgetItem, QVBoxLayout, QWidget


def matches(classes: list[Any], text: str) -> list[Any]:
    """Classes whose name contains ``text`` (ignoring case); those that start with it first."""
    t = text.strip().lower()
    found = [c for c in classes if t in c.name.lower()]
    return sorted(found, key=lambda c: (not c.name.lower().startswith(t), c.name.lower())) if t else list(classes)


class ClassChooser(QFrame):
    chosen = Signal(int)  # class id

    def __init__(self, parent: QWidget):
        super().__init__(parent, Qt.WindowType.Popup)
        self.classes: list[Any] = []
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.title = QLabel()
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("Type part of a class name")
        self.list = QListWidget()
        self.list.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.edit.textChanged.connect(self._filter)
        self.edit.returnPressed.connect(self._accept)
        self.edit.installEventFilter(self)
        self.list.itemActivated.connect(lambda _item: self._accept())
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.title)
        layout.addWidget(self.edit)
        layout.addWidget(self.list)
        self.resize(280, 300)

    def open_for(self, classes: list[Any], what: str, first_text: str = "") -> None:
        """Show under the parent's centre; ``first_text``: the key that opened it (not '/')."""
        self.classes = list(classes)
        self.title.setText(f"<b>Assign a class</b> to {what}")
        self.edit.setText(first_text if first_text != "/" else "")
        self._filter(self.edit.text())
        parent = self.parentWidget()
        centre = parent.mapToGlobal(parent.rect().center())
        self.move(centre.x() - self.width() // 2, centre.y() - self.height() // 2)
        self.show()
        self.edit.setFocus()

    def _filter(self, text: str) -> None:
        self.list.clear()
        for c in matches(self.classes, text):
            item = QListWidgetItem(c.name)
            item.setData(Qt.ItemDataRole.UserRole, c.id)
            self.list.addItem(item)
        if self.list.count():
            self.list.setCurrentRow(0)

    def _accept(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self.hide()
            self.chosen.emit(int(item.data(Qt.ItemDataRole.UserRole)))

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt override
        if obj is self.edit and isinstance(event, QKeyEvent) and event.type() == event.Type.KeyPress:
            if event.key() in (Qt.Key.Key_Down, Qt.Key.Key_Up):
                step = 1 if event.key() == Qt.Key.Key_Down else -1
                self.list.setCurrentRow(max(0, min(self.list.count() - 1, self.list.currentRow() + step)))
                return True
            if event.key() == Qt.Key.Key_Escape:
                self.hide()
                return True
        return super().eventFilter(obj, event)


def class_for_key(key: int, classes: list[Any]) -> Any | None:
    """The class a number key assigns: 1-9 the first nine, 0 the tenth."""
    if Qt.Key.Key_1 <= key <= Qt.Key.Key_9:
        k = key - Qt.Key.Key_1
    elif key == Qt.Key.Key_0:
        k = 9
    else:
        return None
    return classes[k] if k < len(classes) else None


def opens_chooser(event: QKeyEvent) -> str | None:
    """The text that opens the chooser for this key press ('/' or a letter), else None."""
    text = event.text()
    mods = event.modifiers() & ~(Qt.KeyboardModifier.KeypadModifier | Qt.KeyboardModifier.ShiftModifier)
    if mods != Qt.KeyboardModifier.NoModifier or len(text) != 1:
        return None
    return text if text == "/" or text.isalpha() else None
