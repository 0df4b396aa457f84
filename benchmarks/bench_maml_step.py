"""One MAML meta-iteration: ours (engine.methods, torch.func) against `higher`, same run.

Conv4 on 28x28 Omniglot-sized inputs, 5-way 1-shot 15-query, meta-batch 32, 1 and 5
inner steps, second and first order. Each configuration runs in its own process (so
peak memory, the process's maximum resident set, is its own), one warm-up iteration,
then the median of --repeats timed iterations. `higher` runs as its examples do (the
classic Conv4 block order, glibc's default malloc) and, for a like-for-like row, with
our Conv4 (pool before ReLU: the same function) and our allocator setting.

`higher` is a peer, never a project dependency: install it beside the benchmark only,
    .venv/bin/pip install --target .bench-peers --no-deps higher
(the script adds .bench-peers to its path). Without it, only our rows are printed.

    .venv/bin/python benchmarks/bench_maml_step.py [--repeats 3] [--device cpu|cuda] [--profile]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / ".bench-peers"
WAY, SHOT, QUERY, BATCH, INNER_LR = 5, 1, 15, 32, 0.4


def episodes(device):
    import torch

    from engine.data.episodes import Episode
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(BATCH):
        sx = torch.rand(WAY * SHOT, 1, 28, 28, generator=g)
        qx = torch.rand(WAY * QUERY, 1, 28, 28, generator=g)
        sy, qy = torch.arange(WAY).repeat_interleave(SHOT), torch.arange(WAY).repeat_interleave(QUERY)
        out.append(Episode(sx, sy, qx, qy, WAY, SHOT, QUERY, list(range(WAY))).to(device))
    return out


def ours(steps: int, first_order: bool, device, batch_norm: str):
    import torch

    from engine.methods.registry import build_method
    from engine.models.conv4 import Conv4
    torch.manual_seed(0)
    learner = build_method("maml", Conv4(1, 28), {"inner_steps": steps, "inner_lr": INNER_LR,
                                                  "first_order": first_order, "batch_norm": batch_norm}).to(device)
    learner.train()
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    eps = episodes(device)
    return lambda: learner.outer_step(eps, opt)


def classic_conv4():
    """Conv4 as the MAML papers and `higher`'s examples write it: conv, BN, ReLU, pool."""
    from torch import nn
    layers, c = [], 1
    for _ in range(4):
        layers += [nn.Conv2d(c, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2)]
        c = 64
    return nn.Sequential(*layers, nn.Flatten())


def with_higher(steps: int, first_order: bool, device, tuned: bool):
    sys.path.insert(0, str(PEERS))
    import higher
    import torch
    import torch.nn.functional as F
    from torch import nn

    from engine.models.conv4 import Conv4
    torch.manual_seed(0)
    model = nn.Sequential(Conv4(1, 28) if tuned else classic_conv4(), nn.Linear(64, WAY)).to(device).train()
    meta_opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    inner_opt = torch.optim.SGD(model.parameters(), lr=INNER_LR)
    eps = episodes(device)

    def step():
        meta_opt.zero_grad()
        for ep in eps:
            with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False,
                                      track_higher_grads=not first_order) as (fmodel, diffopt):
                for _ in range(steps):
                    diffopt.step(F.cross_entropy(fmodel(ep.support_x), ep.support_y))
                loss = F.cross_entropy(fmodel(ep.query_x), ep.query_y) / len(eps)
                if first_order:
                    # higher's first order: gradients at the adapted weights, applied to the start.
                    grads = torch.autograd.grad(loss, list(fmodel.parameters()))
                    for p, g in zip(model.parameters(), grads):
                        p.grad = g if p.grad is None else p.grad + g
                else:
                    loss.backward()
        meta_opt.step()
    return step


def run_one(spec: dict) -> dict:
    if spec["impl"] == "ours" or spec.get("tuned"):
        from engine.runtime import tune_cpu_allocator
        tune_cpu_allocator()  # what `fewshot train` and the app do before torch allocates
    import torch
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    if spec["impl"] == "higher":
        step = with_higher(spec["steps"], spec["first_order"], device, spec.get("tuned", False))
    else:
        step = ours(spec["steps"], spec["first_order"], device, spec["batch_norm"])
    step()
    times = []
    for _ in range(spec["repeats"]):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    return {**spec, "seconds": statistics.median(times), "peak_mib": peak}


def profile_ours(threads: int) -> None:
    """Where one iteration spends its time, by operator (docs/PERFORMANCE.md)."""
    from engine.runtime import tune_cpu_allocator
    tune_cpu_allocator()
    import torch
    from torch.profiler import profile
    torch.set_num_threads(threads)
    step = ours(1, False, torch.device("cpu"), "support")
    step()
    with profile() as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true",
                    help="instead: torch.profiler's table for one iteration of ours (1 step, second order)")
    args = ap.parse_args()
    if args.profile:
        profile_ours(args.threads)
        return
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    have_higher = (PEERS / "higher").is_dir()
    rows = []
    for steps in (1, 5):
        for first_order in (False, True):
            impls = [("higher", None, False), ("higher", None, True)] if have_higher else []
            impls += [("ours", "transductive", False), ("ours", "support", False)]
            for impl, bn, tuned in impls:
                spec = {"impl": impl, "batch_norm": bn, "steps": steps, "first_order": first_order, "tuned": tuned,
                        "device": args.device, "repeats": args.repeats, "threads": args.threads}
                out = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], cwd=ROOT,
                                     capture_output=True, text=True, check=True)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"  {impl:6} {'tuned' if tuned else '':5} {bn or '':12} steps {steps} {'first' if first_order else 'second'} order: "
                      f"{rows[-1]['seconds']:.3f} s", file=sys.stderr, flush=True)
    print(f"\nOne meta-iteration, Conv4 28 px, {WAY}-way {SHOT}-shot {QUERY}-query, meta-batch {BATCH}, "
          f"{args.device}, {args.threads} threads, median of {args.repeats}\n")
    print("| inner steps | order | implementation | batch norm | s / iteration | vs higher | peak MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ref = next((x for x in rows if x["impl"] == "higher" and not x["tuned"] and x["steps"] == r["steps"]
                    and x["first_order"] == r["first_order"]), None)
        ratio = f"{r['seconds'] / ref['seconds']:.2f}x" if ref else "-"
        name = r["impl"] + (" (our Conv4 and allocator)" if r["tuned"] else "")
        print(f"| {r['steps']} | {'first' if r['first_order'] else 'second'} | {name} | "
              f"{r['batch_norm'] or 'batch (transductive)'} | {r['seconds']:.3f} | {ratio} | {r['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
