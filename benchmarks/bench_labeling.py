"""Labeling speed and memory: folder labeling against the backbone's limit, relabel after one
new example, and peak memory for a large folder. Prints tables; results go in docs/PERFORMANCE.md.

    python benchmarks/bench_labeling.py [--only folder,relabel,memory] [--repeats 3]
        [--omniglot 2000] [--photos 500] [--camera 128] [--memory-images 20000]

Folder labeling (end to end, from files on disk): ``label`` is Labeler.label on a
fresh project whose folder was already scanned (decode + forward + every database
write). The limit is the bare forward of the same backbone, in the same batches, on
tensors decoded beforehand, run the fastest way the engine has: PyTorch or
onnxruntime (``ort``), each as one stream with every thread (``thr``) or one
single-threaded stream per core (``str``). ``label`` runs with the backend the
labeler's ``auto`` picks (named in the table); ``naive`` is a loop that decodes a batch with
Pillow (``load_uint8``, what a straightforward loop does; the labeler decodes small PNGs with
Pillow's own zip decoder without its Python around it, engine/data/fast_png.py) and then runs it; ``camera`` is a set of generated
12-megapixel JPEGs, which both decode at a reduced scale;
"decoding alone" is the decode threads with no forward pass at all (a ceiling for
any pipeline). "onnxruntime forward on one core" is the other way to read the
limit: the forward pass with one core, as if decoding had the others. Each variant runs ``--repeats`` times, interleaved, and the best run
counts (other load on a shared machine only ever slows a run down); the first
``label`` run of the process, which measures the costs to choose how to share the
cores, is shown too.

Relabel: a project of 10,000 images with cached embeddings (random vectors of the
given size; the timing does not depend on their values), one example per class;
then one example is added and every prediction recomputed. ``compute`` is adapting
plus predicting all images, ``write`` the one transaction that stores them.

Memory: ``fewshot label`` in a fresh process on N Omniglot PNGs; its peak RSS (VmHWM, Linux).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.runtime import tune_cpu_allocator  # noqa: E402

tune_cpu_allocator()  # before torch allocates anything, as the CLI and the app do

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from engine.data.transforms import load_uint8  # noqa: E402
from engine.labeling.embedder import BatchDecoder, ImageItem, RunPlan  # noqa: E402
from engine.labeling.labeler import Labeler  # noqa: E402
from engine.labeling.runners import OnnxRunner, TorchRunner, choose_runner, onnx_backbone_path  # noqa: E402
from engine.labeling.store import Project  # noqa: E402
from engine.methods.protonet import ProtoNet  # noqa: E402
from engine.model_store import LoadedModel, load_model  # noqa: E402
from engine.models.conv4 import Conv4  # noqa: E402

SHARED = Path(os.environ.get("FEWSHOT_SHARED", ROOT.parent / "shared"))
OMNIGLOT = SHARED / "data" / "omniglot"


# ---------------------------------------------------------------- data

def extract_omniglot(dest: Path, count: int) -> list[Path]:
    """The first ``count`` PNGs of the evaluation set, then the background set."""
    out: list[Path] = []
    for archive in ("images_evaluation.zip", "images_background.zip"):
        with zipfile.ZipFile(OMNIGLOT / archive) as zf:
            for name in sorted(n for n in zf.namelist() if n.endswith(".png")):
                if len(out) == count:
                    return out
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(name))
                out.append(target)
    if len(out) < count:
        raise SystemExit(f"only {len(out)} Omniglot images in {OMNIGLOT}")
    return out


def first_of_each_character(files: list[Path], classes: int = 5) -> dict[str, list[Path]]:
    """The examples the folder benchmarks label with: the first drawing of each of the first characters."""
    by_char: dict[str, list[Path]] = {}
    for f in files:
        by_char.setdefault(f.parent.name, []).append(f)
    return {c: fs[:1] for c, fs in list(by_char.items())[:classes]}


def generate_photos(dest: Path, count: int, seed: int = 0, size: tuple[int, int] = (640, 480),
                    noise: float = 12.0) -> list[Path]:
    """JPEGs with photo-like content (smooth shapes, texture, noise), quality 90; by default
    640x480. ``size`` (4000, 3000) with less noise gives 12-megapixel camera-like files."""
    rng = np.random.default_rng(seed)
    dest.mkdir(parents=True, exist_ok=True)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    scale = 640 / w  # the same shapes at any resolution
    out = []
    for k in range(count):
        base = rng.uniform(0, 255, 3)
        fx, fy = rng.uniform(0.005, 0.05, 2) * scale
        img = np.empty((h, w, 3), dtype=np.float32)
        for c in range(3):
            img[..., c] = base[c] + 60 * np.sin(xx * fx + c) * np.cos(yy * fy + k)
        img += rng.normal(0, noise, img.shape).astype(np.float32)
        path = dest / f"photo_{k:04d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
        out.append(path)
    return out


def make_project(path: Path, examples: dict[str, list[Path]], folder: Path) -> None:
    with Project.create(path) as p:
        for name, files in examples.items():
            p.add_examples(p.add_class(name), files)
        p.add_images([folder])


# ---------------------------------------------------------------- folder labeling

def make_runner(model: LoadedModel, batch: int, backend: str):
    return (TorchRunner(model, batch) if backend == "torch"
            else OnnxRunner(model, onnx_backbone_path(model), batch))


def bare_forward(model: LoadedModel, pixels: torch.Tensor, batch: int, streams: int = 1,
                 backend: str = "torch", threads: int | None = None) -> float:
    """Images/s of the backbone alone on pre-decoded uint8 tensors (normalise + forward):
    one stream with every thread (or ``threads``), or ``streams`` single-threaded streams."""
    runner = make_runner(model, batch, backend)
    batches = [pixels[start:start + batch] for start in range(0, len(pixels), batch)]
    threads = threads or torch.get_num_threads()
    if streams == 1:
        runner.set_threads(threads)
        runner(batches[0])  # warm-up: first-call allocations and kernel selection
        t0 = time.perf_counter()
        for x in batches:
            runner(x)
        return len(pixels) / (time.perf_counter() - t0)
    runner.set_threads(1)
    try:
        with ThreadPoolExecutor(streams) as pool:
            list(pool.map(runner, batches[:streams]))
            t0 = time.perf_counter()
            list(pool.map(runner, batches))
            return len(pixels) / (time.perf_counter() - t0)
    finally:
        runner.set_threads(threads)
        torch.set_num_threads(threads)


def decode_only(model: LoadedModel, files: list[Path], batch: int, workers: int, processes: bool = False) -> float:
    """Images/s of decoding alone (no forward pass) with ``workers`` threads (each handing
    its work to a worker process with ``processes``): a ceiling for any pipeline on these cores."""
    decoder = BatchDecoder(model.preprocessing, batch, workers, processes=processes)
    items = [ImageItem(i, str(f), str(i)) for i, f in enumerate(files)]
    t0 = time.perf_counter()
    for _ in decoder.batches(items):
        pass
    return len(files) / (time.perf_counter() - t0)


def naive_loop(model: LoadedModel, files: list[Path], batch: int, backend: str) -> float:
    """Decode a batch, then run it: what a straightforward loop does."""
    runner = make_runner(model, batch, backend)
    t0 = time.perf_counter()
    for start in range(0, len(files), batch):
        x = torch.stack([load_uint8(f, model.preprocessing) for f in files[start:start + batch]])
        runner(x)
    return len(files) / (time.perf_counter() - t0)


def pipeline(model: LoadedModel, template: Path, work: Path, plan: RunPlan | None = None,
             backend: str = "auto", predictions: dict | None = None) -> tuple[float, str]:
    """Labeler.label on a copy of a scanned, unlabeled project: images/s, and the plan it used.
    ``predictions``, when given, receives path -> (predicted class id, confidence)."""
    work.unlink(missing_ok=True)
    work.write_bytes(template.read_bytes())
    with Project.open(work) as p:
        t0 = time.perf_counter()
        summary = Labeler(p, model, plan=plan, backend=backend).label()
        seconds = time.perf_counter() - t0
        n = summary.embedded + len(summary.failed)
        if predictions is not None:
            predictions.update((r.path, (r.predicted_class_id, r.confidence)) for r in p.iter_images())
    for suffix in ("", "-wal", "-shm"):
        Path(str(work) + suffix).unlink(missing_ok=True)
    plan = summary.plan
    how = (f"{summary.backend}, {plan.streams} stream(s) x {plan.torch_threads} thread(s), "
           f"{plan.decode_workers} decoder(s)" if plan else "unplanned")
    return n / seconds, how


def bench_folder(tmp: Path, name: str, spec: str, folder: Path, files: list[Path],
                 examples: dict[str, list[Path]], repeats: int, fixed_plans: bool) -> dict:
    model = load_model(spec)
    batch = TorchRunner(model).batch_size
    template = tmp / f"{name}-template.fewshot"
    t0 = time.perf_counter()
    make_project(template, examples, folder)
    scan_s = time.perf_counter() - t0
    pixels = torch.stack([load_uint8(f, model.preprocessing) for f in files])
    threads = torch.get_num_threads()
    results: dict[str, list[float]] = {key: [] for key in (
        "bare_threads", "bare_streams", "bare_ort_threads", "bare_ort_streams", "bare_ort_1", "decode_1", "decode_all",
        "naive",
        "label")}
    # What "auto" labels with (measured once per process), and the fixed plans and the naive loop with it.
    backend = choose_runner(model).backend
    # With --fixed-plans, the two ways of sharing the cores that the automatic plan chooses between.
    fixed = {"label_overlap": RunPlan(1, threads, 1),
             "label_between": RunPlan(min(threads, 4), threads, 1, overlap=False),
             "label_streams": RunPlan(1, 1, threads),
             "label_split": RunPlan(1, max(1, threads - 1), 1)} if fixed_plans else {}
    plans = set()
    for _ in range(repeats):
        results["bare_threads"].append(bare_forward(model, pixels, batch))
        results["bare_streams"].append(bare_forward(model, pixels, batch, streams=threads))
        results["bare_ort_threads"].append(bare_forward(model, pixels, batch, backend="onnxruntime"))
        results["bare_ort_streams"].append(bare_forward(model, pixels, batch, streams=threads, backend="onnxruntime"))
        results["bare_ort_1"].append(bare_forward(model, pixels, batch, backend="onnxruntime", threads=1))
        results["decode_1"].append(decode_only(model, files, batch, 1))
        results["decode_all"].append(decode_only(model, files, batch, threads))
        results["naive"].append(naive_loop(model, files, batch, backend))
        rate, how = pipeline(model, template, tmp / f"{name}-run.fewshot")
        results["label"].append(rate)
        plans.add(how)
        for key, plan in fixed.items():
            results.setdefault(key, []).append(pipeline(model, template, tmp / f"{name}-run.fewshot", plan,
                                                        backend)[0])
    best = {k: max(v) for k, v in results.items()}
    # The limit: the fastest way the engine has to run the bare forward, either backend.
    best["limit"] = max(best["bare_threads"], best["bare_streams"], best["bare_ort_threads"], best["bare_ort_streams"])
    return {"set": name, "model": spec, "backend": backend, "images": len(files), "batch": batch, "scan_s": scan_s, **best,
            "label_first": results["label"][0], "first_vs_limit": results["label"][0] / best["limit"],
            "label_vs_limit": best["label"] / best["limit"], "naive_vs_limit": best["naive"] / best["limit"],
            "label_vs_one_core": best["label"] / best["bare_ort_1"],
            "plans": sorted(plans), "all": results}


# ---------------------------------------------------------------- relabel

def bench_relabel(tmp: Path, images: int, repeats: int) -> list[dict]:
    folder = tmp / "tiny"
    folder.mkdir()
    for k in range(images):  # distinct 2x2 PNGs: the cache is keyed by content
        Image.new("RGB", (2, 2), (k % 256, (k // 256) % 256, k // 65536)).save(folder / f"{k:05d}.png")
    rows = []
    rng = np.random.default_rng(0)
    for dim, distance in ((64, "euclidean"), (1280, "cosine")):
        for n_classes in (5, 50):
            path = tmp / f"relabel-{dim}-{n_classes}.fewshot"
            backbone_id = f"bench:{dim}"
            learner = ProtoNet(Conv4(), distance=distance)
            model = LoadedModel(f"bench-{dim}", learner, load_model("omniglot").preprocessing,
                                {"backbone": "bench", "backbone_id": backbone_id})
            with Project.create(path) as p:
                p.add_images([folder])
                recs = list(p.iter_images())
                vectors = rng.normal(size=(len(recs), dim)).astype(np.float32)
                if distance == "cosine":
                    vectors = np.abs(vectors)  # like pooled ReLU features
                p.put_embeddings(backbone_id, [(r.hash, vectors[k]) for k, r in enumerate(recs)])
                classes = [p.add_class(f"c{j}") for j in range(n_classes)]
                for j, cid in enumerate(classes):
                    p.add_examples(cid, [recs[j].id])
                labeler = Labeler(p, model)
                warm = labeler.refresh()  # the session's first refresh loads the cache
                compute, write = [], []
                for r in range(repeats):
                    new_example = recs[n_classes + r]
                    p.add_examples(classes[r % n_classes], [new_example.id])
                    rep = labeler.refresh()
                    compute.append(rep.compute_s)
                    write.append(rep.write_s)
                rows.append({"images": len(recs), "classes": n_classes, "dim": dim, "distance": distance,
                             "load_s": warm.load_s, "first_compute_s": warm.compute_s,
                             "compute_ms": 1e3 * statistics.median(compute), "compute_ms_max": 1e3 * max(compute),
                             "write_ms": 1e3 * statistics.median(write)})
            for suffix in ("", "-wal", "-shm", ".lock"):
                Path(str(path) + suffix).unlink(missing_ok=True)
    return rows


# ---------------------------------------------------------------- memory

def bench_memory(tmp: Path, images: int) -> dict:
    folder = tmp / "memory"
    files = extract_omniglot(folder, images)
    examples = tmp / "memory-examples"
    for f in files[:5 * 20:20]:  # the first drawing of each of the first 5 characters
        (examples / f.parent.name).mkdir(parents=True, exist_ok=True)
        (examples / f.parent.name / f.name).write_bytes(f.read_bytes())
    # VmHWM is the peak of this program's own memory. ru_maxrss would not do: Linux carries
    # it across exec, so it would include the pages of this (large) benchmark process that
    # the child shared between fork and exec.
    code = ("import sys; from engine.cli import main; rc = main(sys.argv[1:]); "
            "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')]; "
            "print('MAXRSS', hwm[0], file=sys.stderr); sys.exit(rc)")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, "label", "--project", str(tmp / "memory.fewshot"),
                           "--examples", str(examples), "--images", str(folder), "--model", "omniglot", "--json"],
                          capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"fewshot label failed: {proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout)
    maxrss_kib = int(proc.stderr.rsplit("MAXRSS", 1)[1].split()[0])
    return {"images": summary["images"], "labeled": summary["labeled"], "seconds": seconds,
            "label_images_per_s": summary["images_per_s"], "peak_rss_mb": maxrss_kib / 1024}


# ---------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="folder,relabel,memory")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--omniglot", type=int, default=2000)
    ap.add_argument("--photos", type=int, default=500)
    ap.add_argument("--camera", type=int, default=128, help="12-megapixel JPEGs (generated)")
    ap.add_argument("--relabel-images", type=int, default=10_000)
    ap.add_argument("--memory-images", type=int, default=20_000)
    ap.add_argument("--fixed-plans", action="store_true",
                    help="also label with fixed ways of sharing the cores: every PyTorch thread on one stream "
                         "with one decode thread overlapping it (overlap) or decoding on every core between "
                         "passes (between); one single-threaded stream per core (streams); one core each for "
                         "decoding and PyTorch (split)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    only = set(args.only.split(","))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs", flush=True)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-labeling-") as tmp_name:
        tmp = Path(tmp_name)
        if "folder" in only:
            rows = []
            if args.omniglot:
                files = extract_omniglot(tmp / "omniglot", args.omniglot)
                examples = first_of_each_character(files)
                rows.append(bench_folder(tmp, "omniglot", "omniglot", tmp / "omniglot", files, examples, args.repeats,
                                        args.fixed_plans))
            if args.photos:
                files = generate_photos(tmp / "photos", args.photos)
                examples = {"a": files[:2], "b": files[2:4]}
                rows.append(bench_folder(tmp, "photos", "photos", tmp / "photos", files, examples, args.repeats,
                                        args.fixed_plans))
            if args.camera:
                # 12-megapixel camera files: libjpeg decodes them at 1/8 scale (the model sees 224 px).
                files = generate_photos(tmp / "camera", args.camera, seed=1, size=(4000, 3000), noise=4.0)
                examples = {"a": files[:2], "b": files[2:4]}
                rows.append(bench_folder(tmp, "camera", "photos", tmp / "camera", files, examples, args.repeats,
                                         args.fixed_plans))
                print(f"camera files: {sum(f.stat().st_size for f in files) / len(files) / 1e6:.1f} MB each on "
                      "average", flush=True)
            print("\nFolder labeling (images/s, best of %d)" % args.repeats)
            print(f"{'set':<9} {'model':<9} {'images':>6} {'batch':>5} {'torch thr':>9} {'torch str':>9} "
                  f"{'ort thr':>8} {'ort str':>8} {'naive':>8} {'label':>8} {'label/limit':>11} {'naive/limit':>11} "
                  f"{'scan s':>7}")
            for r in rows:
                print(f"{r['set']:<9} {r['model']:<9} {r['images']:>6} {r['batch']:>5} {r['bare_threads']:>9.0f} "
                      f"{r['bare_streams']:>9.0f} {r['bare_ort_threads']:>8.0f} {r['bare_ort_streams']:>8.0f} "
                      f"{r['naive']:>8.0f} {r['label']:>8.0f} {r['label_vs_limit']:>11.2f} "
                      f"{r['naive_vs_limit']:>11.2f} {r['label'] / r['naive']:>11.2f} {r['scan_s']:>7.2f}", flush=True)
                print(f"          label ran as: {'; '.join(r['plans'])}; the process's first run (which measures "
                      f"the costs): {r['label_first']:.0f} images/s ({r['first_vs_limit']:.2f} of the limit)")
                print(f"          decoding alone: {r['decode_1']:.0f} images/s on 1 thread, {r['decode_all']:.0f} "
                      f"on {torch.get_num_threads()}")
                print(f"          onnxruntime forward on one core: {r['bare_ort_1']:.0f} images/s; label is "
                      f"{r['label_vs_one_core']:.2f} of it (the limit if decoding had the other cores)")
                for key in ("label_overlap", "label_between", "label_streams", "label_split"):
                    if key in r:
                        print(f"          {key}: {r[key]:.0f} images/s ({r[key] / r['limit']:.2f} of the limit)")
            results["folder"] = rows
        if "relabel" in only:
            rows = bench_relabel(tmp, args.relabel_images, max(args.repeats, 5))
            print("\nRelabel after one new example (median of %d; cache loaded once per session)"
                  % max(args.repeats, 5))
            print(f"{'images':>6} {'classes':>7} {'dim':>5} {'distance':<9} {'compute ms':>10} {'max ms':>7} "
                  f"{'write ms':>8} {'cache load s':>12}")
            for r in rows:
                print(f"{r['images']:>6} {r['classes']:>7} {r['dim']:>5} {r['distance']:<9} {r['compute_ms']:>10.1f} "
                      f"{r['compute_ms_max']:>7.1f} {r['write_ms']:>8.0f} {r['load_s']:>12.2f}", flush=True)
            results["relabel"] = rows
        if "memory" in only:
            r = bench_memory(tmp, args.memory_images)
            print("\nPeak memory of `fewshot label` (fresh process, Omniglot PNGs)")
            print(f"{'images':>6} {'labeled':>7} {'seconds':>8} {'img/s':>7} {'peak RSS MB':>11}")
            print(f"{r['images']:>6} {r['labeled']:>7} {r['seconds']:>8.1f} {r['label_images_per_s']:>7.0f} "
                  f"{r['peak_rss_mb']:>11.0f}", flush=True)
            results["memory"] = r
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
