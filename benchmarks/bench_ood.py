""""None of these" on real photos: ProtoNet against bayes-proto, same episodes.

Each episode takes `way` classes of the Tux Paint test photos (benchmarks/photo_sets.py)
with `shot` examples each, 10 queries per class, and as many queries again from two
classes left out of the examples. For each head: accuracy and ECE on the episode's own
queries, and the AUROC of every score it gives for telling left-out images from the
rest (engine/training/ood.py), with 95% intervals over episodes. "flagged" is the share
of each group past the `ood_score` flag (2) that shows "Looks like none of these
classes" in the app. ``--pool``: also the transductive experiment of
benchmarks/pool_mixture.py (scored on own and left-out queries together).
``--ceiling``: what a per-image distance score could reach on these features at best:
the same queries scored against every other photo of the episode's classes as
examples (their prototypes, and the nearest of them). ``--features lite2``: a larger
ImageNet backbone's features instead (benchmarks/lite2_features.py builds them).

    .venv/bin/python benchmarks/bench_ood.py [--episodes 300] [--kappa0 0.1] [--pool] [--ceiling]
        [--features lite0|lite2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_calibration import photo_embeddings  # noqa: E402
from photo_sets import DEFAULT_ROOT  # noqa: E402
from pool_mixture import pool_outlier_share  # noqa: E402

from engine.methods.bayes_proto import BayesProto  # noqa: E402
from engine.methods.protonet import ProtoNet  # noqa: E402
from engine.methods.uncertainty import BY_NAME  # noqa: E402
from engine.training.metrics import CalibrationTally, mean_ci95  # noqa: E402
from engine.training.ood import OODTally, auroc, prediction_scores  # noqa: E402

TASKS = ((5, 1), (5, 5), (3, 5))
LEFT_OUT = 2
QUERIES = 10


def episodes(labels: np.ndarray, way: int, shot: int, count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_classes = int(labels.max()) + 1
    for _ in range(count):
        chosen = rng.choice(n_classes, way + LEFT_OUT, replace=False)
        s_idx, s_y, q_idx, q_y = [], [], [], []
        for k, c in enumerate(chosen[:way]):
            idx = rng.permutation(np.flatnonzero(labels == c))
            s_idx += list(idx[:shot])
            s_y += [k] * shot
            q = idx[shot:shot + QUERIES]
            q_idx += list(q)
            q_y += [k] * len(q)
        outside = np.flatnonzero(np.isin(labels, chosen[way:]))
        o_idx = rng.choice(outside, min(len(q_idx), len(outside)), replace=False)
        yield np.array(s_idx), torch.tensor(s_y), np.array(q_idx), np.array(q_y), o_idx


def ceiling_aurocs(zn: torch.Tensor, labels: np.ndarray, s_idx: np.ndarray, q_idx: np.ndarray,
                   o_idx: np.ndarray) -> tuple[float, float]:
    """AUROC of the cosine distance to the nearest class prototype and to the nearest
    example, with every photo of the episode's classes that is not a query as an example."""
    classes = np.unique(labels[s_idx])
    queries = np.concatenate([q_idx, o_idx])
    pool = np.setdiff1d(np.flatnonzero(np.isin(labels, classes)), queries)
    protos = torch.nn.functional.normalize(torch.stack([zn[pool[labels[pool] == c]].mean(0) for c in classes]), dim=1)
    to_proto = (1 - zn[queries] @ protos.T).amin(1).numpy()
    to_nearest = (1 - zn[queries] @ zn[pool].T).amin(1).numpy()
    n = len(q_idx)
    return auroc(to_proto[:n], to_proto[n:]), auroc(to_nearest[:n], to_nearest[n:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=300)
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--kappa0", type=float, default=0.1)
    p.add_argument("--pool", action="store_true", help="add the transductive pool-mixture experiment")
    p.add_argument("--ceiling", action="store_true", help="add the best a per-image distance score could do")
    p.add_argument("--features", default="lite0", choices=["lite0", "lite2"],
                   help="lite0: the photos model's; lite2: benchmarks/lite2_features.py's cache")
    args = p.parse_args()
    from photo_sets import build
    z, labels, classes = photo_embeddings(build(args.root), "test")
    if args.features == "lite2":
        cache = args.root / "test-lite2.npz"
        if not cache.is_file():
            raise SystemExit(f"error: {cache} is missing: run benchmarks/lite2_features.py first")
        data = np.load(cache)
        z, labels = torch.from_numpy(data["z"]), data["y"]
    zn = torch.nn.functional.normalize(z.double(), dim=1)
    identity = torch.nn.Identity()
    heads = {"protonet": ProtoNet(identity, distance="cosine", learn_temperature=False),
             "bayes-proto": BayesProto(identity, BayesProto.Config(distance="cosine", kappa0=args.kappa0))}
    print(f"{args.features} features of {len(labels)} Tux Paint photos, {len(classes)} classes; "
          f"{LEFT_OUT} classes left out "
          f"per episode; {args.episodes} episodes per task\n")
    flag = BY_NAME["ood_score"].flag
    print("| task | head | accuracy % | ECE | adapt ms | flagged: own / left-out | AUROC per score (left-out vs own queries) |")
    print("|---|---|---|---|---|---|---|")
    for way, shot in TASKS:
        cal = {n: CalibrationTally() for n in heads}
        ood = {n: OODTally() for n in heads}
        seconds = {n: 0.0 for n in heads}
        flagged = {n: [0, 0, 0, 0] for n in heads}  # own flagged, own, left-out flagged, left-out
        pool: list[float] = []
        ceiling: list[tuple[float, float]] = []
        for s_idx, s_y, q_idx, q_y, o_idx in episodes(labels, way, shot, args.episodes):
            for name, head in heads.items():
                t0 = time.perf_counter()
                task = head.adapt_embeddings(z[s_idx], s_y, way)
                seconds[name] += time.perf_counter() - t0
                inside, outside = task.predict_embeddings(z[q_idx]), task.predict_embeddings(z[o_idx])
                cal[name].add(inside.probs.numpy(), q_y)
                ood[name].add(prediction_scores(inside), prediction_scores(outside))
                for k, part in enumerate((inside, outside)):
                    flagged[name][2 * k] += int((part.scores["ood_score"] > flag).sum())
                    flagged[name][2 * k + 1] += len(part.scores["ood_score"])
            if args.ceiling:
                ceiling.append(ceiling_aurocs(zn, labels, s_idx, q_idx, o_idx))
            if args.pool:
                share = pool_outlier_share(z[s_idx], s_y, way, z[np.concatenate([q_idx, o_idx])]).numpy()
                pool.append(auroc(share[:len(q_idx)], share[len(q_idx):]))
        for name in heads:
            s = cal[name].summary()
            aurocs = ", ".join(f"{k} {m:.3f} ± {c:.3f}" for k, (m, c) in
                               sorted(ood[name].summary().items(), key=lambda kv: -kv[1][0]))
            f = flagged[name]
            print(f"| {way}-way {shot}-shot | {name} | {100 * s['accuracy']:.1f} ± {100 * s['ci95']:.1f} | "
                  f"{s['ece']:.3f} | {1e3 * seconds[name] / args.episodes:.2f} | "
                  f"{100 * f[0] / f[1]:.1f}% / {100 * f[2] / f[3]:.1f}% | {aurocs} |")
        if args.ceiling:
            (a, ca), (b, cb) = mean_ci95([c[0] for c in ceiling]), mean_ci95([c[1] for c in ceiling])
            print(f"| {way}-way {shot}-shot | ceiling: every other photo of the classes as examples | | | | | "
                  f"prototype {a:.3f} ± {ca:.3f}, nearest example {b:.3f} ± {cb:.3f} |")
        if args.pool:
            m, c = mean_ci95(pool)
            print(f"| {way}-way {shot}-shot | pool mixture (experiment) | | | | | pool_share {m:.3f} ± {c:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
