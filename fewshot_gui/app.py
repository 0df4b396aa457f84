"""`fewshot-gui`: the desktop application's entry point.

The window appears before torch is imported: model details are read in a
worker thread, so start-up never waits for the engine.
"""
from __future__ import annotations

import json
import sys

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal
from PySide6.QtWidgets import (QApplication, QComboBox, QLabel, QMainWindow, QPlainTextEdit, QVBoxLayout,
                               QWidget)

BUNDLED = ("omniglot", "photos")


class _Signals(QObject):
    done = Signal(str, str)


class _DescribeJob(QRunnable):
    def __init__(self, name: str, signals: _Signals):
        super().__init__()
        self.name, self.signals = name, signals

    def run(self) -> None:
        from engine.errors import FewShotError
        from engine.model_store import describe
        try:
            text = json.dumps(describe(self.name), indent=2)
        except FewShotError as e:
            text = f"error: {e}"
        self.signals.done.emit(self.name, text)


class MainWindow(QMainWindow):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("Few-shot labeler")
        self.resize(720, 480)
        self.models = QComboBox()
        self.models.addItems(BUNDLED)
        self.details = QPlainTextEdit(readOnly=True)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addWidget(QLabel("Model"))
        layout.addWidget(self.models)
        layout.addWidget(self.details)
        self.setCentralWidget(body)
        self.signals = _Signals()
        self.signals.done.connect(self._show_details)
        self.models.currentTextChanged.connect(self.describe)
        self.statusBar().showMessage("Loading the engine…")
        self.describe(self.models.currentText())

    def describe(self, name: str) -> None:
        self.details.setPlainText(f"Reading {name}…")
        QThreadPool.globalInstance().start(_DescribeJob(name, self.signals))

    def _show_details(self, name: str, text: str) -> None:
        if name == self.models.currentText():
            self.details.setPlainText(text)
            self.statusBar().showMessage(f"Model: {name}")


def main(argv: list[str] | None = None) -> int:
    app = QApplication(argv if argv is not None else sys.argv)
    app.setApplicationName("Few-shot labeler")
    app.setOrganizationName("fewshot-labeler")
    window = MainWindow()
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
