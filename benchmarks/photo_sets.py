"""Real photos for measuring calibration, built from two Debian packages (never committed).

- ``test``: Tux Paint's stamps (package ``tuxpaint-stamps-default``): photographs of
  objects cut out onto transparent backgrounds (RGBA PNG), 12 classes of 9 to 35 images
  (birds, fruit, flowers, vegetables, cattle, mammals, clothes, planets, insects,
  sports, tools, fish). Results are reported on these.
- ``calib``: GCompris's photos (package ``gcompris-qt-data``, Qt resource files read
  with PySide6), 6 classes of 9 to 39 images (tools, fish, monuments, renewable
  energy, farm animals, wild animals). Only this set is used to choose constants
  (engine.methods.calibration.KAPPA), so the test set stays unseen.

    python benchmarks/photo_sets.py [--root .data/photo-sets]

Needs ``apt-get download`` and ``dpkg-deb`` (Debian or Ubuntu) and PySide6; the
packages are fetched from the distribution's mirror, about 200 MB.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = ROOT / ".data" / "photo-sets"
STAMPS = "usr/share/tuxpaint/stamps"
TEST_CLASSES = {
    "bird": "animals/birds", "fruit": "food/fruit", "flower": "plants/flowers", "vegetable": "food/vegetables",
    "cattle": "animals/mammals/bovines", "mammal": "animals/mammals", "clothes": "clothes",
    "planet": "space/planets", "insect": "animals/insects", "sports": "sports", "tool": "household/tools",
    "fish": "animals/fish",
}
# (resource file, folder inside it) per class.
CALIB_CLASSES = {
    "tool": ("categorization", "gcompris/src/activities/categorization/resource/images/tools"),
    "fish": ("categorization", "gcompris/src/activities/categorization/resource/images/fishes"),
    "monument": ("categorization", "gcompris/src/activities/categorization/resource/images/monuments"),
    "renewable-energy": ("categorization", "gcompris/src/activities/categorization/resource/images/renewable"),
    "farm-animal": ("explore_farm_animals", "gcompris/src/activities/explore_farm_animals/resource/animals"),
    "wild-animal": ("explore_world_animals", "gcompris/src/activities/explore_world_animals/resource/animals"),
}
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def fetch_package(name: str, work: Path) -> Path:
    """Download and unpack a Debian package; returns the folder it was unpacked into."""
    out = work / name
    if out.is_dir():
        return out
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", name], cwd=work, check=True, capture_output=True)
    deb = next(work.glob(f"{name}_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(out)], check=True)
    deb.unlink()
    return out


def extract_rcc(rcc: Path, out: Path) -> None:
    """Write every file of a Qt resource file under ``out``."""
    from PySide6.QtCore import QDirIterator, QFile, QIODevice, QResource
    if not QResource.registerResource(str(rcc)):
        raise RuntimeError(f"cannot read Qt resource file {rcc}")
    try:
        it = QDirIterator(":/", QDirIterator.IteratorFlag.Subdirectories)
        while it.hasNext():
            path = it.next()
            if it.fileInfo().isDir():
                continue
            f = QFile(path)
            if f.open(QIODevice.OpenModeFlag.ReadOnly):
                target = out / path[2:]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(bytes(f.readAll()))
    finally:
        QResource.unregisterResource(str(rcc))


def copy_photos(src: Path, dst: Path) -> int:
    dst.mkdir(parents=True, exist_ok=True)
    n = 0
    for f in sorted(src.iterdir()):
        if f.is_file() and f.suffix.lower() in PHOTO_SUFFIXES:
            shutil.copy(f, dst / f.name)
            n += 1
    return n


def build(root: Path) -> Path:
    """Build ``root/test/<class>/`` and ``root/calib/<class>/``; returns ``root``."""
    if (root / "test").is_dir() and (root / "calib").is_dir():
        return root
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stamps = fetch_package("tuxpaint-stamps-default", work) / STAMPS
        for cls, folder in TEST_CLASSES.items():
            print(f"test/{cls}: {copy_photos(stamps / folder, root / 'test' / cls)} photos")
        gcompris = fetch_package("gcompris-qt-data", work) / "usr/share/gcompris-qt/rcc"
        for rcc in {r for r, _ in CALIB_CLASSES.values()}:
            extract_rcc(gcompris / f"{rcc}.rcc", work / "rcc" / rcc)
        for cls, (rcc, folder) in CALIB_CLASSES.items():
            print(f"calib/{cls}: {copy_photos(work / 'rcc' / rcc / folder, root / 'calib' / cls)} photos")
    return root


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    args = p.parse_args()
    build(args.root)
    print(f"photo sets in {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
