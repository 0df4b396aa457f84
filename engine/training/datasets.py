"""Open a dataset for meta-training or evaluation by name."""
from __future__ import annotations

from engine.data.preprocessing import Preprocessing
from engine.errors import FewShotError

DATASETS = ("omniglot", "miniimagenet", "folder")


def open_dataset(kind: str, root: str, split: str, prep: Preprocessing, rotations: bool = False):
    """Return a ClassDataset whose images follow ``prep`` (the backbone's input contract)."""
    if kind == "omniglot":
        from engine.data.omniglot import load_omniglot
        return load_omniglot(root, split, image_size=prep.size[0], rotations=rotations, prep=prep)
    if kind == "miniimagenet":
        from engine.data.miniimagenet import load_miniimagenet
        return load_miniimagenet(root, split, image_size=prep.size[0], prep=prep)
    if kind == "folder":
        from pathlib import Path

        from engine.data.folder import load_folder
        # For a folder, the split is a sub-folder of class folders when it exists.
        base = Path(root) / split if split and (Path(root) / split).is_dir() else Path(root)
        return load_folder(base, prep)
    raise FewShotError(f"unknown dataset '{kind}'; choose one of {', '.join(DATASETS)}")
