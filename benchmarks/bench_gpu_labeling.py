"""Folder labeling with the backbone on a GPU: throughput against the GPU's bare forward,
decoding alone with more threads, and agreement with labeling on the CPU.

    python benchmarks/bench_gpu_labeling.py [--omniglot 10000] [--photos 500] [--repeats 2]
        [--device cuda] [--json FILE]

On a GPU the forward pass is cheap and decoding on the CPU is the work: the
limit here is the bare forward on the GPU (pre-decoded tensors, synchronised),
``label`` is Labeler.label end to end on a scanned project (the plan it measures
itself; decoding in worker processes unless FEWSHOT_DECODE_PROCESSES=0), and
"decoding alone" is BatchDecoder with N threads (``thr``) or N threads each
handing its work to a worker process (``proc``), with no forward pass. ``agree`` is the share of images whose predicted class on the GPU equals
the CPU's, and ``max dp`` the largest difference of their probabilities.
Needs the Omniglot archives where bench_labeling.py reads them (FEWSHOT_SHARED).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from engine.runtime import tune_cpu_allocator  # noqa: E402

tune_cpu_allocator()

import torch  # noqa: E402

from bench_labeling import (bare_forward, decode_only, extract_omniglot, first_of_each_character,  # noqa: E402
                            generate_photos, make_project, pipeline)
from engine.data.decode_procs import processes_enabled  # noqa: E402
from engine.data.transforms import load_uint8  # noqa: E402
from engine.labeling.embedder import available_cores  # noqa: E402
from engine.labeling.runners import TorchRunner  # noqa: E402
from engine.model_store import load_model  # noqa: E402


def label(model, template: Path, work: Path) -> tuple[float, str, dict[str, tuple[int, float]]]:
    preds: dict[str, tuple[int, float]] = {}
    rate, how = pipeline(model, template, work, predictions=preds)
    return rate, how, preds


def bench(tmp: Path, name: str, spec: str, folder: Path, files: list[Path], examples: dict, device: str,
          repeats: int, compare_cpu: bool = True) -> dict:
    model = load_model(spec, device)
    batch = TorchRunner(model).batch_size
    template = tmp / f"{name}.fewshot"
    make_project(template, examples, folder)
    pixels = torch.stack([load_uint8(f, model.preprocessing) for f in files])
    cores = available_cores()
    row: dict = {"set": name, "device": str(device), "images": len(files), "batch": batch, "cores": cores}
    row["limit"] = max(bare_forward(model, pixels, batch) for _ in range(repeats))
    # untimed: starts the worker processes, as a process's first labeling run does
    decode_only(model, files[:4 * cores], 4, cores, processes=processes_enabled())
    for workers in sorted({1, 4, max(1, cores - 1)}):
        for kind in ("thr", "proc") if processes_enabled() else ("thr",):
            row[f"decode_{workers}_{kind}"] = max(decode_only(model, files, batch, workers,
                                                              processes=kind == "proc") for _ in range(repeats))
    runs = [label(model, template, tmp / f"{name}-run.fewshot") for _ in range(repeats)]
    row["label_first"] = runs[0][0]
    row["label"] = max(r[0] for r in runs)
    row["plans"] = sorted({r[1] for r in runs})
    if not compare_cpu:
        return row
    # The same project labeled on the CPU: do the two devices agree?
    cpu_rate, _, cpu_preds = label(load_model(spec, "cpu"), template, tmp / f"{name}-cpu.fewshot")
    gpu_preds = runs[-1][2]
    same = [p for p in gpu_preds if gpu_preds[p][0] == cpu_preds.get(p, (None,))[0]]
    row["cpu_label"] = cpu_rate
    row["agree"] = len(same) / max(1, len(gpu_preds))
    row["max_dp"] = max((abs(gpu_preds[p][1] - cpu_preds[p][1]) for p in same if gpu_preds[p][1] is not None),
                        default=0.0)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--omniglot", type=int, default=10000)
    ap.add_argument("--photos", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-cpu", action="store_true", help="skip labeling on the CPU for comparison")
    ap.add_argument("--json")
    args = ap.parse_args()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"torch {torch.__version__}, GPU {gpu}, {available_cores()} cores, "
          f"decode processes env={os.environ.get('FEWSHOT_DECODE_PROCESSES', 'unset')}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp_name:
        tmp = Path(tmp_name)
        if args.omniglot:
            files = extract_omniglot(tmp / "omniglot", args.omniglot)
            examples = first_of_each_character(files)
            rows.append(bench(tmp, "omniglot", "omniglot", tmp / "omniglot", files, examples, args.device,
                              args.repeats, not args.no_cpu))
            print(json.dumps(rows[-1]), flush=True)
        if args.photos:
            files = generate_photos(tmp / "photos", args.photos)
            rows.append(bench(tmp, "photos", "photos", tmp / "photos", files, {"a": files[:2], "b": files[2:4]},
                              args.device, args.repeats, not args.no_cpu))
            print(json.dumps(rows[-1]), flush=True)
    print("\nimages/s", flush=True)
    for r in rows:
        decode = ", ".join(f"{k[7:].replace('_', ' ')} {v:.0f}" for k, v in r.items() if k.startswith("decode_"))
        print(f"{r['set']:<9} {r['device']}: limit (bare forward) {r['limit']:.0f}, label {r['label']:.0f} "
              f"({r['label'] / r['limit']:.2f} of it; first run {r['label_first']:.0f}; {'; '.join(r['plans'])}), "
              f"decoding alone: {decode}" + (f"; CPU label {r['cpu_label']:.0f}; agree {r['agree']:.4f}, "
                                             f"max dp {r['max_dp']:.2g}" if "agree" in r else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
