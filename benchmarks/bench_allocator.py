"""Eager PyTorch CPU throughput with glibc's default malloc settings vs engine.runtime.tune_cpu_allocator.

Each (workload, setting) runs in a fresh interpreter, since mallopt settings
cannot be undone within a process. Settings are interleaved and repeated, and
the best run is kept, so that other load on the machine (which only ever
slows a run down) distorts the comparison less. Prints images/s (median
iteration of the best run), minor page faults per iteration and the peak
resident memory (the price of keeping freed memory in the heap).

    python benchmarks/bench_allocator.py [--seconds 3] [--repeats 3] [--threads N] [--all]

``--all`` also tries other threshold pairs (used to choose the defaults).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GIB = 1 << 30
MIB = 1 << 20
# Other (mmap threshold, trim threshold) pairs tried with --all.
EXTRA_SETTINGS: dict[str, tuple[int, int]] = {
    "mmap 32M / trim 64M": (32 * MIB, 64 * MIB),
    "mmap 256M / trim 512M": (256 * MIB, 512 * MIB),
    "mmap 1G / trim 1G": (GIB, GIB),
}
WORKLOADS = {
    "conv4 fwd b256 28x28": ("conv4", "fwd", 256),
    "conv4 fwd+bwd b256 28x28": ("conv4", "train", 256),
    "lite0 fwd b32 224x224": ("lite0", "fwd", 32),
}


def child(model_name: str, mode: str, batch: int, setting: str, seconds: float, threads: int) -> dict:
    from engine import runtime

    if setting == "engine":
        applied = runtime.tune_cpu_allocator()
    elif setting != "none":
        mmap, trim = (int(v) for v in setting.split(","))
        applied = runtime.tune_cpu_allocator(mmap, trim)
    else:
        applied = False

    import resource

    import torch

    from engine.models.conv4 import Conv4
    from engine.models.lite0 import Lite0

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    if model_name == "conv4":
        model, x = Conv4(1, 28), torch.randn(batch, 1, 28, 28)
    else:
        # Random weights time the same as the pretrained ones and need no package.
        model, x = Lite0(), torch.randn(batch, 3, 224, 224)

    def step() -> None:
        if mode == "fwd":
            with torch.no_grad():
                model(x)
        else:
            model.zero_grad(set_to_none=True)
            model(x).square().mean().backward()

    model.train(mode != "fwd")
    for _ in range(3):
        step()
    times: list[float] = []
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"ips": batch / statistics.median(times), "faults": (usage.ru_minflt - faults0) / len(times),
            "peak_mib": usage.ru_maxrss / 1024, "applied": applied, "threads": torch.get_num_threads()}


def run_child(workload: tuple[str, str, int], setting: str, seconds: float, threads: int) -> dict:
    model_name, mode, batch = workload
    cmd = [sys.executable, __file__, "--child", model_name, mode, str(batch), setting,
           "--seconds", str(seconds), "--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("FEWSHOT_NO_MALLOC_TUNING", None)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per run")
    ap.add_argument("--repeats", type=int, default=3, help="runs per (workload, setting); the best is kept")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    ap.add_argument("--all", action="store_true", help="also try other threshold pairs")
    ap.add_argument("--child", nargs=4, metavar=("MODEL", "MODE", "BATCH", "SETTING"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        m, mode, batch, setting = args.child
        print(json.dumps(child(m, mode, int(batch), setting, args.seconds, args.threads)))
        return

    settings = {"glibc default": "none", "tuned (engine default)": "engine"}
    if args.all:
        settings.update({k: f"{a},{b}" for k, (a, b) in EXTRA_SETTINGS.items()})
    rows = []
    for wname, workload in WORKLOADS.items():
        results: dict[str, dict] = {}
        for _ in range(args.repeats):
            for s, code in settings.items():
                r = run_child(workload, code, args.seconds, args.threads)
                if s not in results or r["ips"] > results[s]["ips"]:
                    results[s] = r
        rows.append((wname, results))
    threads = rows[0][1]["glibc default"]["threads"]
    print(f"images/s (best of {args.repeats} runs, median iteration), minor page faults per iteration, "
          f"peak RSS; torch threads: {threads}; load average now: {os.getloadavg()[0]:.2f}")
    head = f"{'workload':<26}" + "".join(f"{s:>38}" for s in settings) + f"{'speed-up':>10}"
    print(head)
    print("-" * len(head))
    for wname, results in rows:
        cells = "".join(f"{r['ips']:>11.0f} img/s {r['faults']:>7.0f} pf {r['peak_mib']:>5.0f} MiB"
                        for r in results.values())
        base = results["glibc default"]["ips"]
        best = results["tuned (engine default)"]["ips"]
        print(f"{wname:<26}{cells}{best / base:>9.2f}x")
    if not all(r["applied"] for _, res in rows for s, r in res.items() if s != "glibc default"):
        print("note: mallopt was not applied (not glibc, or FEWSHOT_NO_MALLOC_TUNING set)")


if __name__ == "__main__":
    main()
