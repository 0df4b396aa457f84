"""From a correction's keypress to the refreshed grid and detail pane, in the app.

Builds a project of N images (distinct 2x2 PNGs) whose embeddings are in the cache as
random 64-d vectors under the bundled `omniglot` model's backbone (the timing does not
depend on their values), 5 classes with one example each, every image predicted. Opens
the main window offscreen on it as the app does (engine, model and method loaded), selects
an image in the grid and presses the number key of another class than its prediction: a
correction, so it becomes an example and every prediction is refreshed. A 1 ms timer on
the main thread watches the record of a tile on screen and the detail pane's record; the
time is from the key press to the paint that shows the refreshed prediction (the
record's probabilities change), for the grid and for the detail pane. Then the time until
the refreshed predictions are in the project file too (the window re-read them).

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_gui_relabel.py [--images 10000,100000] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.runtime import tune_cpu_allocator  # noqa: E402

tune_cpu_allocator()

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from PySide6.QtCore import QEventLoop, QSettings, Qt, QTimer  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

CLASSES = 5


def build_project(folder: Path, path: Path, images: int) -> None:
    from engine.labeling.labeler import Labeler
    from engine.labeling.store import Project
    from engine.model_store import load_model
    folder.mkdir(parents=True)
    for k in range(images):  # distinct files: the cache is keyed by content
        Image.new("RGB", (2, 2), (k % 256, (k // 256) % 256, k // 65536)).save(folder / f"{k:06d}.png")
    model = load_model("omniglot")
    rng = np.random.default_rng(0)
    with Project.create(path) as p:
        p.add_images([folder])
        recs = list(p.iter_images())
        vectors = np.abs(rng.normal(size=(len(recs), 64))).astype(np.float32)
        p.put_embeddings(model.backbone_id, [(r.hash, vectors[k]) for k, r in enumerate(recs)])
        classes = [p.add_class(f"class {j + 1}") for j in range(CLASSES)]
        for j, cid in enumerate(classes):
            p.add_examples(cid, [recs[j].id])
        Labeler(p, model).refresh()


def wait_until(app: QApplication, predicate, timeout_s: float = 300.0, tick_ms: int = 1) -> float:
    """Run the event loop until ``predicate()``; returns the perf_counter time it first held."""
    loop = QEventLoop()
    seen: list[float] = []
    deadline = time.perf_counter() + timeout_s

    def check() -> None:
        if predicate() or time.perf_counter() > deadline:
            seen.append(time.perf_counter())
            loop.quit()
    timer = QTimer(interval=tick_ms)
    timer.timeout.connect(check)
    timer.start()
    check()
    if not seen:
        loop.exec()
    timer.stop()
    if time.perf_counter() > deadline and not predicate():
        raise SystemExit("timed out waiting for the window")
    return seen[0]


def settled(window) -> bool:
    return (window.worker.pending() == 0 and window.reader.pending() == 0 and not window.progress.isVisible()
            and not window._snapshot_pending and not window.results_model.loading)


def measure(app: QApplication, window, row: int) -> dict:
    """One correction: the times (ms after the key press) at which the tile at ``row + 1`` and
    the detail pane first showed the prediction the refresh wrote, and when all was written."""
    model, grid = window.results_model, window.grid
    watch = row + 1
    target = model.record(row)
    other = next(c for c in window.classes if c.id != target.predicted_class_id)
    key = Qt.Key(Qt.Key.Key_1 + window.classes.index(other))
    grid.setFocus()
    grid.setCurrentIndex(model.index(row))
    grid.selectionModel().select(model.index(row), grid.selectionModel().SelectionFlag.ClearAndSelect)
    wait_until(app, lambda: window.detail.record is not None and window.detail.record.id == target.id)
    shown: list[tuple[float, str, int, dict]] = []  # (time, where, image id, probabilities on screen)
    last: dict[str, tuple] = {}

    def look() -> None:
        now = time.perf_counter()
        for where, rec in (("grid", model.record(watch)), ("detail", window.detail.record)):
            if rec is not None and last.get(where) != (rec.id, rec.probs):
                last[where] = (rec.id, rec.probs)
                shown.append((now, where, rec.id, rec.probs))
    look()
    timer = QTimer(interval=1)
    timer.timeout.connect(look)
    timer.start()
    finished: list[float] = []
    def note_finished(*_args) -> None:
        finished.append(time.perf_counter())
    window.worker.finished_job.connect(note_finished)
    t0 = time.perf_counter()
    QTest.keyClick(grid, key)
    quiet_since = [time.perf_counter()]

    def quiet() -> bool:  # every job done and nothing read for half a second
        now = time.perf_counter()
        if not settled(window) or (finished and now - finished[-1] < 0.5):
            quiet_since[0] = now
        return now - quiet_since[0] > 0.5
    wait_until(app, quiet)
    timer.stop()
    window.worker.finished_job.disconnect(note_finished)
    out = {"stored_ms": 1e3 * (finished[-1] - t0)}
    after = window.project.image(target.id)
    print(f"    corrected image {target.id}: predicted {target.predicted_class_id}, now {after.label_class_id} "
          f"({after.label_source}); {len(finished)} jobs; {len(shown)} views", file=sys.stderr)
    for where in ("grid", "detail"):
        # The first moment this pane showed, for the image it showed, what the project now holds.
        hits = [t for t, w, image_id, probs in shown
                if w == where and t >= t0 and probs == window.project.image(image_id).probs]
        out[f"{where}_ms"] = 1e3 * (min(hits) - t0) if hits else float("nan")
    return out


def run(images: int, repeats: int, tmp: Path) -> dict:
    from fewshot_gui.main_window import MainWindow
    app = QApplication.instance() or QApplication(sys.argv)
    path = tmp / f"relabel-{images}.fewshot"
    t = time.perf_counter()
    build_project(tmp / f"images-{images}", path, images)
    build_s = time.perf_counter() - t
    window = MainWindow(QSettings(str(tmp / f"gui-{images}.ini"), QSettings.Format.IniFormat))
    window.resize(1200, 800)
    window.show()
    wait_until(app, lambda: window.engine_ready and window.worker.context.model is not None)
    window.open_project(str(path))
    wait_until(app, lambda: window.project is not None and len(window.classes) == CLASSES)
    wait_until(app, lambda: settled(window) and window.results_model.record(1) is not None)
    t = time.perf_counter()  # then the jobs opening starts after it (the check of the predictions, warming up)
    wait_until(app, lambda: time.perf_counter() > t + 2.0)
    wait_until(app, lambda: settled(window))
    rows = [measure(app, window, 10 + 2 * k) for k in range(repeats)]
    window.close()
    return {"images": images, "build_s": build_s, **{key: [r[key] for r in rows] for key in rows[0]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default="10000,100000", help="project sizes, comma-separated")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.images.split(",")):
            results.append(run(n, args.repeats, Path(tmp)))
            print(f"  {n:,} images done", file=sys.stderr, flush=True)
    print(f"\nKeypress (a correction in the grid) to the refreshed paint, median and worst of {args.repeats}, ms\n")
    print("| images | grid shows the refresh | detail pane shows it | written to the project and re-read |")
    print("|---|---|---|---|")
    for r in results:
        def cell(key):
            return f"{statistics.median(r[key]):.0f} ({max(r[key]):.0f})"
        print(f"| {r['images']:,} | {cell('grid_ms')} | {cell('detail_ms')} | {cell('stored_ms')} |")


if __name__ == "__main__":
    main()
