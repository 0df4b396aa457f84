"""What the window shows with no project open: the three ways to start, and recent projects."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget


class StartPage(QWidget):
    new_requested = Signal()
    open_requested = Signal()
    folder_requested = Signal()
    import_requested = Signal()  # a new project from a folder of class sub-folders
    recent_requested = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        title = QLabel("<h1>Few-shot labeler</h1>")
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        intro = QLabel("Label a whole folder of images from a few examples of each class.\n"
                       "Drop examples on a class, label the folder, review the uncertain ones.")
        intro.setAlignment(Qt.AlignmentFlag.AlignCenter)
        intro.setWordWrap(True)
        self.new_button = QPushButton("New project\u2026")
        self.open_button = QPushButton("Open project\u2026")
        self.folder_button = QPushButton("Open a folder of images\u2026")
        self.folder_button.setToolTip("A project for a folder of images: you choose where it is saved, and whether "
                                      "its sub-folders are classes")
        self.import_button = QPushButton("New project from example folders\u2026")
        self.import_button.setToolTip("A folder with one sub-folder of example images per class: one step to "
                                      "every class and its examples")
        for b, signal in ((self.new_button, self.new_requested), (self.open_button, self.open_requested),
                          (self.folder_button, self.folder_requested), (self.import_button, self.import_requested)):
            b.setMinimumHeight(44)
            b.setMinimumWidth(200)
            b.clicked.connect(signal)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for b in (self.new_button, self.import_button, self.open_button, self.folder_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        self.recent_title = QLabel("<b>Recent projects</b>")
        self.recent = QListWidget()
        self.recent.setMaximumWidth(640)
        self.recent.setMaximumHeight(220)
        self.recent.itemActivated.connect(lambda item: self.recent_requested.emit(item.data(Qt.ItemDataRole.UserRole)))
        recent_row = QHBoxLayout()
        recent_row.addStretch(1)
        recent_col = QVBoxLayout()
        recent_col.addWidget(self.recent_title)
        recent_col.addWidget(self.recent)
        recent_row.addLayout(recent_col, 3)
        recent_row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addStretch(2)
        layout.addWidget(title)
        layout.addWidget(intro)
        layout.addSpacing(24)
        layout.addLayout(buttons)
        layout.addSpacing(24)
        layout.addLayout(recent_row)
        layout.addStretch(3)

    def set_recent(self, paths: list[str]) -> None:
        self.recent.clear()
        for p in paths:
            item = QListWidgetItem(f"{Path(p).stem}    \u2014    {p}")
            item.setData(Qt.ItemDataRole.UserRole, p)
            self.recent.addItem(item)
        self.recent_title.setVisible(bool(paths))
        self.recent.setVisible(bool(paths))
