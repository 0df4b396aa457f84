"""An Omniglot image set as one flat folder of unlabeled images, for CACTUs.

Every image of ``images_<set>.zip`` is written as ``<flat>/<sha1 of its path>.png``, so
neither a folder nor a file name says which character it is. Usage:

    python benchmarks/omniglot_flat.py ../shared/data/omniglot .data/omniglot-flat [background]
"""
from __future__ import annotations

import hashlib
import sys
import zipfile
from pathlib import Path


def main(root: str, flat: str, image_set: str = "background") -> int:
    out = Path(flat)
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    with zipfile.ZipFile(Path(root) / f"images_{image_set}.zip") as zf:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.endswith(".png") or "/." in info.filename:
                continue
            name = hashlib.sha1(info.filename.encode()).hexdigest() + ".png"
            (out / name).write_bytes(zf.read(info))
            count += 1
    print(f"{count} images of images_{image_set}.zip in {out}, named by hash")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
