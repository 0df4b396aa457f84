"""Scrolling the results grid of a 20,000-image project: main-thread time per step and memory.

Builds a project of N generated PNGs (96 x 96, each different: a background, shapes
and a number, so no two share a hash or a thumbnail), five classes, and a prediction
for every image written with ``Project.write_predictions`` (the labeler would give the
same rows, but needs torch and the model: about 10 s more for 20,000 small images here
against under 1 s). Then opens the main window on the offscreen platform, without the
engine, and scrolls the grid from top to bottom three ways:

- ``drag``: the scroll bar dragged down in ``--steps`` even steps (``setValue``), one
  event-loop pass each and then one 16 ms frame of event loop (pages and thumbnails
  arriving meanwhile are handled in it), like a steady drag of the thumb;
- ``page down``: Page Down pressed on the grid until the last image is current, a frame
  between presses;
- ``wheel``: 3 rows per step with no pause at all, the fastest a flick can ask.

Per step it measures the time the main thread spends on the step (the scroll or key
event plus the repaint it causes) and, over the whole run, the longest gaps of a 5 ms
timer on the main thread (anything that held the event loop: a page arriving, a
thumbnail converted, a paint). Memory is the process RSS before the first scroll and
after each run; the thumbnail cache (QPixmapCache) and the pages the model keeps are
bounded, so it must level off rather than grow with the images seen.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_gui_scroll.py [--images 20000] [--steps 400]
        [--keep DIR]

``--keep DIR`` keeps (and reuses) the generated images and the project there.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from engine.labeling import PredictionRow, Project  # noqa: E402

SIZE = 96
CLASSES = ("circle", "square", "triangle", "line", "cross")
FRAME_MS = 16


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _draw(args: tuple[Path, int, int]) -> None:
    folder, start, stop = args
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        img = Image.new("RGB", (SIZE, SIZE), tuple(int(v) for v in rng.integers(120, 256, 3)))
        d = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(2, 6))):
            x0, y0 = (int(v) for v in rng.integers(0, SIZE - 20, 2))
            x1, y1 = x0 + int(rng.integers(10, 40)), y0 + int(rng.integers(10, 40))
            color = tuple(int(v) for v in rng.integers(0, 160, 3))
            _shape(d, int(rng.integers(3)), (x0, y0, x1, y1), color)
        d.text((4, SIZE - 14), str(i), fill=(0, 0, 0))
        sub = folder / f"{i // 1000:03d}"
        img.save(sub / f"img{i:05d}.png", compress_level=1)


def _shape(d: ImageDraw.ImageDraw, kind: int, box: tuple[int, int, int, int], color: tuple) -> None:
    if kind == 0:
        d.ellipse(box, fill=color)
    elif kind == 1:
        d.rectangle(box, fill=color)
    else:
        d.line(box, fill=color, width=3)


def make_images(folder: Path, n: int) -> float:
    t0 = time.perf_counter()
    for k in range((n + 999) // 1000):
        (folder / f"{k:03d}").mkdir(parents=True, exist_ok=True)
    chunks = [(folder, s, min(n, s + 500)) for s in range(0, n, 500)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(_draw, chunks))
    return time.perf_counter() - t0


def make_project(path: Path, folder: Path) -> dict[str, float]:
    times = {}
    with Project.create(path) as p:
        ids = [p.add_class(name) for name in CLASSES]
        t0 = time.perf_counter()
        report = p.add_images([folder])
        times["scan"] = time.perf_counter() - t0
        # "omniglot" is the window's default model: opening the project loads nothing.
        model = p.set_model("omniglot", {"bench": "gui-scroll"})
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for start in range(0, len(report.added), 1000):
            rows = []
            for image_id in report.added[start:start + 1000]:
                probs = rng.dirichlet(np.full(len(ids), 0.4)).astype(np.float32)
                top = np.sort(probs)[::-1]
                rows.append(PredictionRow(image_id, probs, ids, float(-(probs * np.log(probs + 1e-12)).sum()),
                                          float(top[0] - top[1])))
            p.write_predictions(model, rows)
        times["predictions"] = time.perf_counter() - t0
        for k, cid in enumerate(ids):  # a few examples, so the class cards show thumbnails
            p.add_examples(cid, report.added[k * 3:k * 3 + 3])
    return times


class Stalls:
    """Gaps between ticks of a 5 ms timer on the main thread."""

    def __init__(self) -> None:
        from PySide6.QtCore import QTimer
        self.gaps: list[float] = []
        self._last = 0.0
        self.timer = QTimer(interval=5)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last:
            self.gaps.append(now - self._last)
        self._last = now

    def start(self) -> None:
        self.gaps, self._last = [], 0.0
        self.timer.start()

    def stop(self) -> list[float]:
        self.timer.stop()
        return self.gaps


def frame(app, ms: int = FRAME_MS) -> None:
    """Run the event loop for one frame's time, as between two steps of a real scroll."""
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.001)


def wait_until(app, cond, timeout: float = 60.0) -> bool:
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        app.processEvents()
        if cond():
            return True
        time.sleep(0.002)
    return False


def visible_filled(window) -> bool:
    """Whether every tile on screen has its record and its thumbnail."""
    from PySide6.QtCore import QPoint
    grid, model = window.grid, window.results_model
    bottom = grid.viewport().rect().bottom()
    first = grid.indexAt(QPoint(grid.gridSize().width() // 2, 1))
    if not first.isValid():
        return model.rowCount() == 0
    for r in range(first.row(), model.rowCount()):
        if grid.visualRect(model.index(r)).top() > bottom:
            break
        rec = model.record(r)
        if rec is None or window.loader.pixmap(rec.path, 112) is None:
            return False
    return True


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run(args: argparse.Namespace, base: Path) -> None:
    folder, project = base / "images", base / "scroll.fewshot"
    if not (folder / f"{(args.images - 1) // 1000:03d}" / f"img{args.images - 1:05d}.png").exists():
        print(f"generating {args.images:,} PNGs ... {make_images(folder, args.images):.1f} s")
    if not project.exists():
        times = make_project(project, folder)
        print(f"project: scan {times['scan']:.1f} s, predictions {times['predictions']:.1f} s")

    from PySide6.QtCore import QSettings, Qt
    from PySide6.QtGui import QPixmapCache
    from PySide6.QtTest import QTest

    from fewshot_gui.app import make_app
    from fewshot_gui.main_window import MainWindow
    from fewshot_gui.results_model import MAX_PAGES, PAGE

    app = make_app([])
    window = MainWindow(QSettings(str(base / "gui.ini"), QSettings.Format.IniFormat), start_engine=False)
    window.resize(1400, 900)
    window.show()
    window.worker.start()
    t_open = time.perf_counter()
    window.open_project(str(project))
    assert wait_until(app, lambda: window.project is not None and window.results_model.rowCount() == args.images,
                      120), "the project did not open"
    grid = window.grid
    assert wait_until(app, lambda: visible_filled(window), 60)
    shown = time.perf_counter() - t_open
    # The view lays the tiles out in batches (QListView's Batched mode), the scroll range
    # growing as it goes: measure once it has settled.
    bar = grid.verticalScrollBar()
    expected = -(-args.images // max(1, grid.viewport().width() // grid.gridSize().width())) \
        * grid.gridSize().height() - grid.viewport().height()
    wait_until(app, lambda: bar.maximum() >= expected - grid.gridSize().height(), 60)
    laid_out = time.perf_counter() - t_open
    # The app keeps its start-up objects out of garbage collections (worker.py, after the
    # engine loads, which this window without the engine never does): do the same here.
    gc.freeze()
    print(f"first tiles shown {shown:.2f} s after opening, all {args.images:,} laid out after {laid_out:.2f} s")
    per_row = max(1, grid.viewport().width() // grid.gridSize().width())
    print(f"{window.results_model.rowCount():,} images, {per_row} per row, scroll range {bar.maximum():,} px, "
          f"page {bar.pageStep()} px; Qt platform {app.platformName()}")

    results = []
    rss0 = rss_mb()
    memory = [("after opening", rss0)]
    stalls = Stalls()

    # --- drag: the thumb from top to bottom in even steps
    bar.setValue(0)
    wait_until(app, lambda: visible_filled(window), 30)
    stalls.start()
    steps = []
    mid_rss = None
    for k in range(1, args.steps + 1):
        t0 = time.perf_counter()
        bar.setValue(round(bar.maximum() * k / args.steps))
        app.processEvents()
        steps.append(time.perf_counter() - t0)
        frame(app)
        if k == args.steps // 2:
            mid_rss = rss_mb()
    gaps = stalls.stop()
    t0 = time.perf_counter()
    wait_until(app, lambda: visible_filled(window), 30)
    fill = time.perf_counter() - t0
    results.append(("drag (setValue)", steps, gaps, f"last page filled {fill * 1000:.0f} ms after"))
    memory += [("drag, half way", mid_rss), ("drag, at the bottom", rss_mb())]

    # --- page down from the top until the last image is current
    bar.setValue(0)
    grid.setCurrentIndex(window.results_model.index(0))
    grid.setFocus()
    wait_until(app, lambda: visible_filled(window), 30)
    stalls.start()
    steps = []
    # Page Down keeps the column: it ends in the last row of tiles, not always on the last image.
    while True:
        before = grid.currentIndex().row()
        t0 = time.perf_counter()
        QTest.keyClick(grid, Qt.Key.Key_PageDown)
        app.processEvents()
        steps.append(time.perf_counter() - t0)
        frame(app)
        if grid.currentIndex().row() == before:
            break
    gaps = stalls.stop()
    results.append((f"page down ({len(steps)} keys)", steps, gaps,
                    "reached the bottom" if bar.value() == bar.maximum() else "DID NOT reach the bottom"))
    memory.append(("page down, at the bottom", rss_mb()))

    # --- wheel: 3 rows per step, no pause
    bar.setValue(0)
    wait_until(app, lambda: visible_filled(window), 30)
    stalls.start()
    steps = []
    step_px = 3 * grid.gridSize().height()
    while bar.value() < bar.maximum():
        t0 = time.perf_counter()
        bar.setValue(bar.value() + step_px)
        app.processEvents()
        steps.append(time.perf_counter() - t0)
    gaps = stalls.stop()
    results.append((f"wheel, no pause ({len(steps)} steps)", steps, gaps, ""))
    memory.append(("wheel, at the bottom", rss_mb()))

    print()
    print("| run | steps | step median ms | step p95 ms | step max ms | loop gap p95 ms | loop gap max ms | |")
    print("|---|---|---|---|---|---|---|---|")
    for name, st, gp, note in results:
        ms = [s * 1000 for s in st]
        gms = [g * 1000 for g in gp]
        print(f"| {name} | {len(st)} | {statistics.median(ms):.1f} | {pct(ms, 95):.1f} | {max(ms):.1f} | "
              f"{pct(gms, 95):.1f} | {max(gms) if gms else float('nan'):.1f} | {note} |")
    print()
    print("| memory | RSS MB | vs after opening |")
    print("|---|---|---|")
    for name, value in memory:
        print(f"| {name} | {value:.0f} | {value - rss0:+.0f} |")
    print(f"\nthe model keeps {len(window.results_model._pages)} pages of {PAGE} records (at most {MAX_PAGES}); "
          f"thumbnail cache limit {QPixmapCache.cacheLimit() // 1024} MB")
    window.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--steps", type=int, default=400, help="steps of the scroll-bar drag")
    ap.add_argument("--keep", type=Path, help="keep the images and project in this folder (and reuse them)")
    args = ap.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        run(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-gui-scroll-") as tmp:
            run(args, Path(tmp))


if __name__ == "__main__":
    main()
