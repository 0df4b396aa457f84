"""Project store speed: one page of a 100,000-image project for every sort and filter,
writing predictions, and scanning a folder.

Builds the project through the store, then fills it with plain SQL (the bulk insert
is not what is measured) and reopens it. Then, for every filter and sort, times
``Project.query`` pages at the start, the middle and the end of the listing, in both
directions (median of ``--repeats``): "after a write" (one prediction written just
before, as while labeling runs, so a sorted order is rebuilt) and "browsing" (the
next page with nothing written between). Then ``write_predictions`` over every image
in batches, the pages again, and ``add_images`` on a folder of small PNGs. The target
is a page in under 50 ms.

    python benchmarks/bench_store.py [--images 100000] [--classes 5] [--repeats 5] [--scan-files 20000]
"""
from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.labeling import PredictionRow, Project  # noqa: E402
from engine.labeling.schema import SORT_COLUMNS  # noqa: E402


def build(path: Path, n_images: int, n_classes: int, seed: int = 0) -> None:
    with Project.create(path) as project:
        class_ids = [project.add_class(f"class {k}") for k in range(n_classes)]
        model_id = project.set_model("bench", {"seed": seed})
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n_images, n_classes)).astype(np.float32) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    top2 = np.sort(probs, 1)[:, ::-1][:, :2]
    entropy = -(probs * np.log(probs)).sum(1)
    kind = rng.choice(4, size=n_images, p=[0.2, 0.73, 0.05, 0.02])  # unlabeled, predicted, confirmed, error
    cids = np.asarray(class_ids, dtype=np.int64)
    now = time.time()
    images, preds, labels = [], [], []
    for i in range(n_images):
        image_id = i + 1
        path_i = f"/photos/folder{i // 1000:03d}/IMG_{rng.integers(1 << 30):010d}.jpg"
        if kind[i] == 0:
            images.append((image_id, path_i, f"h{i}", 640, 480, None, now, "unlabeled", None, None,
                           None, None, None, None, None, None))
            continue
        if kind[i] == 3:
            images.append((image_id, path_i, f"h{i}", None, None, "truncated", now, "error", None, None,
                           None, None, None, None, None, None))
            continue
        k = int(probs[i].argmax())
        metrics = (float(top2[i, 0]), float(entropy[i]), float(top2[i, 0] - top2[i, 1]),
                   float(entropy[i] * 0.1), float(rng.exponential()))
        human = kind[i] == 2
        label = int(rng.choice(cids)) if human else int(cids[k])
        images.append((image_id, path_i, f"h{i}", 640, 480, None, now, "confirmed" if human else "predicted",
                       label, "human" if human else "model", int(cids[k]), *metrics))
        preds.append((image_id, model_id, int(cids[k]), probs[i].tobytes(), cids.tobytes(), *metrics, now))
        labels.append((image_id, label, "human" if human else "model", now))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO images(id, path, hash, width, height, error, added, status, label_class_id, "
                     "label_source, predicted_class_id, confidence, entropy, margin, mutual_info, ood_score) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", images)
    conn.executemany("INSERT INTO predictions(image_id, model_id, class_id, probs, class_ids, confidence, entropy, "
                     "margin, mutual_info, ood_score, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", preds)
    conn.executemany("INSERT INTO labels(image_id, class_id, source, time) VALUES (?, ?, ?, ?)", labels)
    conn.execute("COMMIT")
    conn.close()


def timed(fn, repeats: int, before=None) -> tuple[float, object]:
    """Median milliseconds of ``fn`` over ``repeats`` runs (``before`` runs untimed before each)."""
    times, result = [], None
    for _ in range(repeats):
        if before is not None:
            before()
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), result


def bench_pages(project: Project, repeats: int, limit: int) -> float:
    """Each cell: the slowest of the first, middle and last page, ascending and descending,
    "after a write" (one prediction written just before, as while labeling runs, so
    sorted orders are rebuilt) / "browsing" (the next page, nothing written between)."""
    first_class = project.classes()[0].id
    some_image = project.query(status="predicted", limit=1)[0]
    model_id = project.current_model()[0]

    def write_one() -> None:
        project.write_predictions(model_id, [PredictionRow(some_image.id, list(some_image.probs.values()),
                                                           list(some_image.probs), some_image.entropy,
                                                           some_image.margin, None, some_image.ood_score)])

    filters = {
        "all": {},
        "status=predicted": {"status": "predicted"},
        "status=confirmed": {"status": "confirmed"},
        "status=unlabeled": {"status": "unlabeled"},
        "class": {"class_id": first_class},
        "class+predicted": {"class_id": first_class, "status": "predicted"},
        "class+confirmed": {"class_id": first_class, "status": "confirmed"},
    }
    t0 = time.perf_counter()
    project.query(sort="entropy", limit=limit)
    print(f"\nfirst sorted query: {(time.perf_counter() - t0) * 1000:.0f} ms")
    print(f"page of {limit}, ms (median of {repeats}): slowest of first/middle/last page, asc and desc; "
          "after a write / browsing")
    header = f"{'filter':<18} {'rows':>7} {'count':>6}  " + "  ".join(f"{s:>11}" for s in SORT_COLUMNS)
    print(header)
    print("-" * len(header))
    worst = 0.0
    for name, flt in filters.items():
        t_count, n = timed(lambda: project.count(**flt), repeats)
        cells = []
        for sort in SORT_COLUMNS:
            cold, warm = [], []
            for offset in (0, max(0, n // 2), max(0, n - limit)):
                for desc in (False, True):
                    def page():
                        return project.query(**flt, sort=sort, descending=desc, offset=offset, limit=limit)
                    t, rows = timed(page, repeats, before=write_one)
                    assert len(rows) == min(limit, max(0, n - offset)), (name, sort, offset, len(rows))
                    cold.append(t)
                    warm.append(timed(page, repeats)[0])
            worst = max(worst, *cold, *warm)
            cells.append(f"{max(cold):5.1f}/{max(warm):4.1f}")
        print(f"{name:<18} {n:>7} {t_count:6.1f}  " + "  ".join(f"{c:>11}" for c in cells))
    print(f"worst page: {worst:.1f} ms")
    return worst


def bench_write(project: Project, batch: int) -> None:
    classes = [c.id for c in project.classes()]
    ids = [r.id for r in project.iter_images() if r.error is None]
    model_id = project.set_model("bench-relabel", {})
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(len(classes)), size=len(ids)).astype(np.float32)
    t0 = time.perf_counter()
    for start in range(0, len(ids), batch):
        rows = [PredictionRow(ids[j], probs[j], classes, 0.5, 0.1, None, 1.0)
                for j in range(start, min(start + batch, len(ids)))]
        project.write_predictions(model_id, rows)
    dt = time.perf_counter() - t0
    print(f"\nwrite_predictions: {len(ids)} images in batches of {batch}: {dt:.2f} s "
          f"({len(ids) / dt:,.0f} images/s, {dt / -(-len(ids) // batch) * 1000:.1f} ms per batch)")


def bench_scan(tmp: Path, n_files: int) -> None:
    from PIL import Image
    folder = tmp / "scan"
    rng = np.random.default_rng(2)
    for i in range(n_files):
        sub = folder / f"d{i // 500:03d}"
        if i % 500 == 0:
            sub.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, size=(28, 28), dtype=np.uint8)).save(sub / f"img{i:06d}.png")
    with Project.create(tmp / "scan.fewshot") as project:
        t0 = time.perf_counter()
        report = project.add_images([folder])
        dt = time.perf_counter() - t0
    print(f"\nadd_images: {n_files} PNG files (28x28) in 40 folders: {dt:.2f} s ({n_files / dt:,.0f} files/s), "
          f"{len(report.added)} added")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--scan-files", type=int, default=20_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.fewshot"
        t0 = time.perf_counter()
        build(path, args.images, args.classes)
        print(f"built {args.images} images, {args.classes} classes in {time.perf_counter() - t0:.1f} s; "
              f"file {path.stat().st_size / 1e6:.1f} MB (sqlite {sqlite3.sqlite_version})")
        t0 = time.perf_counter()
        with Project.open(path) as project:
            project.query(sort="entropy", limit=1)  # waits for the sort index loaded in the background
            print(f"open + first sorted query at once (waits for the background load of the sort index): "
                  f"{(time.perf_counter() - t0) * 1000:.0f} ms")
        with Project.open(path) as project:
            time.sleep(2)  # a user takes longer than the background load to ask for a sorted view
            bench_pages(project, args.repeats, args.limit)
            bench_write(project, args.batch)
            bench_pages(project, max(1, args.repeats // 2), args.limit)
        if args.scan_files:
            bench_scan(Path(tmp), args.scan_files)


if __name__ == "__main__":
    main()
