"""How honest the probabilities are: accuracy, ECE, NLL and Brier, before and after calibration.

    python benchmarks/bench_calibration.py photos [--episodes 300]
    python benchmarks/bench_calibration.py omniglot [--episodes 600]
    python benchmarks/bench_calibration.py fit-kappa
    python benchmarks/bench_calibration.py fit-typical

- ``photos``: the bundled ``photos`` model on real photos (benchmarks/photo_sets.py's
  test set, Tux Paint's photo stamps), N-way K-shot episodes with up to 10 queries per
  class. "before": the old fixed temperature (10); "after": the per-task temperature
  of engine.methods.calibration (held-out folds when a class has 2+ examples, else the
  scale rule).
- ``omniglot``: the bundled ``omniglot`` model on the 20 evaluation alphabets (as
  ``fewshot evaluate``), 5-way and 20-way, 1-shot and 5-shot. "before" is the
  temperature it was trained with, fixed; "after" also fits it per task (which only
  changes anything with 2+ examples per class).
- ``fit-kappa``: the scale rule's constant that maximises the likelihood of 1-shot
  2- to 6-way tasks on the calibration set (GCompris photos), as KAPPA was chosen.
- ``fit-typical``: the one-shot unit of the OOD score (engine.methods.prototypes.
  ONE_SHOT_TYPICAL): over 1-shot tasks, the median query's distance to its nearest
  prototype over the median distance between prototypes, on the calibration photos
  (cosine) and on the omniglot model's background alphabets (squared Euclidean); then
  what the engine's unit (``ood_scale``) gives on the sets the results are reported on,
  beside the unit it replaced (``support_spread``'s one-shot rule).

Prints a markdown table; the figures in docs/CALIBRATION.md come from these runs.
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

from engine.runtime import tune_cpu_allocator  # noqa: E402

tune_cpu_allocator()

from engine.methods.protonet import ProtoNet  # noqa: E402
from engine.training.metrics import CalibrationTally  # noqa: E402

PHOTO_EPISODES = ((10, 5), (10, 3), (10, 2), (5, 5), (5, 1), (10, 1))
OMNIGLOT_EPISODES = ((5, 1), (20, 1), (5, 5), (20, 5))


def photo_embeddings(root: Path, which: str) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """Embeddings of every photo of ``root/which/<class>/`` with the photos backbone (cached in .npz)."""
    cache = root / f"{which}-lite0.npz"
    classes = sorted(p.name for p in (root / which).iterdir() if p.is_dir())
    if cache.is_file():
        data = np.load(cache)
        return torch.from_numpy(data["z"]), data["y"], classes
    from engine.data.transforms import load_uint8, normalize
    from engine.model_store import load_model
    model = load_model("photos")
    pixels, labels = [], []
    for k, c in enumerate(classes):
        for f in sorted((root / which / c).iterdir()):
            pixels.append(load_uint8(f, model.preprocessing))
            labels.append(k)
    with torch.inference_mode():
        z = torch.cat([model.learner.embed(normalize(torch.stack(pixels[i:i + 32]), model.preprocessing))
                       for i in range(0, len(pixels), 32)])
    np.savez(cache, z=z.numpy(), y=np.array(labels))
    return z, np.array(labels), classes


def photo_episodes(labels: np.ndarray, way: int, shot: int, episodes: int, queries: int = 10, seed: int = 0):
    """(support indices, support labels, query indices, query labels) per episode."""
    rng = np.random.default_rng(seed)
    n_classes = int(labels.max()) + 1
    for _ in range(episodes):
        chosen = rng.choice(n_classes, way, replace=False)
        s_idx, s_y, q_idx, q_y = [], [], [], []
        for k, c in enumerate(chosen):
            idx = rng.permutation(np.flatnonzero(labels == c))
            s_idx += list(idx[:shot])
            s_y += [k] * shot
            q = idx[shot:shot + queries]
            q_idx += list(q)
            q_y += [k] * len(q)
        yield np.array(s_idx), torch.tensor(s_y), np.array(q_idx), np.array(q_y)


def score_heads(learners: dict[str, ProtoNet], z: torch.Tensor, labels: np.ndarray, way: int, shot: int,
                episodes: int) -> dict[str, dict]:
    tallies = {name: CalibrationTally() for name in learners}
    seconds = {name: 0.0 for name in learners}
    for s_idx, s_y, q_idx, q_y in photo_episodes(labels, way, shot, episodes):
        for name, learner in learners.items():
            t0 = time.perf_counter()
            head = learner.adapt_embeddings(z[s_idx], s_y, way)
            seconds[name] += time.perf_counter() - t0
            tallies[name].add(head.predict_embeddings(z[q_idx]).probs.numpy(), q_y)
    return {name: {**t.summary(), "adapt_ms": 1e3 * seconds[name] / episodes} for name, t in tallies.items()}


def row(task: str, name: str, s: dict) -> str:
    return (f"| {task} | {name} | {100 * s['accuracy']:.1f} ± {100 * s['ci95']:.1f} | {s['ece']:.3f} ± "
            f"{s['ece_ci95']:.3f} | {s['nll']:.3f} ± {s['nll_ci95']:.3f} | {s['brier']:.3f} ± {s['brier_ci95']:.3f} |")


HEADER = ("| task | temperature | accuracy % | ECE (15 bins) | NLL | Brier |\n"
          "|---|---|---|---|---|---|")


def run_photos(args) -> None:
    from photo_sets import build
    root = build(args.root)
    z, labels, classes = photo_embeddings(root, "test")
    identity = torch.nn.Identity()
    learners = {"fixed 10 (before)": ProtoNet(identity, distance="cosine", temperature=10.0,
                                              learn_temperature=False, calibrate=False),
                "per task (after)": ProtoNet(identity, distance="cosine", learn_temperature=False)}
    print(f"photos model on {len(labels)} Tux Paint photos, {len(classes)} classes; {args.episodes} episodes each\n")
    print(HEADER)
    for way, shot in PHOTO_EPISODES:
        for name, s in score_heads(learners, z, labels, way, shot, args.episodes).items():
            print(row(f"{way}-way {shot}-shot", name, s))


def run_omniglot(args) -> None:
    from dataclasses import replace

    from engine.data.sampler import EpisodeSampler
    from engine.model_store import load_model
    from engine.training.datasets import open_dataset
    from engine.training.evaluate import evaluate_episodes

    model = load_model("omniglot")
    after = model.learner
    before = ProtoNet(after.backbone, replace(after.config, calibrate=False)).eval()
    data = open_dataset("omniglot", str(args.omniglot), "evaluation", model.preprocessing)
    print(f"omniglot model on the evaluation alphabets; {args.episodes} episodes, 15 queries per class\n")
    print(HEADER)
    for way, shot in OMNIGLOT_EPISODES:
        sampler = EpisodeSampler(data, way, shot, 15, seed=0)
        for name, learner in (("trained, fixed (before)", before), ("per task (after)", after)):
            if shot == 1 and learner is after:
                print(f"| {way}-way {shot}-shot | per task (after) | same as before: one example per class "
                      "leaves nothing to fit | | | |")
                continue
            s = evaluate_episodes(learner, sampler, args.episodes, torch.device("cpu")).to_dict()
            print(row(f"{way}-way {shot}-shot", name, s))


def run_fit_kappa(args) -> None:
    from engine.methods.prototypes import prototype_scale
    from engine.methods.prototypes import pairwise_distance
    from photo_sets import build
    root = build(args.root)
    z, labels, _ = photo_embeddings(root, "calib")
    z = z.double()
    n_classes = int(labels.max()) + 1
    tasks = []
    for way in range(2, n_classes + 1):
        for s_idx, _s_y, q_idx, q_y in photo_episodes(labels, way, 1, args.episodes, seed=5):
            protos = z[s_idx]
            tasks.append((pairwise_distance(z[q_idx], protos, "cosine") / prototype_scale(protos, "cosine"),
                          torch.from_numpy(q_y)))
    print("| kappa | mean NLL, 1-shot calibration tasks |\n|---|---|")
    best = None
    for kappa in np.arange(8.0, 20.5, 0.5):
        nll = float(np.mean([torch.nn.functional.cross_entropy(-d * kappa, y).item() for d, y in tasks]))
        best = min(best or (nll, kappa), (nll, kappa))
        print(f"| {kappa:.1f} | {nll:.4f} |")
    print(f"\nmaximum likelihood: kappa = {best[1]:.1f}")


def _typical_ratios(tasks) -> np.ndarray:
    """Per 1-shot task (support z, query z): median nearest-prototype distance / median prototype distance."""
    from engine.methods.prototypes import pairwise_distance, prototype_scale
    out = []
    for zs, zq, distance in tasks:
        out.append(float(pairwise_distance(zq, zs, distance).amin(1).median()) / prototype_scale(zs, distance))
    return np.array(out)


def _omniglot_one_shot(args, split: str, way: int, episodes: int):
    from engine.data.sampler import EpisodeSampler
    from engine.model_store import load_model
    from engine.training.datasets import open_dataset
    model = load_model("omniglot")
    data = open_dataset("omniglot", str(args.omniglot), split, model.preprocessing)
    for ep in EpisodeSampler(data, way, 1, 15, seed=0).iter_from(0, episodes):
        z = model.learner.embed(torch.cat([ep.support_x, ep.query_x])).double()
        yield z[:way], z[way:], "euclidean"


def run_fit_typical(args) -> None:
    from engine.methods.prototypes import ONE_SHOT_TYPICAL
    from photo_sets import build
    root = build(args.root)
    sets = {"cosine": [], "euclidean": []}
    print("| 1-shot tasks (fit) | median of ratio | 10th-90th percentile |\n|---|---|---|")
    z, labels, _ = photo_embeddings(root, "calib")
    for way in range(2, int(labels.max()) + 2):
        r = _typical_ratios((z[s].double(), z[q].double(), "cosine")
                            for s, _y, q, _qy in photo_episodes(labels, way, 1, args.episodes, seed=5))
        sets["cosine"].append(r)
        print(f"| calibration photos, {way}-way | {np.median(r):.3f} | {np.percentile(r, 10):.3f}-{np.percentile(r, 90):.3f} |")
    for way in (5, 20):
        r = _typical_ratios(_omniglot_one_shot(args, "background", way, args.episodes))
        sets["euclidean"].append(r)
        print(f"| omniglot background, {way}-way | {np.median(r):.3f} | {np.percentile(r, 10):.3f}-{np.percentile(r, 90):.3f} |")
    fitted = {k: float(np.median(np.concatenate(v))) for k, v in sets.items()}
    print(f"\nfitted: {', '.join(f'{k} {v:.3f}' for k, v in fitted.items())}; in use: {ONE_SHOT_TYPICAL}\n")
    from engine.methods.prototypes import ood_scale, pairwise_distance, support_spread
    from engine.methods.uncertainty import BY_NAME
    flag = BY_NAME["ood_score"].flag
    print(f"| 1-shot tasks (reported sets) | median own-query score | own queries past the flag ({flag:g}) | "
          "the same with the old unit |\n|---|---|---|---|")
    z, labels, _ = photo_embeddings(root, "test")
    checks = [(f"test photos, {w}-way", ((z[s].double(), z[q].double(), "cosine")
                                         for s, _y, q, _qy in photo_episodes(labels, w, 1, args.episodes)))
              for w in (3, 5, 10)]
    checks += [(f"omniglot evaluation, {w}-way", _omniglot_one_shot(args, "evaluation", w, args.episodes))
               for w in (5, 20)]
    for name, tasks in checks:
        new, old = [], []
        for zs, zq, d in tasks:  # one example per class: the support is the prototypes
            y = torch.arange(zs.shape[0])
            nearest = pairwise_distance(zq, zs, d).amin(1)
            new.append((nearest / ood_scale(zs, y, zs, d)).numpy())
            old.append((nearest / support_spread(zs, y, zs, d)).numpy())
        new, old = np.concatenate(new), np.concatenate(old)
        print(f"| {name} | {np.median(new):.2f} | {100 * (new > flag).mean():.1f}% | "
              f"median {np.median(old):.2f}, {100 * (old > flag).mean():.1f}% |")


def main() -> int:
    from photo_sets import DEFAULT_ROOT
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("photos", "omniglot", "fit-kappa", "fit-typical"))
    p.add_argument("--episodes", type=int, default=None)
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="photo sets (built when missing)")
    p.add_argument("--omniglot", type=Path, default=ROOT.parent / "shared" / "data" / "omniglot")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    if args.what == "photos":
        args.episodes = args.episodes or 300
        run_photos(args)
    elif args.what == "omniglot":
        args.episodes = args.episodes or 600
        run_omniglot(args)
    elif args.what == "fit-typical":
        args.episodes = args.episodes or 100
        run_fit_typical(args)
    else:
        args.episodes = args.episodes or 100
        run_fit_kappa(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
