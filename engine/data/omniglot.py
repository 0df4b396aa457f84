"""Omniglot (Lake et al. 2015) as a :class:`TensorClassDataset`, read straight from
the official zip files or from extracted folders of the same names.

torchvision's ``datasets.Omniglot`` is not reused: it insists on
``<root>/omniglot-py/``, checks the zips against the MD5 sums of its own download
(a pixel-identical repacked archive fails), covers only background/evaluation,
wants the files extracted, and decodes one image per ``__getitem__`` call, where
episodic training needs the whole set decoded once into one tensor.
"""
from __future__ import annotations

import logging
import os
import re
import time
import zipfile
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from engine.data.cache import TensorCache, cache_key
from engine.data.class_dataset import TensorClassDataset, decode_pool
from engine.data.preprocessing import Preprocessing
from engine.data.transforms import check_preprocessing, load_uint8
from engine.errors import DatasetLayoutError, FewShotError

log = logging.getLogger(__name__)

BACKGROUND = "images_background"
EVALUATION = "images_evaluation"
SMALL1 = "images_background_small1"
SMALL2 = "images_background_small2"
PLAIN_SPLITS = {"background": BACKGROUND, "evaluation": EVALUATION, "small1": SMALL1, "small2": SMALL2}
VINYALS_SPLITS = {"vinyals-train": "train", "vinyals-val": "val",
                  "vinyals-trainval": "trainval", "vinyals-test": "test"}
SPLITS = (*PLAIN_SPLITS, *VINYALS_SPLITS)

_CACHE_VERSION = 1
_CHUNK = 512  # images per decode task: large enough that task overhead vanishes
_VINYALS_LINE = re.compile(r"^(?P<char>[^/]+/[^/]+)/rot(?P<deg>\d{3})$")
_DOWNLOAD_HINT = "the official files are at https://github.com/brendenlake/omniglot (python/*.zip)"


def omniglot_preprocessing(image_size: int = 28) -> Preprocessing:
    """1 channel, stretched to ``image_size``, inverted so strokes are bright on black."""
    return Preprocessing(size=(image_size, image_size), channels=1, mean=(0.0,), std=(1.0,),
                         resize="stretch", invert=True)


@dataclass
class OmniglotArchive:
    """One Omniglot image set (e.g. ``images_background``) as a zip or an extracted folder.

    ``characters`` maps ``Alphabet/characterNN`` to its image files (zip member names,
    or paths relative to :attr:`location`), sorted, so drawers come in order.
    """

    set_name: str
    location: Path
    is_zip: bool
    characters: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def open(cls, root: str | Path, set_name: str) -> "OmniglotArchive":
        root = Path(root)
        if not root.is_dir():
            raise DatasetLayoutError(f"Omniglot folder {root} does not exist; point to the folder holding "
                                     f"{set_name}.zip (or an extracted {set_name}/ folder)")
        zip_path, folder = root / f"{set_name}.zip", root / set_name
        if zip_path.is_file():
            archive = cls(set_name, zip_path, True)
            archive.characters = _list_zip(zip_path)
        elif folder.is_dir():
            # Some unzip tools add one more level: images_background/images_background/...
            if (folder / set_name).is_dir():
                folder = folder / set_name
            archive = cls(set_name, folder, False)
            archive.characters = _list_folder(folder)
        else:
            raise DatasetLayoutError(f"Omniglot needs {set_name}.zip or an extracted {set_name}/ folder in "
                                     f"{root}, and neither is there; {_DOWNLOAD_HINT}")
        if not archive.characters:
            raise DatasetLayoutError(f"{archive.location} holds no images laid out as "
                                     f"<Alphabet>/<characterNN>/<image>.png; is it an Omniglot {set_name} archive?")
        return archive

    def read_all(self, members: list[str]) -> list[bytes]:
        if not self.is_zip:
            return [(self.location / m).read_bytes() for m in members]
        try:
            with zipfile.ZipFile(self.location) as zf:
                return [zf.read(m) for m in members]
        except (zipfile.BadZipFile, OSError, KeyError) as e:
            raise DatasetLayoutError(f"cannot read {self.location} ({e}); the archive is damaged, "
                                     f"download it again ({_DOWNLOAD_HINT})") from None

    def fingerprint(self) -> dict:
        """Changes whenever the files change, without reading them."""
        if self.is_zip:
            st = self.location.stat()
            return {"zip": self.location.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        total, latest, count = 0, 0, 0
        for members in self.characters.values():
            for m in members:
                st = (self.location / m).stat()
                total, latest, count = total + st.st_size, max(latest, st.st_mtime_ns), count + 1
        return {"folder": self.set_name, "files": count, "size": total, "mtime_ns": latest}

    def describe(self, member: str) -> str:
        return f"{self.location}:{member}" if self.is_zip else str(self.location / member)


def _is_junk(part: str) -> bool:
    return part.startswith(".") or part == "__MACOSX"


def _list_zip(path: Path) -> dict[str, list[str]]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise DatasetLayoutError(f"{path} is not a readable zip file ({e}); download it again "
                                 f"({_DOWNLOAD_HINT})") from None
    chars: dict[str, list[str]] = {}
    for name in names:
        parts = name.split("/")
        if len(parts) < 3 or not parts[-1].lower().endswith(".png") or any(_is_junk(p) for p in parts):
            continue
        chars.setdefault(f"{parts[-3]}/{parts[-2]}", []).append(name)
    return {c: sorted(m) for c, m in sorted(chars.items())}


def _list_folder(folder: Path) -> dict[str, list[str]]:
    chars: dict[str, list[str]] = {}
    def subdirs(path: str) -> list[os.DirEntry]:
        return sorted((e for e in os.scandir(path) if e.is_dir() and not _is_junk(e.name)), key=lambda e: e.name)

    for alphabet in subdirs(str(folder)):
        for char in subdirs(alphabet.path):
            files = sorted(f.name for f in os.scandir(char.path)
                           if f.is_file() and f.name.lower().endswith(".png") and not _is_junk(f.name))
            if files:
                chars[f"{alphabet.name}/{char.name}"] = [f"{alphabet.name}/{char.name}/{f}" for f in files]
    return chars


@dataclass
class DecodedSet:
    """All images of one archive: rows ``offsets[i]:offsets[i+1]`` are ``characters[i]``."""

    images: Tensor
    characters: list[str]
    offsets: Tensor

    def __post_init__(self) -> None:
        self._index = {c: i for i, c in enumerate(self.characters)}

    def rows(self, i: int) -> Tensor:
        return torch.arange(int(self.offsets[i]), int(self.offsets[i + 1]))

    def span(self, character: str) -> tuple[int, int]:
        i = self._index[character]
        return int(self.offsets[i]), int(self.offsets[i + 1])


def decode_archive(archive: OmniglotArchive, prep: Preprocessing, *, cache_dir: str | Path | None = None,
                   use_cache: bool = True) -> DecodedSet:
    """Decode every image of ``archive`` under ``prep``, through the on-disk cache.

    Cached per archive rather than per split: the Vinyals splits and the rotated
    classes are all views of the same two decoded archives, so they share entries.
    """
    check_preprocessing(prep)
    cache = TensorCache(cache_dir, namespace="omniglot") if use_cache else None
    key = cache_key({"dataset": "omniglot", "version": _CACHE_VERSION, "set": archive.set_name,
                     "source": archive.fingerprint(), "size": list(prep.size), "channels": prep.channels,
                     "resize": prep.resize, "invert": prep.invert, "alpha": prep.alpha})
    if cache is not None:
        hit = cache.load(key, lambda d: _valid_cache_entry(d, prep))
        if hit is not None:
            log.debug("Omniglot %s from cache %s", archive.set_name, cache.path(key))
            return DecodedSet(hit["images"], list(hit["characters"]), hit["offsets"])
    started = time.perf_counter()
    characters = list(archive.characters)
    members = [m for c in characters for m in archive.characters[c]]
    counts = torch.tensor([len(archive.characters[c]) for c in characters], dtype=torch.long)
    offsets = torch.zeros(len(characters) + 1, dtype=torch.long)
    torch.cumsum(counts, 0, out=offsets[1:])
    blobs = archive.read_all(members)
    images = _decode_blobs(blobs, [archive.describe(m) for m in members], prep)
    log.info("decoded Omniglot %s: %d images in %.1f s", archive.set_name, len(blobs),
             time.perf_counter() - started)
    if cache is not None:
        cache.save(key, {"version": _CACHE_VERSION, "images": images, "characters": characters,
                         "offsets": offsets})
    return DecodedSet(images, characters, offsets)


def _decode_blobs(blobs: list[bytes], names: list[str], prep: Preprocessing) -> Tensor:
    h, w = prep.size
    out = torch.empty((len(blobs), prep.channels, h, w), dtype=torch.uint8)

    def work(start: int) -> None:
        for j in range(start, min(start + _CHUNK, len(blobs))):
            out[j] = load_uint8(blobs[j], prep, name=names[j])

    futures: list[Future] = [decode_pool().submit(work, s) for s in range(0, len(blobs), _CHUNK)]
    for f in futures:
        f.result()
    return out


def _valid_cache_entry(d: dict, prep: Preprocessing) -> bool:
    images, chars, offsets = d.get("images"), d.get("characters"), d.get("offsets")
    return (d.get("version") == _CACHE_VERSION and isinstance(images, Tensor) and images.dtype == torch.uint8
            and images.ndim == 4 and tuple(images.shape[1:]) == (prep.channels, *prep.size)
            and isinstance(chars, list) and all(isinstance(c, str) for c in chars)
            and isinstance(offsets, Tensor) and offsets.dtype == torch.long and offsets.shape == (len(chars) + 1,)
            and int(offsets[0]) == 0 and int(offsets[-1]) == images.shape[0]
            and bool((offsets[1:] >= offsets[:-1]).all()))


def load_omniglot(root: str | Path, split: str, image_size: int = 28, *, rotations: bool = False,
                  prep: Preprocessing | None = None, cache_dir: str | Path | None = None,
                  use_cache: bool = True) -> TensorClassDataset:
    """Omniglot ``split`` as classes of decoded images.

    Splits: ``background``, ``evaluation``, ``small1``, ``small2`` (one class per
    character) and ``vinyals-train|val|trainval|test`` (from
    ``root/splits/vinyals/*.txt``; each listed rotation is its own class).
    ``rotations`` adds the 90/180/270-degree turns of every character as classes
    (the usual augmentation when training on ``background``). ``prep`` overrides
    :func:`omniglot_preprocessing` (then ``image_size`` is ignored).
    """
    prep = prep or omniglot_preprocessing(image_size)
    if split in PLAIN_SPLITS:
        decoded = decode_archive(OmniglotArchive.open(root, PLAIN_SPLITS[split]), prep,
                                 cache_dir=cache_dir, use_cache=use_cache)
        if not rotations:
            return TensorClassDataset(decoded.images, [decoded.rows(i) for i in range(len(decoded.characters))],
                                      decoded.characters, prep)
        _check_rotatable(prep)
        n = len(decoded.characters)
        return TensorClassDataset(
            decoded.images, [decoded.rows(i) for i in range(n) for _ in range(4)],
            [f"{c}/rot{90 * k:03d}" for c in decoded.characters for k in range(4)], prep,
            rotations=[k for _ in range(n) for k in range(4)])
    if split in VINYALS_SPLITS:
        if rotations:
            log.warning("split %s already lists every rotation as a class; ignoring rotations=True", split)
        return _load_vinyals(Path(root), VINYALS_SPLITS[split], prep, cache_dir, use_cache)
    raise FewShotError(f"unknown Omniglot split '{split}'; choose one of {', '.join(SPLITS)}")


def _check_rotatable(prep: Preprocessing) -> None:
    if prep.size[0] != prep.size[1]:
        raise FewShotError(f"rotated Omniglot classes need square images, not {prep.size[0]}x{prep.size[1]}")


def read_vinyals_split(path: Path) -> list[tuple[str, int]]:
    """(``Alphabet/characterNN``, quarter turns) per line of a Vinyals split file."""
    if not path.is_file():
        raise DatasetLayoutError(f"Vinyals split file {path} is missing; copy the splits/vinyals/*.txt files "
                                 "from the Prototypical Networks code (train, val, trainval, test) there")
    entries = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        m = _VINYALS_LINE.match(line)
        if m is None or int(m["deg"]) % 90 or int(m["deg"]) >= 360:
            raise DatasetLayoutError(f"{path} line {n}: '{line}' is not Alphabet/characterNN/rotDDD with DDD "
                                     "one of 000, 090, 180, 270; fix or replace the split file")
        entries.append((m["char"], int(m["deg"]) // 90))
    if not entries:
        raise DatasetLayoutError(f"Vinyals split file {path} lists no classes")
    return entries


def _load_vinyals(root: Path, name: str, prep: Preprocessing, cache_dir: str | Path | None,
                  use_cache: bool) -> TensorClassDataset:
    _check_rotatable(prep)
    split_file = root / "splits" / "vinyals" / f"{name}.txt"
    entries = read_vinyals_split(split_file)
    archives = [OmniglotArchive.open(root, s) for s in (BACKGROUND, EVALUATION)]
    owner = {c: a for a in archives for c in a.characters}
    missing = sorted({c for c, _ in entries if c not in owner})
    if missing:
        raise DatasetLayoutError(f"{split_file} names {len(missing)} characters found in neither "
                                 f"{BACKGROUND} nor {EVALUATION} under {root} (e.g. {missing[0]}); "
                                 "the archives are incomplete or the split file is for another data set")
    needed = {id(owner[c]) for c, _ in entries}
    decoded = {id(a): decode_archive(a, prep, cache_dir=cache_dir, use_cache=use_cache)
               for a in archives if id(a) in needed}
    # Store each character's images once, however many of its rotations are classes.
    placed: dict[str, tuple[int, int]] = {}
    pieces: list[Tensor] = []
    start = 0
    for char, _ in entries:
        if char in placed:
            continue
        d = decoded[id(owner[char])]
        lo, hi = d.span(char)
        pieces.append(d.images[lo:hi])
        placed[char] = (start, hi - lo)
        start += hi - lo
    class_rows = [torch.arange(s, s + n) for s, n in (placed[c] for c, _ in entries)]
    return TensorClassDataset(torch.cat(pieces), class_rows, [f"{c}/rot{90 * k:03d}" for c, k in entries],
                              prep, rotations=[k for _, k in entries])
