"""Seconds per meta-training step: the engine's Trainer loop against a bare 20-line loop on
the same episode tensors, measured in the same run, for ProtoNet and for MAML (against a
bare torch.func loop); and one evaluation episode against a bare no-grad pass.

    .venv/bin/python benchmarks/bench_training.py [--steps 20] [--repeats 3]

The engine's side is the real training path: Trainer.run over the Omniglot background set
(the EpisodeSampler drawing each step's episodes, the method's outer_step, Adam, the
schedule, one event a step written to events.jsonl as the panel reads them). Its seconds
per step are the Trainer's own `seconds_per_episode` events, which also give the share of
each step spent waiting for episodes. The bare side gets the very same episode tensors,
gathered beforehand. Blocks alternate (engine, bare, engine, bare, ...) so drift in machine
load hits both sides alike; the table reports the median block.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from engine.runtime import tune_cpu_allocator
from engine.training.config import TrainConfig
from engine.training.evaluate import evaluate_episodes
from engine.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
INNER_LR = 0.4


def bare_conv4(head: int = 0) -> nn.Module:
    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))
    layers = [block(1, 64), block(64, 64), block(64, 64), block(64, 64), nn.Flatten()]
    return nn.Sequential(*layers, *([nn.Linear(64, head)] if head else []))


def bare_proto_loss(net, ep):
    z = net(torch.cat([ep.support_x, ep.query_x]))
    protos = z[: len(ep.support_x)].view(ep.way, -1, z.shape[1]).mean(1)
    return F.cross_entropy(-torch.cdist(z[len(ep.support_x):], protos) ** 2, ep.query_y)


def bare_proto_step(net, opt, tasks):
    opt.zero_grad(set_to_none=True)
    bare_proto_loss(net, tasks[0]).backward()
    opt.step()


def bare_maml_step(net, opt, tasks, inner_steps, first_order):
    """MAML as PyTorch's functorch example writes it: functional_call on a fast-weight dict."""
    params = dict(net.named_parameters())
    opt.zero_grad(set_to_none=True)
    for ep in tasks:
        fast = params
        for _ in range(inner_steps):
            loss = F.cross_entropy(functional_call(net, fast, (ep.support_x,)), ep.support_y)
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=not first_order)
            fast = {k: w - INNER_LR * g for (k, w), g in zip(fast.items(), grads)}
        (F.cross_entropy(functional_call(net, fast, (ep.query_x,)), ep.query_y) / len(tasks)).backward()
    opt.step()


class _One:
    """A sampler of one given episode, so the engine's own evaluate_episodes is what gets timed."""

    def __init__(self, ep):
        self.ep, self.way, self.shot, self.query = ep, ep.way, ep.shot, ep.query

    def iter_from(self, start, count):
        return iter([self.ep])


class TrainerBlocks:
    """The real Trainer, run `steps` outer steps at a time; a block's time is the mean of its
    steps' own `seconds_per_episode` events (so the block's end-of-run save is not counted)."""

    def __init__(self, cfg: TrainConfig):
        self.per_step: list[float] = []
        self.waits: list[float] = []
        self.trainer = Trainer(cfg, events=self._event)

    def _event(self, e: dict) -> None:
        if e.get("event") == "episode":
            self.per_step.append(e["seconds_per_episode"])
            self.waits.append(e["wait_fraction"])

    def block(self, steps: int) -> float:
        start = len(self.per_step)
        self.trainer.cfg.episodes = self.trainer.episode + steps
        self.trainer.run()
        return statistics.mean(self.per_step[start:])


def time_block(fn, n) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n


def training_row(label, cfg, bare, steps, repeats, warmup):
    ours = TrainerBlocks(cfg)
    batch = cfg.meta_batch
    sampler = ours.trainer.sampler
    pre = [list(sampler.iter_from(i * batch, batch)) for i in range(steps)]  # the same tensors, gathered
    ours.block(warmup)
    for i in range(warmup):
        bare(pre[i % steps])
    ours.waits.clear()
    t_ours, t_bare = [], []
    for _ in range(repeats):
        t_ours.append(ours.block(steps))
        t_bare.append(time_block(lambda i: bare(pre[i]), steps))
    a, b = statistics.median(t_ours), statistics.median(t_bare)
    return label, a, b, a / b, statistics.median(ours.waits), max(ours.waits)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "omniglot"))
    ap.add_argument("--steps", type=int, default=20, help="outer steps per timed block")
    ap.add_argument("--repeats", type=int, default=3, help="alternating blocks per side")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per side first")
    ap.add_argument("--no-tune", action="store_true", help="leave glibc's malloc thresholds alone")
    ap.add_argument("--bare-channels-last", action="store_true",
                    help="give the bare loops the engine's channels-last weights too (isolates the loop's overhead)")
    args = ap.parse_args()
    layout = torch.channels_last if args.bare_channels_last else torch.contiguous_format
    if not args.no_tune:
        tune_cpu_allocator()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = dict(dataset="omniglot", data_root=args.data_root, split="background", device="cpu",
                    val_every=0, log_every=1, seed=0)

        torch.manual_seed(0)
        net = bare_conv4().to(memory_format=layout)
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        cfg = TrainConfig(out=f"{tmp}/protonet", method="protonet", way=60, shot=5, query=5, **base)
        rows.append(training_row("ProtoNet 60-way 5-shot 5-query", cfg, lambda t: bare_proto_step(net, opt, t),
                                 args.steps, args.repeats, args.warmup))

        for order, first in (("second", False), ("first", True)):
            torch.manual_seed(0)
            mnet = bare_conv4(head=5).to(memory_format=layout)
            mopt = torch.optim.Adam(mnet.parameters(), 1e-3)
            cfg = TrainConfig(out=f"{tmp}/maml-{order}", method="maml", way=5, shot=1, query=15, meta_batch=4,
                              method_config={"inner_steps": 1, "inner_lr": INNER_LR, "first_order": first}, **base)
            rows.append(training_row(f"MAML 5-way 1-shot 15q, 4 tasks, 1 step, {order} order", cfg,
                                     lambda t, m=mnet, o=mopt, f=first: bare_maml_step(m, o, t, 1, f),
                                     max(4, args.steps // 4), args.repeats, args.warmup))

        # Evaluation: one episode adapted, predicted and scored, against a bare no-grad pass.
        cfg = TrainConfig(out=f"{tmp}/eval", method="protonet", way=5, shot=1, query=15, **base)
        trainer = Trainer(cfg)
        learner = trainer.learner.eval()
        net = bare_conv4().to(memory_format=layout).eval()
        eps = list(trainer.sampler.iter_from(0, args.steps))

        def bare_eval(i):
            with torch.no_grad():
                bare_proto_loss(net, eps[i])
        evaluate_episodes(learner, _One(eps[0]), 1, torch.device("cpu")), bare_eval(0)
        t_ours, t_bare = [], []
        for _ in range(args.repeats):
            t_ours.append(time_block(lambda i: evaluate_episodes(learner, _One(eps[i]), 1, torch.device("cpu")),
                                     args.steps))
            t_bare.append(time_block(bare_eval, args.steps))
        a, b = statistics.median(t_ours), statistics.median(t_bare)
        rows.append(("evaluation 5-way 1-shot 15-query", a, b, a / b, None, None))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, allocator tuned: {not args.no_tune}, "
          f"median of {args.repeats} alternating blocks, bare loops channels-last: {args.bare_channels_last}")
    print("| step | engine s | bare s | ratio | waiting for episodes (median, worst step) |")
    print("|---|---|---|---|---|")
    for label, a, b, r, wait, worst in rows:
        waiting = "-" if wait is None else f"{100 * wait:.1f}%, {100 * worst:.1f}%"
        print(f"| {label} | {a:.4f} | {b:.4f} | {r:.2f}x | {waiting} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
