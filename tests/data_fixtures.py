"""Builders of generated test data for the data layer (and the lead's evaluation tests).

Real data is read from ../shared and never copied into the project; what is built
here goes to a pytest tmp folder.
"""
from __future__ import annotations

import csv
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data.omniglot import EVALUATION, OmniglotArchive

SHARED = Path(os.environ.get("FEWSHOT_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
OMNIGLOT_ROOT = SHARED / "data" / "omniglot"
MINIIMAGENET_ROOT = SHARED / "data" / "miniimagenet"


def require_shared(path: Path) -> Path:
    """The tests never skip for missing shared data: CI must lay it out."""
    if not path.exists():
        pytest.fail(f"shared data missing: {path} (the tests read ../shared; it is never copied here)")
    return path


def build_lake_runs_fixture(omniglot_root: str | Path, out_dir: str | Path, runs: int = 20, seed: int = 0,
                            way: int = 20) -> Path:
    """Write ``out_dir/runNN`` folders in the layout of Lake et al.'s one-shot runs,
    built from the EVALUATION set as the original: each run takes ``way`` characters of
    one alphabet, drawer A's drawing as ``training/classJJ.png`` and drawer B's as
    ``test/itemKK.png`` (shuffled), with the answers in ``class_labels.txt``."""
    archive = OmniglotArchive.open(omniglot_root, EVALUATION)
    rng = random.Random(seed)
    by_alphabet: dict[str, list[str]] = {}
    for char in archive.characters:
        by_alphabet.setdefault(char.split("/")[0], []).append(char)
    alphabets = sorted(a for a, chars in by_alphabet.items() if len(chars) >= way)
    rng.shuffle(alphabets)
    out_dir = Path(out_dir)
    for r in range(runs):
        name = f"run{r + 1:02d}"
        chars = rng.sample(by_alphabet[alphabets[r % len(alphabets)]], way)
        n_drawers = min(len(archive.characters[c]) for c in chars)
        drawer_a, drawer_b = rng.sample(range(n_drawers), 2)
        train_members = [archive.characters[c][drawer_a] for c in chars]
        test_order = list(range(way))
        rng.shuffle(test_order)
        test_members = [archive.characters[chars[j]][drawer_b] for j in test_order]
        (out_dir / name / "training").mkdir(parents=True, exist_ok=True)
        (out_dir / name / "test").mkdir(parents=True, exist_ok=True)
        for j, blob in enumerate(archive.read_all(train_members)):
            (out_dir / name / "training" / f"class{j + 1:02d}.png").write_bytes(blob)
        lines = []
        for k, blob in enumerate(archive.read_all(test_members)):
            (out_dir / name / "test" / f"item{k + 1:02d}.png").write_bytes(blob)
            lines.append(f"{name}/test/item{k + 1:02d}.png {name}/training/class{test_order[k] + 1:02d}.png")
        (out_dir / name / "class_labels.txt").write_text("\n".join(lines) + "\n")
    return out_dir


def class_color(k: int) -> tuple[int, int, int]:
    """A distinct, JPEG-stable solid colour per class index."""
    palette = [(200, 30, 30), (30, 180, 40), (40, 60, 210), (230, 200, 40), (120, 40, 160),
               (20, 190, 190), (250, 130, 20), (90, 90, 90)]
    return palette[k % len(palette)]


def read_split_rows(split: str, classes: int, per_class: int) -> list[tuple[str, str]]:
    """The first ``per_class`` rows of each of the first ``classes`` classes of a real split csv."""
    path = require_shared(MINIIMAGENET_ROOT / f"{split}.csv")
    rows: dict[str, list[str]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["label"] not in rows and len(rows) == classes:
                continue
            files = rows.setdefault(row["label"], [])
            if len(files) < per_class:
                files.append(row["filename"])
    return [(f, label) for label, files in rows.items() for f in files]


def build_miniimagenet_fixture(out_dir: str | Path, splits: tuple[str, ...] = ("train", "val", "test"),
                               classes: int = 5, per_class: int = 6, size: int = 84,
                               layout: str = "images") -> Path:
    """A mini-ImageNet root laid out with rows of the REAL split files and generated
    images: solid class colours (so normalisation is checkable) in JPEGs under
    ``images/`` (layout ``"images"``) or in ``mini-imagenet-cache-<split>.pkl``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in splits:
        rows = read_split_rows(split, classes, per_class)
        labels = sorted({label for _, label in rows})
        if layout == "images":
            (out_dir / "images").mkdir(exist_ok=True)
            with open(out_dir / f"{split}.csv", "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["filename", "label"])
                for filename, label in rows:
                    writer.writerow([filename, label])
                    color = class_color(labels.index(label))
                    Image.new("RGB", (size, size), color).save(out_dir / "images" / filename, quality=95)
        elif layout == "pickle":
            data = np.zeros((len(rows), size, size, 3), dtype=np.uint8)
            class_dict: dict[str, list[int]] = {}
            for i, (_, label) in enumerate(rows):
                data[i] = class_color(labels.index(label))
                class_dict.setdefault(label, []).append(i)
            with open(out_dir / f"mini-imagenet-cache-{split}.pkl", "wb") as fh:
                pickle.dump({"image_data": data, "class_dict": class_dict}, fh, protocol=4)
        else:
            raise ValueError(f"layout is 'images' or 'pickle', not {layout}")
    return out_dir
