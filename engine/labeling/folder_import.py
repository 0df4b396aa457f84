"""A folder of class sub-folders as examples: one class per sub-folder, its images its examples.

The layout people already have (``examples/cat/*.jpg``, ``examples/dog/*.jpg``), as
``fewshot label --examples`` and the app's File > Import Examples from Folders take it.
A class is matched by name (ignoring case) or created. Also here: which bundled model
suits a set of example images.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine.data.decode import IMAGE_EXTENSIONS
from engine.errors import FewShotError

if TYPE_CHECKING:
    from engine.labeling.store import Project

# Examples at most this large on a side, in grayscale, look like characters (Omniglot's
# are 105 px): the omniglot model suits them; anything else gets the photos model.
SMALL_GRAY_SIDE = 160
SUGGEST_SAMPLE = 24


@dataclass
class ImportReport:
    """What an import did. ``added``: examples added per class name; ``created``: classes
    made for it; ``matched``: existing classes it added to; ``duplicates``: images that
    already were examples of their class; ``errors``: (path, reason) of unusable images
    (recorded in the project with the reason); ``skipped``: (path, reason) of entries that
    are not images."""

    added: dict[str, int] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    matched: list[str] = field(default_factory=list)
    duplicates: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.added.values())

    def summary(self) -> str:
        """One line for a person."""
        n = len(self.added)
        parts = [f"{self.total} example{'s' if self.total != 1 else ''} added to {n} class{'es' if n != 1 else ''}"]
        if self.created:
            parts.append(f"{len(self.created)} new ({', '.join(self.created[:6])}{' ...' if len(self.created) > 6 else ''})")
        if self.duplicates:
            parts.append(f"{self.duplicates} already were examples")
        if self.errors:
            parts.append(f"{len(self.errors)} unreadable (kept in the project, marked)")
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped (not images)")
        return "; ".join(parts)


def _has_images(folder: Path) -> bool:
    for _root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS for f in files if not f.startswith(".")):
            return True
    return False


def class_folders(root: str | Path) -> list[Path]:
    """The sub-folders of ``root`` that hold images (searched recursively), by name; hidden ones left out."""
    root = Path(root)
    try:
        subs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    except OSError as e:
        raise FewShotError(f"cannot read the folder {root} ({e.strerror or e}); check the path") from None
    return sorted((d for d in subs if _has_images(d)), key=lambda d: d.name.lower())


def import_example_folders(project: "Project", root: str | Path) -> ImportReport:
    """Each class sub-folder of ``root`` becomes (or is matched to) a class, its images its examples."""
    root = Path(root)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise FewShotError(f"{root} {what}; give a folder with one sub-folder of example images per class")
    folders = class_folders(root)
    if not folders:
        raise FewShotError(f"{root} has no sub-folders of images; put each class's examples in a sub-folder named "
                           f"after the class (e.g. {root / 'cats' / 'cat1.jpg'})")
    report = ImportReport()
    for folder in folders:
        cls = project.class_by_name(folder.name)
        if cls is None:
            class_id = project.add_class(folder.name)
            report.created.append(folder.name)
        else:
            class_id = cls.id
            report.matched.append(cls.name)
        added = project.add_examples(class_id, [folder])
        report.added[cls.name if cls else folder.name] = len(added.added)
        report.duplicates += len(added.duplicates)
        report.errors += added.errors
        report.skipped += added.skipped
    return report


def suggest_model(paths: list[str | Path]) -> str:
    """``omniglot`` when the examples are small grayscale images (characters, symbols),
    else ``photos``. Reads image headers only."""
    from PIL import Image
    seen = 0
    for path in paths[:SUGGEST_SAMPLE]:
        try:
            with Image.open(path) as img:
                gray = img.mode in ("1", "L", "LA", "I;16", "I") or (
                    img.mode == "P" and _palette_is_gray(img))
                small = max(img.size) <= SMALL_GRAY_SIDE
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
        if not (gray and small):
            return "photos"
        seen += 1
    return "omniglot" if seen else "photos"


def _palette_is_gray(img) -> bool:
    palette = img.getpalette() or []
    triples = [palette[i:i + 3] for i in range(0, len(palette), 3)]
    return all(r == g == b for r, g, b in triples)
