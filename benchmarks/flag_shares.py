"""How often each flag fires on the episode's own (in-class) queries, and which plain line
(fewshot_gui/plain_words.py) they read, for bayes-proto on the evaluation alphabets' 1-shot
episodes (the same draws as ``fewshot evaluate``).

    .venv/bin/python benchmarks/flag_shares.py [--episodes 40] [--model omniglot] [--model runs/omniglot-open-set]
"""
from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.data.sampler import EpisodeSampler  # noqa: E402
from engine.method_choice import with_method  # noqa: E402
from engine.methods.uncertainty import BY_NAME  # noqa: E402
from engine.model_store import load_model  # noqa: E402
from engine.training.datasets import open_dataset  # noqa: E402
from fewshot_gui.plain_words import plain_summary  # noqa: E402 - Qt-free: words only

FLAGS = ("aleatoric", "mutual_info", "ood_score")


def shares(spec: str, root: Path, way: int, episodes: int) -> tuple[dict[str, float], dict[str, float]]:
    model = load_model(spec)
    learner = with_method(model, "bayes-proto").learner
    data = open_dataset("omniglot", str(root), "evaluation", model.preprocessing)
    flagged, lines, n = collections.Counter(), collections.Counter(), 0
    classes = {k: SimpleNamespace(name=f"#{k}#") for k in range(way)}
    for ep in EpisodeSampler(data, way, 1, 15, seed=0).iter_from(0, episodes):
        with torch.inference_mode():
            z = model.learner.embed(torch.cat([ep.support_x, ep.query_x]))
            p = learner.adapt_embeddings(z[:way], ep.support_y, way).predict_embeddings(z[way:])
        for j in range(len(ep.query_y)):
            scores = {k: float(v[j]) for k, v in p.scores.items()}
            for name in FLAGS:
                flagged[name] += scores[name] > BY_NAME[name].flag
            probs = {k: float(p.probs[j, k]) for k in range(way)}
            rec = SimpleNamespace(status="predicted", confidence=max(probs.values()), probs=probs, scores=scores)
            lines[re.sub(r"#\d+#", "X", plain_summary(rec, classes))] += 1
            n += 1
    return ({k: 100 * v / n for k, v in flagged.items()},
            {k: 100 * v / n for k, v in lines.most_common()})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--model", action="append", help="a bundled model or a trained model's folder (repeatable)")
    p.add_argument("--omniglot", type=Path, default=ROOT.parent / "shared" / "data" / "omniglot")
    args = p.parse_args()
    print("| model | way | " + " | ".join(f"past the {n} flag ({BY_NAME[n].flag:g})" for n in FLAGS)
          + " | plain lines (share of own queries) |\n|---|---|---|---|---|---|")
    for spec in args.model or ["omniglot"]:
        for way in (5, 20):
            flags, lines = shares(spec, args.omniglot, way, args.episodes)
            print(f"| {spec} | {way} | " + " | ".join(f"{flags[n]:.1f}%" for n in FLAGS) + " | "
                  + ", ".join(f"{k} {v:.1f}%" for k, v in lines.items()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
