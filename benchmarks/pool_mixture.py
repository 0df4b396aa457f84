"""An experiment, not an engine score: transductive "none of these" from the pool.

Each query's score is the share of it that a mixture fitted to the whole pool of
queries (the episode's own and the left-out ones together, as a folder being labeled
would be) gives to components other than the classes. The classes' components start at
the examples' prototypes and keep the examples as anchors; ``free`` more components
start at the queries farthest from every prototype and follow whatever clusters are
left. Responsibilities are a softmax of ``kappa`` x cosine similarity, with ``kappa`` =
``relative`` / the queries' median distance to their nearest prototype (scale-free).

On the Tux Paint photos, where the left-out images come as two classes of about 15
each, this lifts the AUROC from 0.85 to 0.94 (3-way 5-shot). On Omniglot's
out-of-episode queries, single images of many classes, it falls below the plain
distance (20-way 1-shot: 0.79 against 0.93), because a free component then takes a
whole class whose one example is atypical. docs/RESULTS.md has the figures; that is why
it is not what the app uses.

    .venv/bin/python benchmarks/bench_ood.py --pool            # photos
    .venv/bin/python benchmarks/pool_mixture.py [--episodes 100] [--model omniglot]  # omniglot, as `fewshot evaluate`
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def pool_outlier_share(zs: Tensor, ys: Tensor, way: int, zq: Tensor, free: int = 4, relative: float = 4.0,
                       iterations: int = 10) -> Tensor:
    """(queries,) share of each query given to the free components (higher: more likely none of the classes)."""
    zs, zq = F.normalize(zs.double(), dim=1), F.normalize(zq.double(), dim=1)
    ys = torch.as_tensor(ys)
    anchors = torch.zeros(way, zs.shape[1], dtype=zs.dtype).index_add_(0, ys, zs)
    classes = F.normalize(anchors, dim=1)
    nearest = (1 - zq @ classes.T).amin(1)
    kappa = relative / float(nearest.median().clamp_min(1e-6))
    picked, gap = [], nearest.clone()
    for _ in range(free):  # farthest-point start: the queries least like anything chosen so far
        i = int(gap.argmax())
        picked.append(zq[i])
        gap = torch.minimum(gap, 1 - zq @ zq[i])
    others = torch.stack(picked)
    for step in range(iterations + 1):
        share = (kappa * (zq @ torch.cat([classes, others]).T)).softmax(1)
        if step == iterations:
            return share[:, way:].sum(1)
        classes = F.normalize(anchors + share[:, :way].T @ zq, dim=1)
        others = F.normalize(share[:, way:].T @ zq + 1e-12, dim=1)
    raise AssertionError("unreachable")  # the loop returns at its last step


def omniglot_table(episodes: int, root: Path, model_name: str = "omniglot") -> None:
    """ood_score against pool_share on the evaluation alphabets' episodes with their out-of-episode queries."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from engine.data.sampler import EpisodeSampler
    from engine.model_store import load_model
    from engine.training.datasets import open_dataset
    from engine.training.metrics import mean_ci95
    from engine.methods.uncertainty import BY_NAME
    from engine.training.ood import auroc
    flag = BY_NAME["ood_score"].flag
    model = load_model(model_name)
    data = open_dataset("omniglot", str(root), "evaluation", model.preprocessing)
    print(f"| {model_name} on the evaluation alphabets | AUROC ood_score | AUROC pool_share (experiment) | past the ood_score flag (2): "
          "own / outside |\n|---|---|---|---|")
    for way in (5, 20):
        sampler = EpisodeSampler(data, way, 1, 15, seed=0)
        own, pool, flagged = [], [], np.zeros(4)
        for i, ep in enumerate(sampler.iter_from(0, episodes)):
            outside = sampler.outside_images(i, ep.classes, ep.query_x.shape[0])
            with torch.inference_mode():
                z = model.learner.embed(torch.cat([ep.support_x, ep.query_x, outside]))
                task = model.learner.adapt_embeddings(z[:way], ep.support_y, way)
                n = ep.query_x.shape[0]
                ood = task.predict_embeddings(z[way:]).scores["ood_score"].numpy()
                share = pool_outlier_share(z[:way], ep.support_y, way, z[way:]).numpy()
            own.append(auroc(ood[:n], ood[n:]))
            pool.append(auroc(share[:n], share[n:]))
            flagged += [(ood[:n] > flag).sum(), n, (ood[n:] > flag).sum(), len(ood) - n]
        (a, ca), (b, cb) = mean_ci95(own), mean_ci95(pool)
        print(f"| {way}-way 1-shot, {episodes} episodes | {a:.3f} ± {ca:.3f} | {b:.3f} ± {cb:.3f} | "
              f"{100 * flagged[0] / flagged[1]:.1f}% / {100 * flagged[2] / flagged[3]:.1f}% |")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--omniglot", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot")
    p.add_argument("--model", default="omniglot", help="a bundled model or a trained model's folder")
    args = p.parse_args()
    omniglot_table(args.episodes, args.omniglot, args.model)
