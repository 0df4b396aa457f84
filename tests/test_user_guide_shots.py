"""The pictures of docs/USER_GUIDE.md, drawn from a real session offscreen: the start page
as the app opens, a project of Omniglot characters labeled by the bundled model, review
mode on the most uncertain drawing, and the File menu's exports. Each picture is checked
for what the guide says it shows before it is kept.

They go into docs/ only with FEWSHOT_UPDATE_SCREENSHOT=1 (a test run must not change files
in the checkout); otherwise into the test's temporary folder.
"""
from __future__ import annotations

import os
from pathlib import Path

from gui_helpers import WAIT, engine_window, label_characters, wait_idle
from PySide6.QtCore import QPoint
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QApplication

ROOT = Path(__file__).resolve().parents[1]
SIZE = (1400, 880)
# Names for the four Angelic characters the pictures use (what each drawing looks like).
NAMES = ("fork", "curl", "anchor", "seven")


def target(tmp_path: Path, name: str) -> Path:
    folder = ROOT / "docs" if os.environ.get("FEWSHOT_UPDATE_SCREENSHOT") else tmp_path
    return folder / f"guide-{name}.png"


def settle(qtbot, window) -> None:
    """Thumbnails and the preview loaded, every queued paint done."""
    wait_idle(qtbot, window)
    qtbot.waitUntil(lambda: window.loader.wait_idle(100) and QApplication.processEvents() is None, timeout=20_000)
    qtbot.wait(200)


def save(image: QImage, path: Path) -> Path:
    assert not image.isNull() and image.save(str(path)), path
    colours = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    assert len(colours) > 30, f"{path} looks blank ({len(colours)} colours)"
    return path


def menu_over_window(window, menu, submenu=None) -> QImage:
    """The window with a menu (and its open submenu) painted where they pop up: offscreen,
    popups are windows of their own, so a grab of the main window alone shows none."""
    image = window.grab().toImage()
    painter = QPainter(image)
    for popup in (menu, submenu):
        if popup is not None:
            painter.drawImage(window.mapFromGlobal(popup.pos()), popup.grab().toImage())
    painter.end()
    return image


def test_user_guide_pictures(qtbot, tmp_path):
    window = engine_window(qtbot, tmp_path / "gui.ini", size=SIZE)
    assert window.pages.currentWidget() is window.start_page
    settle(qtbot, window)
    start = save(window.grab().toImage(), target(tmp_path, "start"))

    # A project of four characters, one example drawing each, the other seven labeled.
    chars = label_characters(qtbot, window, tmp_path, "omniglot", 4, per_character=8, skip=12)
    assert list(chars) == [f"Angelic/character{n}" for n in range(13, 17)]
    assert window.project.count(status="predicted") == 4 * 7
    for cls, name in zip(list(window.classes), NAMES):
        window.rename_class(cls.id, name)
    qtbot.waitUntil(lambda: tuple(c.name for c in window.classes) == NAMES, timeout=WAIT)
    model = window.results_model
    window.sort_box.setCurrentIndex(0)  # most uncertain first
    settle(qtbot, window)
    qtbot.waitUntil(lambda: model.record(0) is not None, timeout=WAIT)
    window.grid.setCurrentIndex(model.index(0))
    qtbot.waitUntil(lambda: window.detail.record is not None and len(window.detail.bars.rows) == 4, timeout=WAIT)
    qtbot.waitUntil(lambda: window.detail.preview.pixmap() is not None
                    and not window.detail.preview.pixmap().isNull(), timeout=20_000)
    settle(qtbot, window)
    labeled = save(window.grab().toImage(), target(tmp_path, "labeled"))

    window.set_review_mode(True)
    qtbot.waitUntil(lambda: window.review.record is not None, timeout=WAIT)
    settle(qtbot, window)
    assert window.in_review()
    review = save(window.grab().toImage(), target(tmp_path, "review"))
    window.set_review_mode(False)
    settle(qtbot, window)

    file_menu = window.menuBar().actions()[0].menu()
    file_menu.popup(window.mapToGlobal(QPoint(0, window.menuBar().height())))
    qtbot.waitUntil(file_menu.isVisible, timeout=5000)
    export_action = window.export_menu.menuAction()
    file_menu.setActiveAction(export_action)
    rect = file_menu.actionGeometry(export_action)
    window.export_menu.popup(file_menu.mapToGlobal(QPoint(rect.right(), rect.top())))
    qtbot.waitUntil(window.export_menu.isVisible, timeout=5000)
    qtbot.wait(100)
    assert window.act_export_csv in window.export_menu.actions() and window.act_export_model.isEnabled()
    export = save(menu_over_window(window, file_menu, window.export_menu), target(tmp_path, "export"))
    window.export_menu.hide()
    file_menu.hide()
    for path in (start, labeled, review, export):
        assert QImage(str(path)).size() == window.size(), path
    window.close()
