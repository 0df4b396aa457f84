"""The 20-way one-shot classification runs of Lake et al. (2015, Science).

Layout: ``root/runNN/`` with ``training/classJJ.png`` (one drawing per class),
``test/itemKK.png`` (a second drawer's drawing of each class) and
``class_labels.txt`` holding ``runNN/test/itemKK.png runNN/training/classJJ.png``
per line: the answer for each test item.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import DatasetLayoutError

_RUN_DIR = re.compile(r"^run\d+$")
LABELS_FILE = "class_labels.txt"


@dataclass
class LakeRun:
    """One run: ``answers[k]`` is the index into ``training`` of ``test[k]``'s class."""

    name: str
    training: list[Path]
    test: list[Path]
    answers: list[int]


def _png_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png"
                  and not p.name.startswith("."))


def load_run(run_dir: Path, root: Path) -> LakeRun:
    labels = run_dir / LABELS_FILE
    for needed in (run_dir / "training", run_dir / "test", labels):
        if not needed.exists():
            raise DatasetLayoutError(f"{run_dir} lacks {needed.name}; a run folder holds training/, test/ "
                                     f"and {LABELS_FILE}")
    training = _png_files(run_dir / "training")
    if not training:
        raise DatasetLayoutError(f"{run_dir / 'training'} holds no .png images")
    where = {p.resolve(): i for i, p in enumerate(training)}
    answers: dict[Path, int] = {}
    for n, line in enumerate(labels.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DatasetLayoutError(f"{labels} line {n}: expected '<test image> <training image>', found '{line}'")
        test_path, train_path = (root / parts[0]).resolve(), (root / parts[1]).resolve()
        if not test_path.is_file():
            raise DatasetLayoutError(f"{labels} line {n}: test image {parts[0]} not found under {root}")
        if train_path not in where:
            raise DatasetLayoutError(f"{labels} line {n}: {parts[1]} is not one of the training images "
                                     f"in {run_dir / 'training'}")
        if test_path in answers:
            raise DatasetLayoutError(f"{labels} line {n}: {parts[0]} is listed twice")
        answers[test_path] = where[train_path]
    test = _png_files(run_dir / "test")
    unlabeled = [p.name for p in test if p.resolve() not in answers]
    if unlabeled:
        raise DatasetLayoutError(f"{labels} gives no answer for {len(unlabeled)} test image(s) "
                                 f"(e.g. {unlabeled[0]}); the run is incomplete")
    if len(answers) != len(test):
        raise DatasetLayoutError(f"{labels} names test images outside {run_dir / 'test'}")
    return LakeRun(run_dir.name, training, test, [answers[p.resolve()] for p in test])


def load_lake_runs(root: str | Path) -> list[LakeRun]:
    """Every ``runNN`` under ``root``, in name order."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"one-shot runs folder {root} does not exist")
    run_dirs = sorted(p for p in root.iterdir() if p.is_dir() and _RUN_DIR.match(p.name))
    if not run_dirs:
        raise DatasetLayoutError(f"{root} holds no run folders (run01, run02, ...); point to the folder of the "
                                 "Lake et al. one-shot classification runs (all_runs)")
    return [load_run(d, root) for d in run_dirs]
