"""Seconds per meta-training episode and per evaluation episode: the engine against a
bare 20-line PyTorch ProtoNet on the same tensors, measured in the same run.

    .venv/bin/python benchmarks/bench_training.py [--episodes 30] [--repeats 3]

The engine's side is the real code path (EpisodeSampler over the preloaded
Omniglot background set, ProtoNet.meta_loss, Adam, the Trainer's layout
choices); the bare side gets the very same episode tensors already gathered.
Blocks alternate (engine, bare, engine, bare, ...) so drift in machine load
hits both sides alike; the table reports the median block.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.data.sampler import EpisodeSampler
from engine.methods.protonet import ProtoNet
from engine.models.registry import build_backbone, default_preprocessing
from engine.runtime import tune_cpu_allocator
from engine.training.datasets import open_dataset
from engine.training.evaluate import evaluate_episodes

ROOT = Path(__file__).resolve().parents[1]


def bare_conv4() -> nn.Module:
    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))
    return nn.Sequential(block(1, 64), block(64, 64), block(64, 64), block(64, 64), nn.Flatten())


def bare_loss(net, sx, sy, qx, qy, way):
    z = net(torch.cat([sx, qx]))
    protos = z[: len(sx)].view(way, -1, z.shape[1]).mean(1)
    logits = -torch.cdist(z[len(sx):], protos) ** 2
    return F.cross_entropy(logits, qy), logits


class _One:
    """A sampler of one given episode, so the engine's own evaluate_episodes is what gets timed."""

    def __init__(self, ep):
        self.ep, self.way, self.shot, self.query = ep, ep.way, ep.shot, ep.query

    def iter_from(self, start, count):
        return iter([self.ep])


def time_block(fn, n) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "omniglot"))
    ap.add_argument("--episodes", type=int, default=20, help="episodes per timed block")
    ap.add_argument("--repeats", type=int, default=3, help="alternating blocks per side")
    ap.add_argument("--no-tune", action="store_true", help="leave glibc's malloc thresholds alone")
    ap.add_argument("--bare-channels-last", action="store_true",
                    help="give the bare loop the engine's channels-last layout too (isolates the engine's overhead)")
    args = ap.parse_args()
    if not args.no_tune:
        tune_cpu_allocator()
    torch.manual_seed(0)
    prep = default_preprocessing("conv4", channels=1, image_size=28)
    data = open_dataset("omniglot", args.data_root, "background", prep)
    rows = []
    for label, (way, shot, query), training in (("meta-training 60-way 5-shot 5-query", (60, 5, 5), True),
                                                ("evaluation 5-way 1-shot 15-query", (5, 1, 15), False)):
        sampler = EpisodeSampler(data, way, shot, query, seed=0)
        # The engine: its own backbone and method, channels-last as the Trainer sets it on CPU.
        ours = ProtoNet(build_backbone("conv4", channels=1, image_size=28)).to(memory_format=torch.channels_last)
        theirs = bare_conv4()
        if args.bare_channels_last:
            theirs = theirs.to(memory_format=torch.channels_last)
        opt_ours = torch.optim.Adam(ours.parameters(), 1e-3)
        opt_theirs = torch.optim.Adam(theirs.parameters(), 1e-3)
        pre = [sampler[i] for i in range(args.episodes)]  # the bare side's ready-made tensors

        def engine_step(i):
            ep = sampler[i]
            if training:
                loss, _ = ours.meta_loss(ep)
                opt_ours.zero_grad(set_to_none=True)
                loss.backward()
                opt_ours.step()
            else:
                evaluate_episodes(ours, _One(ep), 1, torch.device("cpu"))  # adapt + predict + score

        def bare_step(i):
            ep = pre[i]
            if training:
                loss, _ = bare_loss(theirs, ep.support_x, ep.support_y, ep.query_x, ep.query_y, way)
                opt_theirs.zero_grad(set_to_none=True)
                loss.backward()
                opt_theirs.step()
            else:
                theirs.eval()
                with torch.no_grad():
                    bare_loss(theirs, ep.support_x, ep.support_y, ep.query_x, ep.query_y, way)

        if not training:
            ours.eval()
        engine_step(0), bare_step(0)  # warm-up: oneDNN primitive caches, allocator
        t_ours, t_bare = [], []
        for _ in range(args.repeats):
            t_ours.append(time_block(engine_step, args.episodes))
            t_bare.append(time_block(bare_step, args.episodes))
        a, b = statistics.median(t_ours), statistics.median(t_bare)
        rows.append((label, a, b, a / b))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, allocator tuned: {not args.no_tune}, "
          f"bare loop channels-last: {args.bare_channels_last}")
    print(f"{'episode':40s} {'engine s':>10s} {'bare s':>10s} {'ratio':>7s}")
    for label, a, b, r in rows:
        print(f"{label:40s} {a:10.4f} {b:10.4f} {r:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
