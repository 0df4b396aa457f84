"""Files for the labeling tests: Omniglot PNGs extracted from ../shared into tmp folders,
and small generated PNGs."""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
from data_fixtures import OMNIGLOT_ROOT, require_shared
from PIL import Image


def extract_omniglot(dest: Path, characters: int, per_character: int = 20, skip: int = 0,
                     archive: str = "images_evaluation.zip") -> dict[str, list[Path]]:
    """Write ``characters`` characters x ``per_character`` drawings as
    ``dest/<alphabet>/<character>/<file>.png``; returns character key -> files in drawer order."""
    path = require_shared(OMNIGLOT_ROOT / archive)
    by_char: dict[str, list[str]] = {}
    with zipfile.ZipFile(path) as zf:
        for name in sorted(zf.namelist()):
            if name.endswith(".png"):
                by_char.setdefault(str(Path(name).parent), []).append(name)
        chosen = sorted(by_char)[skip:skip + characters]
        out: dict[str, list[Path]] = {}
        for char in chosen:
            files = []
            for name in by_char[char][:per_character]:
                target = dest / Path(name).relative_to(Path(name).parts[0])
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(name))
                files.append(target)
            out["/".join(Path(char).parts[-2:])] = files
    return out


def examples_dir(dest: Path, chars: dict[str, list[Path]], per_class: int = 1) -> Path:
    """``dest/<class>/`` holding the first ``per_class`` drawings of each character (copies)."""
    for key, files in chars.items():
        folder = dest / key.replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        for f in files[:per_class]:
            shutil.copy(f, folder / f.name)
    return dest


def make_png(path: Path, seed: int, size: tuple[int, int] = (12, 10)) -> Path:
    """A small RGB PNG of random pixels (``size`` is width, height), different per ``seed``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path
