"""The window itself: it shows fast without torch, offers the three ways to start, has the
menus the issue lists (and none that do nothing), and remembers its geometry."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PySide6.QtCore import QSettings

from fewshot_gui.main_window import MainWindow

ROOT = Path(__file__).resolve().parents[1]

STARTUP = """
import sys, time
t0 = time.perf_counter()
from fewshot_gui.app import make_app
from fewshot_gui.main_window import MainWindow
app = make_app([])
w = MainWindow()
w.show()
app.processEvents()
shown = time.perf_counter() - t0
print(shown, 'torch' in sys.modules)
w.close()
"""


def test_window_shows_before_torch_loads(tmp_path):
    """A fresh interpreter (like `fewshot-gui`) shows the window in under 2 s, torch not imported yet."""
    env = {"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", STARTUP], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    seconds, torch_loaded = out.stdout.split()
    assert torch_loaded == "False"
    assert float(seconds) < 2.0, f"window took {float(seconds):.2f} s to show"


def test_start_page_menus_and_settings(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings, start_engine=False)
    qtbot.addWidget(window)
    window.show()
    assert window.pages.currentWidget() is window.start_page
    for button in (window.start_page.new_button, window.start_page.open_button, window.start_page.folder_button):
        assert button.isVisible() and button.isEnabled()
    menus = {a.text().replace("&", ""): a.menu() for a in window.menuBar().actions()}
    assert list(menus) == ["File", "Edit", "View", "Labeling", "Help"]
    file_items = [a.text().replace("&", "") for a in menus["File"].actions() if not a.isSeparator()]
    for item in ("New Project…", "Open Project…", "Open Recent", "Add Folder to Label…", "Export", "Quit"):
        assert item in file_items, file_items
    assert [a.text().replace("&", "") for a in menus["Edit"].actions()][:2] == ["Undo", "Redo"]
    # Without a project, what needs one is disabled rather than failing.
    assert not window.act_export_csv.isEnabled() and not window.act_add_folder.isEnabled()
    assert not window.act_undo.isEnabled()
    window.resize(780, 600)  # within the offscreen screen (800 x 800), which restoring clamps to
    window.close()
    again = MainWindow(QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat), start_engine=False)
    qtbot.addWidget(again)
    assert again.height() == 600  # (the width is held at the window's minimum on this small screen)
    again.close()


def test_progress_area_shows_a_step_with_nothing_to_count_as_busy(qtbot):
    from fewshot_gui.main_window import ProgressArea
    area = ProgressArea()
    qtbot.addWidget(area)
    area.show_progress("labeling", 32, 196, 50.0, 3.0)
    assert area.bar.maximum() == 196 and area.bar.value() == 32 and area.text.text().startswith("Labeling")
    area.show_progress("preparing onnxruntime: timing it against PyTorch (once per machine)", 0, 0, 0.0, None)
    assert area.bar.maximum() == 0, "an indeterminate bar, not 0 / 0"
    assert area.text.text() == "Preparing onnxruntime: timing it against PyTorch (once per machine)\u2026"
