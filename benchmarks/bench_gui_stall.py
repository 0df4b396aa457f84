"""Main-thread stalls while a folder is added and labeled in the window.

Opens the main window offscreen with the bundled Omniglot model, makes a project with
three classes and three examples each, then File > Add Folder to Label on N Omniglot
PNGs (scanned, then labeled in the background, as a person would do it). A 5 ms timer
on the main thread records every gap between its ticks; a watchdog thread samples the
main thread's Python stack whenever it has not ticked for ``--sample-ms``, so each long
stall comes with where the main thread was (or was waiting for the GIL). Prints the
gaps per phase (scan, label) and the most common stacks of the long ones.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_gui_stall.py [--images 2000] [--runs 3]
        [--load N] [--worker-nice K]

``--load N`` runs N busy processes meanwhile (a machine shared with other work);
``--worker-nice K`` overrides the engine worker's nice value (fewshot_gui/worker.py).
"""
from __future__ import annotations

import argparse
import collections
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zipfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.runtime import tune_cpu_allocator  # noqa: E402

tune_cpu_allocator()

SHARED = Path(os.environ.get("FEWSHOT_SHARED", ROOT.parent / "shared"))


def extract(base: Path, n: int) -> tuple[dict[str, list[Path]], Path]:
    """Examples of three characters, and ``n`` other drawings to label."""
    zip_path = SHARED / "data" / "omniglot" / "images_background.zip"
    if not zip_path.is_file():
        sys.exit(f"error: {zip_path} is missing; lay out ../shared or set FEWSHOT_SHARED")
    examples: dict[str, list[Path]] = {}
    folder = base / "to_label"
    with zipfile.ZipFile(zip_path) as z:
        names = sorted(x for x in z.namelist() if x.endswith(".png"))
        chars = sorted({str(Path(x).parent) for x in names})[:3]
        for c in chars:
            for x in [x for x in names if str(Path(x).parent) == c][:3]:
                target = base / "examples" / Path(c).name / Path(x).name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(z.read(x))
                examples.setdefault(Path(c).name, []).append(target)
        rest = [x for x in names if str(Path(x).parent) not in chars]
        for x in rest[:: max(1, len(rest) // n)][:n]:
            target = folder / x.replace("/", "_")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(x))
    return examples, folder


class StallProbe:
    """Gaps between ticks of a main-thread timer, tagged with the phase, and stacks of
    the main thread sampled by a watchdog while a gap is longer than ``sample_ms``."""

    def __init__(self, window, sample_ms: float) -> None:
        from PySide6.QtCore import QTimer
        self.window = window
        self.sample_s = sample_ms / 1000
        self.gaps: list[tuple[str, float]] = []
        self.busy: list[tuple[float, float]] = []
        self._cpu = 0.0
        self.stacks: collections.Counter = collections.Counter()
        self._last = 0.0
        self._main = threading.main_thread().ident
        self._main_tid = threading.main_thread().native_id
        self.states: collections.Counter = collections.Counter()
        self._stop = threading.Event()
        self.timer = QTimer(interval=5)
        self.timer.timeout.connect(self._tick)
        self._watch = threading.Thread(target=self._watchdog, name="stall-watchdog", daemon=True)

    def phase(self) -> str:
        w = self.window
        if w.labeling:
            return "label"
        text = w.progress.text.text().lower() if w.progress.isVisible() else ""
        return "scan" if "reading" in text or "adding" in text else "other"

    def _tick(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        if self._last:
            gap = now - self._last
            self.gaps.append((self.phase(), gap))
            if gap > 0.05:  # how much of a long gap the main thread itself was computing
                self.busy.append((gap, cpu - self._cpu))
        self._last, self._cpu = now, cpu

    def _watchdog(self) -> None:
        sampled_for = 0.0
        while not self._stop.wait(0.005):
            last = self._last
            if last and time.perf_counter() - last > self.sample_s and last != sampled_for:
                sampled_for = last
                self.states[_thread_states(self._main_tid)] += 1
                frame = sys._current_frames().get(self._main)
                if frame is not None:
                    stack = traceback.extract_stack(frame)[-6:]
                    self.stacks[" <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}"
                                            for f in reversed(stack))] += 1

    def start(self) -> None:
        self.timer.start()
        self._watch.start()

    def stop(self) -> None:
        self.timer.stop()
        self._stop.set()
        self._watch.join()


def _thread_states(main_tid: int) -> str:
    """The main thread's scheduler state (R: running or waiting for a CPU, S: sleeping,
    e.g. on the GIL) and which threads of the process are running or runnable."""
    running = []
    main_state = "?"
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            comm = (task / "comm").read_text().strip()
        except OSError:
            continue
        state = stat[stat.rindex(")") + 2]
        if int(task.name) == main_tid:
            main_state = state
        elif state == "R" and comm != "stall-watchdog":
            running.append(comm)
    return f"main {main_state}; running: {', '.join(sorted(running)) or 'none'}"


def run_once(args, base: Path, examples, folder: Path, run: int) -> StallProbe:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from fewshot_gui.main_window import MainWindow

    app = QApplication.instance()
    window = MainWindow(QSettings(str(base / f"gui{run}.ini"), QSettings.Format.IniFormat))
    window.resize(1400, 880)
    window.show()

    def wait(cond, timeout=300.0):
        end = time.perf_counter() + timeout
        while time.perf_counter() < end:
            app.processEvents()
            if cond():
                return
            time.sleep(0.002)
        raise TimeoutError("the window did not get there in time")

    def idle():
        return (window.worker.pending() == 0 and window.reader.pending() == 0 and not window.progress.isVisible()
                and not window._snapshot_pending)

    wait(lambda: window.engine_ready and window.worker.context.model is not None)
    window.new_project(str(base / f"stall{run}.fewshot"))
    wait(lambda: window.project is not None)
    for name in examples:
        window.add_class(name)
    wait(lambda: len(window.classes) == len(examples))
    for c in window.classes:
        window.add_examples(c.id, [str(p) for p in examples[c.name]], [])
    wait(idle)
    probe = StallProbe(window, args.sample_ms)
    probe.start()
    t0 = time.perf_counter()
    window.add_folder(str(folder))
    wait(lambda: window.labeling)
    wait(lambda: not window.labeling and idle())
    probe.stop()
    elapsed = time.perf_counter() - t0
    n = window.project.count(status="predicted")
    print(f"run {run}: {n:,} images scanned and labeled in {elapsed:.1f} s")
    window.close()
    return probe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sample-ms", type=float, default=40.0, help="sample the main thread's stack past this gap")
    ap.add_argument("--load", type=int, default=0, help="busy processes to run meanwhile")
    ap.add_argument("--worker-nice", type=int, help="nice value of the engine worker thread")
    ap.add_argument("--scan-workers", type=int, help="threads that probe files while scanning (scan.probe_all)")
    args = ap.parse_args()
    if args.scan_workers:
        import engine.labeling.store.images as store  # where the store calls it
        probe_all = store.probe_all
        store.probe_all = lambda paths, progress=None: probe_all(paths, progress, workers=args.scan_workers)
    from fewshot_gui import worker
    from fewshot_gui.app import make_app
    if args.worker_nice is not None:
        worker.WORKER_NICE = args.worker_nice
    make_app([])
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    try:
        measure(args)
    finally:
        for h in hogs:
            h.kill()
            h.wait()


class GcTimes:
    """Every garbage collection's duration, generation and thread."""

    def __init__(self) -> None:
        self.done: list[tuple[float, int, str]] = []
        self._start: dict[int, float] = {}
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        me = threading.get_ident()
        if phase == "start":
            self._start[me] = time.perf_counter()
        elif me in self._start:
            self.done.append((time.perf_counter() - self._start.pop(me), info["generation"],
                              threading.current_thread().name))


def measure(args) -> None:
    print(f"worker nice {__import__('fewshot_gui.worker', fromlist=['x']).WORKER_NICE}, "
          f"scan threads {args.scan_workers or 'default'}, {args.load} busy processes, {os.cpu_count()} CPUs")
    gcs = GcTimes()
    with tempfile.TemporaryDirectory(prefix="bench-gui-stall-") as tmp:
        base = Path(tmp)
        examples, folder = extract(base, args.images)
        gaps: dict[str, list[float]] = collections.defaultdict(list)
        worst: dict[str, list[float]] = collections.defaultdict(list)
        stacks: collections.Counter = collections.Counter()
        states: collections.Counter = collections.Counter()
        busy: list[tuple[float, float]] = []
        for run in range(args.runs):
            probe = run_once(args, base, examples, folder, run)
            per_run: dict[str, list[float]] = collections.defaultdict(list)
            for phase, g in probe.gaps:
                per_run[phase].append(g * 1000)
            for phase, values in per_run.items():
                gaps[phase] += values
                worst[phase].append(max(values))
            stacks.update(probe.stacks)
            states.update(probe.states)
            busy += probe.busy
    print()
    print("| phase | ticks | gap median ms | p99 ms | max ms per run | gaps > 50 ms | gaps > 100 ms |")
    print("|---|---|---|---|---|---|---|")
    for phase in ("scan", "label", "other"):
        values = sorted(gaps.get(phase, []))
        if not values:
            continue
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        print(f"| {phase} | {len(values)} | {statistics.median(values):.1f} | {p99:.1f} | "
              f"{', '.join(f'{w:.0f}' for w in worst[phase])} | {sum(v > 50 for v in values)} | "
              f"{sum(v > 100 for v in values)} |")
    slow_gc = sorted(gcs.done, reverse=True)[:5]
    print(f"\ngarbage collections: {len(gcs.done)}, {sum(d for d, _, _ in gcs.done) * 1000:.0f} ms in all; longest: "
          + ", ".join(f"{d * 1000:.0f} ms (generation {g}, {name})" for d, g, name in slow_gc))
    if busy:
        wall = sum(g for g, _ in busy)
        cpu = sum(c for _, c in busy)
        print(f"\ngaps over 50 ms: {len(busy)}, {wall * 1000:.0f} ms in all, of which the main thread computed "
              f"{cpu * 1000:.0f} ms ({cpu / wall:.0%}); the rest it waited (for a CPU or the GIL)")
    if states:
        print(f"\nthreads during gaps over {args.sample_ms:.0f} ms:")
        for state, count in states.most_common(10):
            print(f"  {count:3d}x {state}")
    if stacks:
        print(f"\nmain thread during gaps over {args.sample_ms:.0f} ms (innermost first), most common:")
        for stack, count in stacks.most_common(8):
            print(f"  {count:3d}x {stack}")


if __name__ == "__main__":
    main()
