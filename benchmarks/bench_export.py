"""Export Model after labeling: how long the photo model's export takes, with the parity check.

Labels 40 generated photos with the `photos` model (EfficientNet-Lite0) from two examples
per class, as `fewshot label` and the app do; labeling exports the backbone to ONNX once
and checks it, into the user cache. Then times the export as the app's worker runs it
(`export_from_project` on the open project, in the same process: File > Export Model...),
and as `fewshot export` runs it in a fresh process (Python, torch and the model loading
included). Both rerun with the cached backbone export deleted first, to show what reusing
it saves. Every export checks ONNX against PyTorch on the examples (to 1e-4).

    .venv/bin/python benchmarks/bench_export.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
CACHE = tempfile.mkdtemp(prefix="bench-export-cache-")
atexit.register(shutil.rmtree, CACHE, True)  # the exported backbone it leaves is ours to remove
os.environ["FEWSHOT_CACHE_DIR"] = CACHE  # a cache of its own: the "cold" rows delete from it

from engine.runtime import tune_cpu_allocator  # noqa: E402

tune_cpu_allocator()

from bench_labeling import generate_photos  # noqa: E402

from engine.export.onnx_model import export_from_project  # noqa: E402
from engine.labeling.labeler import Labeler  # noqa: E402
from engine.labeling.runners.onnx_runner import exported_backbone_file  # noqa: E402
from engine.labeling.store import Project  # noqa: E402
from engine.model_store import load_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows: dict[str, list[float]] = {"in the app, backbone export reused": [], "in the app, backbone exported again": [],
                                    "fewshot export, backbone export reused": [],
                                    "fewshot export, backbone exported again": []}
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp_name:
        tmp = Path(tmp_name)
        files = generate_photos(tmp / "photos", 40)
        model = load_model("photos")
        path = tmp / "photos.fewshot"
        with Project.create(path) as p:
            p.add_examples(p.add_class("a"), files[:2])
            p.add_examples(p.add_class("b"), files[2:4])
            p.add_images([tmp / "photos"])
            Labeler(p, model).label()  # exports and checks the backbone, as labeling does
        cached = exported_backbone_file(model)
        assert cached.is_file(), f"labeling left no backbone export at {cached}"
        keep = cached.read_bytes()
        diffs = []
        for k in range(args.repeats):
            for cold in (False, True):
                how = "exported again" if cold else "export reused"
                if cold:
                    cached.unlink()
                with Project.open(path) as p:
                    t0 = time.perf_counter()
                    report = export_from_project(p, tmp / f"app-{k}-{cold}.onnx")
                    rows[f"in the app, backbone {how}"].append(time.perf_counter() - t0)
                diffs.append(report.parity_max_abs_diff)
                if cold:
                    cached.unlink()
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "engine.cli", "export", "--project", str(path), "--out",
                                str(tmp / f"cli-{k}-{cold}.onnx")], check=True, cwd=ROOT, capture_output=True)
                rows[f"fewshot export, backbone {how}"].append(time.perf_counter() - t0)
                cached.write_bytes(keep)  # the next rows start from labeling's own export
    print(f"\nExport of the photo model (Lite0, 2 classes), seconds, median (min-max) of {args.repeats}; "
          f"parity with PyTorch at most {max(diffs):.2g}\n")
    print("| export | seconds |")
    print("|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}) |")


if __name__ == "__main__":
    main()
