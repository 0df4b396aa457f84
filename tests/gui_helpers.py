"""Helpers the GUI tests share: real drop events, and waiting until the window has
finished every job and read it started."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QMimeData, QPoint, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import QApplication

WAIT = 120_000


def send_drop(widget, mime: QMimeData, pos: QPoint | None = None,
              action: Qt.DropAction = Qt.DropAction.CopyAction) -> tuple[bool, bool]:
    """What a drag ending on ``widget`` at ``pos`` does: drag-enter, drag-move, then drop
    (only when the enter was accepted, as Qt does). Returns (enter accepted, drop accepted)."""
    pos = pos if pos is not None else widget.rect().center()
    enter = QDragEnterEvent(pos, action, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    if not enter.isAccepted():
        return False, False
    move = QDragMoveEvent(pos, action, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, move)
    drop = QDropEvent(QPointF(pos), action, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, drop)
    return True, drop.isAccepted()


def drop_files(widget, paths: list[Path]) -> None:
    """What the file manager does: drag-enter, then drop, with file URLs."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    entered, dropped = send_drop(widget, mime)
    assert entered and dropped


def wait_idle(qtbot, window, timeout: int = WAIT) -> None:
    def settled() -> bool:
        return (window.worker.pending() == 0 and window.reader.pending() == 0 and not window.progress.isVisible()
                and not window._snapshot_pending
                # A hidden grid (review mode) re-reads its stale pages only once shown again.
                and not (window.results_model.loading and window.grid.isVisible()))
    qtbot.waitUntil(settled, timeout=timeout)
    qtbot.wait(30)  # results queued as signals arrive
    qtbot.waitUntil(settled, timeout=timeout)


def open_project_window(qtbot, tmp_path: Path, project_path: Path, size: tuple[int, int] = (1200, 800)):
    """The main window on ``project_path``, its settings in ``tmp_path``, without the
    engine's start-up (no model loads); returns once the project is open."""
    from fewshot_gui.main_window import MainWindow
    window = MainWindow(QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat), start_engine=False)
    qtbot.addWidget(window)
    window.resize(*size)
    window.show()
    window.worker.start()
    window.open_project(str(project_path))
    qtbot.waitUntil(lambda: window.project is not None, timeout=WAIT)
    return window


def engine_window(qtbot, settings_path: Path, size: tuple[int, int] = (1200, 800)):
    """The main window as the app starts it (engine and default model loaded), its
    settings in ``settings_path``."""
    from fewshot_gui.main_window import MainWindow
    window = MainWindow(QSettings(str(settings_path), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    window.resize(*size)
    window.show()
    qtbot.waitUntil(lambda: window.engine_ready and window.worker.context.model is not None, timeout=WAIT)
    return window


def label_characters(qtbot, window, tmp_path: Path, model: str, characters: int, per_character: int,
                     skip: int) -> dict:
    """A new project in the window: ``model`` loaded, one class per Omniglot character
    with its first drawing as the example, the other drawings added and labeled. Returns
    the characters' drawings (labeling_data.extract_omniglot)."""
    from labeling_data import extract_omniglot
    chars = extract_omniglot(tmp_path / "omniglot", characters, per_character=per_character, skip=skip)
    window.new_project(str(tmp_path / "p.fewshot"))
    qtbot.waitUntil(lambda: window.project is not None, timeout=WAIT)
    window.set_model(model)
    qtbot.waitUntil(lambda: window.worker.context.model is not None
                    and window.worker.context.model.name == model, timeout=WAIT)
    for key in chars:
        window.add_class(key.replace("/", "_"))
    qtbot.waitUntil(lambda: len(window.classes) == characters, timeout=WAIT)
    for cls, files in zip(window.classes, chars.values()):
        window.add_examples(cls.id, [str(files[0])], [])
        wait_idle(qtbot, window, timeout=WAIT)
    rest = tmp_path / "to_label"
    rest.mkdir()
    for files in chars.values():
        for f in files[1:]:
            (rest / f"{f.parent.name}_{f.name}").write_bytes(f.read_bytes())
    window.add_folder(str(rest))
    wait_idle(qtbot, window, timeout=WAIT)
    return chars
