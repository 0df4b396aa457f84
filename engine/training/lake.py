"""Evaluation on the Omniglot one-shot runs of Lake et al. (2015): the error rate per run and overall."""
from __future__ import annotations

from pathlib import Path

import torch

from engine.data.lake_runs import load_lake_runs
from engine.data.transforms import load_uint8, normalize


def _batch(paths: list[Path], prep) -> torch.Tensor:
    return normalize(torch.stack([load_uint8(p, prep) for p in paths]), prep)


@torch.no_grad()
def evaluate_lake_runs(model, root: str | Path, device: torch.device) -> dict:
    """Adapt on each run's 20 training drawings (one per class), classify its 20 test drawings."""
    runs = load_lake_runs(root)
    prep = model.preprocessing
    per_run = []
    wrong_total = items_total = 0
    for run in runs:
        support = _batch(run.training, prep).to(device)
        labels = torch.arange(len(run.training), device=device)
        pred = model.learner.adapt(support, labels).predict(_batch(run.test, prep).to(device))
        answers = torch.tensor(run.answers, device=device)
        wrong = int((pred.labels != answers).sum())
        per_run.append({"run": run.name, "error_rate": wrong / len(run.test), "errors": wrong, "items": len(run.test)})
        wrong_total += wrong
        items_total += len(run.test)
    return {"error_rate": wrong_total / items_total, "errors": wrong_total, "items": items_total, "runs": per_run}
