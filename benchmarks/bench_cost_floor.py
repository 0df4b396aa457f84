"""What folder labeling costs per image besides the forward pass, and the best share of
the limit (the bare forward, benchmarks/bench_labeling.py) that this work leaves any pipeline.

    python benchmarks/bench_cost_floor.py [--omniglot 2000] [--photos 500] [--repeats 3]

On a CPU every image costs the forward pass ``F`` plus work no pipeline can skip:
reading the file, decoding it, and the database writes the labeler must make
(its embedding and its prediction, committed per batch). The limit spends every
core on ``F`` alone; labeling spends the same cores on ``F + other``, so with
every core busy it reaches at most ``F / (F + other)`` of the limit (work that
runs at once slows down about alike: two forward streams here each run slower
than one alone, and decoding beside them would too). Each cost is the CPU time
of one thread doing only that, per image, best of ``--repeats``:

- ``F``: onnxruntime, one thread, the labeler's batches, normalisation included;
- ``read``: open and read the file (warm page cache);
- ``decode``: the labeler's own decode into a batch row (Pillow: read, decode, resize);
- ``C decode``: torchvision.io.decode_image on bytes already read, no resize: a
  decoder with no Python in it, a floor for any decoder;
- ``write``: Project.put_embeddings and write_prediction_arrays, per batch.

``best`` is ``F / (F + decode + write)``: the labeler's work, perfectly overlapped;
``floor best`` uses ``read + C decode`` instead of ``decode`` (no Python, no
resize), a bound for any decoder.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from engine.runtime import tune_cpu_allocator  # noqa: E402

tune_cpu_allocator()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchvision.io import decode_image  # noqa: E402

from bench_labeling import extract_omniglot, generate_photos, make_project  # noqa: E402
from engine.data.pixels import decode_into  # noqa: E402
from engine.data.transforms import load_uint8  # noqa: E402
from engine.labeling.embedder import available_cores  # noqa: E402
from engine.labeling.runners import OnnxRunner, onnx_backbone_path  # noqa: E402
from engine.labeling.store import Project  # noqa: E402
from engine.model_store import LoadedModel, load_model  # noqa: E402


def cpu_per_item(fn: Callable[[], int], repeats: int) -> float:
    """Best-of CPU seconds of this thread per item; ``fn`` returns how many items it did."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.thread_time()
        n = fn()
        best = min(best, (time.thread_time() - t0) / n)
    return best


def forward_cost(model: LoadedModel, pixels: torch.Tensor, batch: int, repeats: int) -> float:
    runner = OnnxRunner(model, onnx_backbone_path(model), batch)
    runner.set_threads(1)
    batches = [pixels[k:k + batch] for k in range(0, len(pixels), batch)]
    runner(batches[0])  # warm-up

    def run() -> int:
        for x in batches:
            runner(x)
        return len(pixels)
    return cpu_per_item(run, repeats)


def write_cost(model: LoadedModel, folder: Path, files: list[Path], batch: int, tmp: Path, repeats: int) -> float:
    """The labeler's writes for every image: embeddings, then predictions, a batch at a time."""
    best = float("inf")
    dim = 64 if model.preprocessing.size[0] <= 64 else 1280
    rng = np.random.default_rng(0)
    for r in range(repeats):
        path = tmp / f"write-{folder.name}-{r}.fewshot"
        make_project(path, {"a": files[:1], "b": files[1:2]}, folder)
        with Project.open(path) as p:
            class_ids = [c.id for c in p.classes()]
            model_id = p.set_model(f"bench-{r}", {"examples": r})
            rows = p.images_to_embed(model.backbone_id)
            ids = np.array([row[0] for row in rows], dtype=np.int64)
            hashes = [row[2] for row in rows]
            emb = rng.normal(size=(len(rows), dim)).astype(np.float32)
            probs = rng.dirichlet(np.ones(len(class_ids)), size=len(rows)).astype(np.float32)
            metric = rng.random(len(rows)).astype(np.float32)
            t0 = time.thread_time()
            for k in range(0, len(rows), batch):
                s = slice(k, k + batch)
                p.put_embeddings(model.backbone_id, list(zip(hashes[s], emb[s])))
                p.write_prediction_arrays(model_id, ids[s], class_ids, probs[s], metric[s], metric[s], None, metric[s])
            best = min(best, (time.thread_time() - t0) / len(rows))
    return best


def measure(name: str, spec: str, folder: Path, files: list[Path], tmp: Path, repeats: int) -> dict:
    model = load_model(spec)
    prep = model.preprocessing
    batch = 256 if prep.size[0] <= 64 else 32
    pixels = torch.stack([load_uint8(f, prep) for f in files])
    row = np.empty((prep.channels, *prep.size), dtype=np.uint8)
    data = [torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) for f in files]

    def read() -> int:
        for f in files:
            with open(f, "rb") as fh:
                fh.read()
        return len(files)

    def decode() -> int:
        for f in files:
            decode_into(f, prep, row)
        return len(files)

    def c_decode() -> int:
        for d in data:
            decode_image(d)
        return len(files)

    costs = {"F": forward_cost(model, pixels, batch, repeats), "read": cpu_per_item(read, repeats),
             "decode": cpu_per_item(decode, repeats), "c_decode": cpu_per_item(c_decode, repeats),
             "write": write_cost(model, folder, files, batch, tmp, repeats)}
    best = costs["F"] / (costs["F"] + costs["decode"] + costs["write"])
    floor = costs["F"] / (costs["F"] + costs["read"] + costs["c_decode"] + costs["write"])
    return {"set": name, "model": spec, **costs, "best": best, "floor_best": floor}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--omniglot", type=int, default=2000)
    ap.add_argument("--photos", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {available_cores()} cores, {os.cpu_count()} CPUs", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp_name:
        tmp = Path(tmp_name)
        if args.omniglot:
            files = extract_omniglot(tmp / "omniglot", args.omniglot)
            rows.append(measure("omniglot", "omniglot", tmp / "omniglot", files, tmp, args.repeats))
        if args.photos:
            files = generate_photos(tmp / "photos", args.photos)
            rows.append(measure("photos", "photos", tmp / "photos", files, tmp, args.repeats))
    print("\nCPU per image (us, one thread) and the best share of the limit they allow")
    print(f"{'set':<9} {'model':<9} {'F':>7} {'read':>6} {'decode':>7} {'C decode':>8} "
          f"{'write':>6} {'best':>5} {'floor best':>10}")
    for r in rows:
        print(f"{r['set']:<9} {r['model']:<9} {1e6 * r['F']:>7.0f} {1e6 * r['read']:>6.0f} "
              f"{1e6 * r['decode']:>7.0f} {1e6 * r['c_decode']:>8.0f} {1e6 * r['write']:>6.0f} {r['best']:>5.2f} "
              f"{r['floor_best']:>10.2f}")


if __name__ == "__main__":
    main()
