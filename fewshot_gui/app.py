"""`fewshot-gui`: the desktop application's entry point.

The window appears before torch is imported: the engine loads in the worker
thread (its first job), so start-up never waits for it. Only PySide6 and the
GUI's own modules are imported here; ``engine.errors`` is plain Python.
"""
from __future__ import annotations

import logging
import sys

from PySide6.QtCore import QCoreApplication, Qt
from PySide6.QtWidgets import QApplication

from fewshot_gui.main_window import MainWindow

ORGANIZATION = "fewshot-labeler"
APPLICATION = "Few-shot labeler"


def make_app(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if app is None:
        # Qt 6 scales for high-DPI screens by default; pass fractional factors through
        # (125 %, 150 %) instead of rounding them, so text and tiles stay crisp.
        QApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication(argv if argv is not None else sys.argv)
    QCoreApplication.setOrganizationName(ORGANIZATION)
    QCoreApplication.setApplicationName(APPLICATION)
    return app  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = make_app(argv)
    window = MainWindow()
    window.show()
    args = app.arguments()[1:]
    if args:  # `fewshot-gui project.fewshot` opens it straight away
        window.open_project(args[0])
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
