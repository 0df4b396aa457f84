"""`fewshot-gui`: the desktop application's entry point.

The window appears before torch is imported: the engine loads in the worker
thread (its first job), so start-up never waits for it. Only PySide6 and the
GUI's own modules are imported here; ``engine.errors`` is plain Python.
"""
from __future__ import annotations

import logging
import signal
import socket
import sys
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QSocketNotifier, Qt
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from fewshot_gui.main_window import MainWindow

ORGANIZATION = "fewshot-labeler"
APPLICATION = "Few-shot labeler"
# The name of the installed .desktop entry (packaging/linux/): Wayland and docks match the
# window to the entry's name and icon by it.
DESKTOP_ID = "io.github.fewshot_labeler.FewShotLabeler"
ICONS = Path(__file__).resolve().parents[1] / "assets" / "icons"


def make_app(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if app is None:
        # Qt 6 scales for high-DPI screens by default; pass fractional factors through
        # (125 %, 150 %) instead of rounding them, so text and tiles stay crisp.
        QApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication(argv if argv is not None else sys.argv)
    QCoreApplication.setOrganizationName(ORGANIZATION)
    QCoreApplication.setApplicationName(APPLICATION)
    app.setDesktopFileName(DESKTOP_ID)
    icon = QIcon()
    for png in sorted(ICONS.glob("fewshot-labeler-*.png")):  # PNGs: no SVG plugin needed
        icon.addFile(str(png))
    if not icon.isNull():
        app.setWindowIcon(icon)
    return app  # type: ignore[return-value]


def close_on_signals(app: QApplication, window: MainWindow) -> None:
    """SIGTERM (logging out, `kill`, a service manager) and Ctrl+C in the terminal close
    the window the way File > Quit does: the worker stops after its batch, the project
    closes and the window's settings are saved.

    Python runs signal handlers only between bytecodes, and while Qt's event loop waits
    none run; so the C-level handler's wake-up byte goes to a socket that Qt watches."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    try:
        signal.set_wakeup_fd(theirs.fileno())
    except ValueError:  # not the main thread (embedded use): keep the default behaviour
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)  # the work happens in quit() below, in Qt's loop

    def quit_() -> None:
        try:
            ours.recv(64)
        except OSError:
            pass
        window.close()
        app.quit()  # also when a message box is still open beside the window

    notifier = QSocketNotifier(ours.fileno(), QSocketNotifier.Type.Read, app)
    notifier.activated.connect(quit_)
    app._signal_sockets = (ours, theirs, notifier)  # kept alive as long as the app


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = make_app(argv)
    window = MainWindow()
    close_on_signals(app, window)
    window.show()
    args = app.arguments()[1:]
    if args:  # `fewshot-gui project.fewshot` opens it straight away
        window.open_project(args[0])
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
