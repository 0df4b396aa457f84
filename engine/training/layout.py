"""What the training panel asks before Start: does the data folder hold what the dataset
kind needs, and which options does every method take. Both answer in well under a
second: folders are listed, never decoded (the run itself skips unreadable images)."""
from __future__ import annotations

import typing
from dataclasses import MISSING, fields
from pathlib import Path

from engine.errors import DatasetLayoutError, FewShotError

#: The dataset kinds and the splits the engine knows for each (a folder's are its sub-folders).
KINDS = ("omniglot", "miniimagenet", "folder", "unlabeled")


def splits_of(kind: str) -> tuple[str, ...]:
    if kind == "omniglot":
        from engine.data.omniglot import SPLITS
        return SPLITS
    if kind == "miniimagenet":
        from engine.data.miniimagenet import SPLITS
        return tuple(SPLITS)
    return ()


def check_layout(kind: str, root: str, split: str = "") -> str:
    """A line saying what was found, or a DatasetLayoutError saying what is wrong and what was expected."""
    folder = Path(root)
    if kind == "unlabeled" and folder.is_file():
        from engine.training.cactus import find_images
        return f"{len(find_images(folder))} unlabeled images listed in {folder.name}"
    if not root:
        raise DatasetLayoutError("no data folder is chosen yet; choose the folder that holds the data")
    if not folder.is_dir():
        raise DatasetLayoutError(f"{root} is not a folder; choose the folder that holds the data")
    if kind == "omniglot":
        return _check_omniglot(folder, split)
    if kind == "miniimagenet":
        return _check_miniimagenet(folder, split)
    if kind == "folder":
        from engine.data.folder import find_class_images
        base = folder / split if split and (folder / split).is_dir() else folder
        names, paths = find_class_images(base)
        if len(names) < 2:
            raise DatasetLayoutError(f"{base} has {len(names)} class folder; meta-training needs at least 2 "
                                     "(one sub-folder per class, its images inside)")
        return f"{len(names)} classes, {sum(len(p) for p in paths)} images in {base}"
    if kind == "unlabeled":
        from engine.training.cactus import find_images
        return f"{len(find_images(folder))} unlabeled images in {folder} (sub-folders included, their names unused)"
    raise FewShotError(f"unknown dataset '{kind}'; choose one of {', '.join(KINDS)}")


def _check_omniglot(folder: Path, split: str) -> str:
    from engine.data.omniglot import BACKGROUND, EVALUATION, PLAIN_SPLITS, SPLITS, VINYALS_SPLITS, OmniglotArchive
    if split in PLAIN_SPLITS:
        archive = OmniglotArchive.open(folder, PLAIN_SPLITS[split])
        return f"Omniglot {split}: {len(archive.characters)} characters in {archive.location}"
    if split in VINYALS_SPLITS:
        listing = folder / "splits" / "vinyals" / f"{VINYALS_SPLITS[split]}.txt"
        if not listing.is_file():
            raise DatasetLayoutError(f"the Vinyals split {split} needs {listing} (one Alphabet/characterNN/rotDDD "
                                     "per line) next to the Omniglot zips")
        for set_name in (BACKGROUND, EVALUATION):
            OmniglotArchive.open(folder, set_name)
        return f"Omniglot {split}: {sum(1 for line in listing.open() if line.strip())} classes listed in {listing}"
    raise FewShotError(f"unknown Omniglot split '{split}'; choose one of {', '.join(SPLITS)}")


def _check_miniimagenet(folder: Path, split: str) -> str:
    from engine.data.miniimagenet import SPLITS, load_miniimagenet, pickle_path
    if split not in SPLITS:
        raise FewShotError(f"unknown mini-ImageNet split '{split}'; choose one of {', '.join(SPLITS)}")
    cache = pickle_path(folder, split)
    if cache.is_file():
        return f"mini-ImageNet {split}: the pickle cache {cache.name}"
    dataset = load_miniimagenet(folder, split, layout="images")  # lazy: reads the csv and lists the images
    return f"mini-ImageNet {split}: {len(dataset)} classes from {split}.csv and images/"


def method_specs() -> list[dict]:
    """Every registered method, its one-line description and its options (from its Config)."""
    from engine.methods.registry import METHODS
    out = []
    for name, cls in sorted(METHODS.items()):
        hints = typing.get_type_hints(cls.Config)
        options = []
        for f in fields(cls.Config):
            args = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
            kind = args[0] if args else hints[f.name]
            if kind not in (bool, int, float, str):
                continue
            options.append({"name": f.name, "flag": "--" + f.name.replace("_", "-"), "type": kind.__name__,
                            "default": None if f.default is MISSING else f.default,
                            "choices": list(f.metadata.get("choices") or []), "help": f.metadata.get("help", "")})
        out.append({"name": name, "description": cls.description or "", "options": options})
    return out
