"""Render assets/icons/fewshot-labeler.svg to the PNG sizes desktops ask for.

    .venv/bin/python packaging/render_icons.py        # rewrites assets/icons/fewshot-labeler-<N>.png

The PNGs are committed (installers and PyInstaller read them without Qt's SVG support);
tests/test_packaging.py renders again and compares, so an edited SVG cannot ship stale PNGs.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ICONS = Path(__file__).resolve().parents[1] / "assets" / "icons"
SVG = ICONS / "fewshot-labeler.svg"
SIZES = (16, 22, 24, 32, 48, 64, 128, 256, 512)  # the hicolor theme's usual sizes


def png_path(size: int, folder: Path = ICONS) -> Path:
    return folder / f"fewshot-labeler-{size}.png"


def render(out_dir: Path = ICONS) -> list[Path]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer
    from PySide6.QtWidgets import QApplication

    # A QApplication, not the lighter QGuiApplication: in a process that later shows widgets
    # (the test suite) the first application object is the one everybody gets.
    app = QApplication.instance() or QApplication(sys.argv[:1])  # noqa: F841 (painting needs one)
    renderer = QSvgRenderer(str(SVG))
    if not renderer.isValid():
        raise SystemExit(f"error: {SVG} is not an SVG Qt can draw; fix the file and run again")
    written = []
    for size in SIZES:
        image = QImage(size, size, QImage.Format.Format_ARGB32)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
        painter.end()
        path = png_path(size, out_dir)
        if not image.save(str(path)):
            raise SystemExit(f"error: cannot write {path}; check the folder is writable")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in render():
        print(p)
