"""Finding image files under folders and fingerprinting them cheaply.

Scanning must be fast for 20,000 files and never stop on a bad one, so each file
gets only a content hash and a header read (PIL ``Image.open`` + ``size``, no pixel
decode). Files that fail that far are recorded with a reason; files that pass the
header but fail the full decode are marked later by the labeler.

Folders are walked with symbolic links followed, but every folder is entered once
(keyed by device and inode), so a link back to a parent cannot loop. Files reached
twice (two links, or hard links) are hashed once.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

from PIL import Image, UnidentifiedImageError

# The decoder's own error classes and wording, so one problem reads the same at scan and at decode time.
from engine.data.decode import _CORRUPT_ERRORS, DEFAULT_MAX_PIXELS, _not_an_image_reason, nonblocking_opener, too_large_reason
from engine.data.decode import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

HASH_DIGEST_BYTES = 16  # blake2b-128: collision-free for any photo library, fast in hashlib

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class ScannedFile:
    """One file found by a scan. ``path`` is absolute but not resolved, so a file reached
    through a link keeps the name the user sees. ``error`` is set for unusable files
    (then ``hash`` may be None: the bytes could not be read)."""

    path: str
    hash: str | None = None
    size: int | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    error: str | None = None


@dataclass
class Candidates:
    """Files to probe, in scan order, and what was passed over with the reason."""

    paths: list[str]
    skipped: list[tuple[str, str]]


def has_image_extension(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def collect(paths: Iterable[str | os.PathLike], recursive: bool = True) -> Candidates:
    """Expand files and folders into candidate image files.

    A file named explicitly is a candidate whatever its extension (the user chose it;
    its content decides). Inside folders, only names with an image extension are
    (a folder of 10,000 text files is not 10,000 errors); other names are skipped with
    the reason. Hidden entries (``.DS_Store``, ``._photo.jpg``, ``.git``) are ignored.
    """
    found = Candidates([], [])
    seen_dirs: set[tuple[int, int]] = set()
    for given in paths:
        path = os.path.abspath(os.fspath(given))
        if not _utf8_ok(path, found.skipped):
            continue
        if os.path.isdir(path):
            key = _dir_key(path)
            if key is None or key in seen_dirs:
                found.skipped.append((path, "folder already scanned; skipped"))
                continue
            seen_dirs.add(key)
            _walk(path, recursive, seen_dirs, found)
        elif os.path.lexists(path):
            found.paths.append(path)  # a file, a broken link or an unreadable entry: probe says which
        else:
            found.skipped.append((path, "does not exist; check the path (was it moved or renamed?)"))
    return found


def _utf8_ok(path: str, skipped: list[tuple[str, str]]) -> bool:
    # Names that are not valid UTF-8 (possible on Linux) cannot be stored or shown.
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        skipped.append((path.encode("utf-8", "replace").decode("utf-8"),
                        "the file name is not valid UTF-8 text; rename the file"))
        return False
    return True


def _dir_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _walk(root: str, recursive: bool, seen_dirs: set[tuple[int, int]], found: Candidates) -> None:
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            found.skipped.append((folder, f"cannot list this folder ({e.strerror or e}); check its permissions"))
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if not _utf8_ok(entry.path, found.skipped):
                continue
            try:
                is_dir = entry.is_dir()  # follows links
            except OSError:
                is_dir = False  # a link loop: probing the entry reports it
            if is_dir:
                if not recursive:
                    found.skipped.append((entry.path, "sub-folder not scanned (recursive scan is off)"))
                    continue
                key = _dir_key(entry.path)
                if key is None or key in seen_dirs:
                    found.skipped.append((entry.path, "folder already scanned (a symbolic link leads back to it); "
                                                      "skipped to avoid scanning it twice"))
                    continue
                seen_dirs.add(key)
                subfolders.append(entry.path)
            elif has_image_extension(entry.name):
                found.paths.append(entry.path)
            else:
                ext = os.path.splitext(entry.name)[1] or "none"
                found.skipped.append((entry.path, f"not an image file (extension {ext})"))
        stack.extend(reversed(subfolders))  # depth-first, in name order


def probe(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> ScannedFile:
    """Hash ``path`` and read its image header. Never raises for a bad file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return ScannedFile(path, error=f"broken symbolic link (points to {os.readlink(path)}, which does not "
                                           "exist); fix or remove the link")
        return ScannedFile(path, error="file not found (moved or deleted during the scan); rescan the folder")
    except OSError as e:
        if e.errno == errno.ELOOP:
            return ScannedFile(path, error="symbolic link loop (the link points back to itself); remove the link")
        return ScannedFile(path, error=f"cannot access the file ({e.strerror or e}); check the disk or share")
    if not stat.S_ISREG(st.st_mode):
        # Opening a pipe or a device could block forever.
        return ScannedFile(path, error="not a regular file (a device, pipe or socket); remove it from the folder")
    if st.st_size == 0:
        return ScannedFile(path, size=0, error="the file is empty (0 bytes); re-copy or re-download it")
    try:
        fh = open(path, "rb", opener=nonblocking_opener)  # a pipe swapped in since the stat must not block
    except PermissionError:
        return ScannedFile(path, size=st.st_size, error="permission denied; make the file readable by this user")
    except OSError as e:
        return ScannedFile(path, size=st.st_size, error=f"cannot open the file ({e.strerror or e})")
    with fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return ScannedFile(path, error="not a regular file (a device, pipe or socket); remove it from the folder")
        try:
            digest = hashlib.file_digest(fh, lambda: hashlib.blake2b(digest_size=HASH_DIGEST_BYTES)).hexdigest()
            fh.seek(0)
        except OSError as e:
            return ScannedFile(path, size=st.st_size, error=f"cannot read the file ({e.strerror or e}); "
                                                            "check the disk or share")
        found = ScannedFile(path, hash=digest, size=st.st_size)
        return replace(found, **_read_header(fh, max_pixels))


def _read_header(fh, max_pixels: int) -> dict:
    try:
        with Image.open(fh) as img:
            width, height = img.size
            fmt = img.format
    except Image.DecompressionBombError as e:
        return {"error": too_large_reason(e)}
    except UnidentifiedImageError:
        fh.seek(0)
        return {"error": _not_an_image_reason(fh.read(512))}
    except _CORRUPT_ERRORS as e:
        return {"error": f"the file is truncated or corrupt ({e}); re-copy or re-download it"}
    if width <= 0 or height <= 0:
        return {"error": f"the header claims an empty image ({width}x{height}); the file is damaged"}
    if width * height > max_pixels:
        return {"width": width, "height": height, "format": fmt,
                "error": too_large_reason(None, width, height, max_pixels)}
    return {"width": width, "height": height, "format": fmt}


def probe_all(paths: list[str], progress: ProgressFn | None = None, workers: int | None = None,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[ScannedFile]:
    """Probe ``paths`` in a thread pool (hashing and file reads release the GIL, and on a
    network share the latency overlaps), yielding results in input order. A file reached
    again under another name (link or hard link: same device and inode) is not read
    again: it gets the first one's result under its own path."""
    total = len(paths)
    # One thread per core, not two: reading a small image's header is mostly Python (PIL),
    # so threads beyond the cores only queue for the GIL, and the app's window queues
    # behind them (on 2 cores, 4 threads made its longest pause ~100 ms, 2 made it ~50 ms,
    # for a scan ~20% longer).
    workers = workers or min(8, os.cpu_count() or 1)
    first_index_of: dict[tuple[int, int], int] = {}
    original: list[int | None] = []  # per path: index of the earlier path naming the same file
    for i, p in enumerate(paths):
        try:
            st = os.stat(p)
            key: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            key = None
        if key is not None and key in first_index_of:
            original.append(first_index_of[key])
        else:
            if key is not None:
                first_index_of[key] = i
            original.append(None)
    results: list[ScannedFile] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scan") as pool:
        probed = pool.map(lambda p: probe(p, max_pixels), [p for p, o in zip(paths, original) if o is None])
        for i, (p, o) in enumerate(zip(paths, original)):
            result = next(probed) if o is None else replace(results[o], path=p)
            results.append(result)
            if progress is not None and ((i + 1) % 256 == 0 or i + 1 == total):
                progress(i + 1, total)
            yield result


def scan(paths: Iterable[str | Path], recursive: bool = True, progress: ProgressFn | None = None,
         max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[list[ScannedFile], list[tuple[str, str]]]:
    """Collect and probe in one call: (files in scan order, skipped with reasons)."""
    found = collect(paths, recursive)
    return list(probe_all(found.paths, progress, max_pixels=max_pixels)), found.skipped
