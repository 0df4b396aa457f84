"""Safe image decoding: any file a user drops becomes an 8-bit ``L`` or ``RGB`` image,
or an :class:`ImageDecodeError` that names the file and says what to do.

Safety rules: the pixel count is checked from the header before any pixel is
decoded (decompression bombs), the whole image is decoded at once so truncation
shows up here and not later inside a model, and PIL's global
``LOAD_TRUNCATED_IMAGES`` is never touched (it would hide truncated files from
every other caller in the process).
"""
from __future__ import annotations

import io
import logging
import os
import re
import stat
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.errors import ImageDecodeError

log = logging.getLogger(__name__)

# Files taken for images when scanning folders (by name; content decides in the end).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp",
                              ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm"})

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default bomb limit (about 0.25 GB of RGBA)

_EXIF_ORIENTATION = 0x0112

GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})

# Errors PIL raises from inside plugins for damaged data; all mean "corrupt file".
_CORRUPT_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


def decode_image(
    source: str | Path | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
    name: str | None = None,
) -> Image.Image:
    """Decode ``source`` (a path or the file's bytes) to an ``L`` or ``RGB`` image.

    EXIF orientation is applied, transparency is composited on white, animated
    images give their first frame, and high-bit-depth images are scaled to 8 bits.
    ``draft_size`` (w, h) lets JPEG decode at a reduced scale that still covers that
    size (much faster for big photos that get shrunk anyway). ``name`` is what error
    messages call the source (useful for bytes read from an archive).

    ``max_pixels`` above twice ``PIL.Image.MAX_IMAGE_PIXELS`` is capped by PIL itself.
    """
    with _decoded(source, max_pixels, draft_size, name) as (img, owned):
        return img if owned else img.copy()


@contextmanager
def decoded(
    source: str | Path | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
    name: str | None = None,
) -> Iterator[Image.Image]:
    """:func:`decode_image` for callers that only read the pixels at once: the image
    may be the open file's own and is valid only inside the ``with`` block. Saves
    the copy ``decode_image`` must make, which for a small PNG costs as much as a
    tenth of decoding it (labeling reads pixels straight into a batch)."""
    with _decoded(source, max_pixels, draft_size, name) as (img, _owned):
        yield img


@contextmanager
def _decoded(source: str | Path | bytes, max_pixels: int, draft_size: tuple[int, int] | None,
             name: str | None) -> Iterator[tuple[Image.Image, bool]]:
    in_memory = isinstance(source, (bytes, bytearray, memoryview))
    label = name if name is not None else ("<bytes>" if in_memory else str(source))
    if in_memory:
        data = bytes(source)
        if not data:
            raise ImageDecodeError(label, "the data is empty (0 bytes); re-copy or re-download the image")
        fh: BinaryIO = io.BytesIO(data)
    else:
        fh = open_checked(source, label)
    with fh, _decoded_stream(fh, label, max_pixels, draft_size) as pair:
        yield pair


def open_no_wait(path: str | Path) -> BinaryIO:
    """Open for reading without blocking: opening a FIFO (named like an image) the
    ordinary way waits forever for a writer; this returns at once, and the caller's
    fstat then tells a regular file from the rest."""
    return open(path, "rb", opener=nonblocking_opener)  # noqa: SIM115 - the caller closes it


def nonblocking_opener(path: str, flags: int) -> int:
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


def open_checked(source: str | Path, label: str | None = None) -> BinaryIO:
    """The file opened for reading, or the ImageDecodeError that says why it cannot be
    (missing, a folder, a FIFO or device, empty, unreadable)."""
    label = str(source) if label is None else label
    # The common case costs one open and one fstat; only a failure pays for the
    # checks that tell the user which of the reasons it was.
    try:
        fh = open_no_wait(source)
    except OSError:
        _explain_unreadable(Path(source), label)
        raise  # _explain_unreadable always raises; this keeps type checkers calm
    try:
        st = os.fstat(fh.fileno())
    except OSError:
        fh.close()
        raise
    if not stat.S_ISREG(st.st_mode):
        fh.close()
        raise ImageDecodeError(label, "not a regular file (a pipe, device or socket); remove it from the folder")
    if st.st_size == 0:
        fh.close()
        raise ImageDecodeError(label, "the file is empty (0 bytes); re-copy or re-download it")
    return fh


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert a decoded ``L``/``RGB`` image to 1 (luma, ITU-R 601) or 3 channels."""
    if channels == 1:
        return img if img.mode == "L" else img.convert("L")
    if channels == 3:
        return img if img.mode == "RGB" else img.convert("RGB")
    raise ValueError(f"images have 1 or 3 channels, not {channels}")


def _explain_unreadable(path: Path, label: str) -> None:
    """Raise the ImageDecodeError that says why ``path`` could not be opened."""
    if path.is_symlink() and not path.exists():
        target = os.readlink(path)
        raise ImageDecodeError(label, f"broken symbolic link (points to {target}, which does not exist); "
                                      "fix or remove the link")
    if path.is_dir():
        raise ImageDecodeError(label, "this is a folder, not an image file")
    try:
        path.stat()
        open(path, "rb").close()
    except FileNotFoundError:
        raise ImageDecodeError(label, "file not found; check the path, or rescan the folder if it was moved") from None
    except PermissionError:
        raise ImageDecodeError(label, "permission denied; make the file readable by this user") from None
    except OSError as e:
        raise ImageDecodeError(label, f"cannot open the file ({e.strerror or e}); check the disk or network share") from None
    raise ImageDecodeError(label, "the file could not be opened; check the disk or network share")


def too_large_reason(error: Exception | None, width: int = 0, height: int = 0, limit: int = 0) -> str:
    """Why an image is refused for its size, in megapixels, from its size or from
    Pillow's DecompressionBombError ("Image size (N pixels) exceeds limit of M pixels ...")."""
    if error is not None:
        numbers = [int(n) for n in re.findall(r"\d+", str(error))]
        pixels, limit = (numbers[0], numbers[1]) if len(numbers) >= 2 else (0, Image.MAX_IMAGE_PIXELS or 0)
    else:
        pixels = width * height
    size = f"{width}x{height} = " if width and height else ""
    if limit >= 1_000_000:
        amount = f"{size}{pixels / 1e6:,.0f} megapixels, over the {int(limit / 1e6):,} megapixel limit"
    else:
        amount = f"{size}{pixels:,} pixels, over the limit of {limit:,}"
    return f"the image is too large: {amount} (a guard against images made to exhaust memory); downscale it"


@contextmanager
def _decoded_stream(fh: BinaryIO, label: str, max_pixels: int,
                    draft_size: tuple[int, int] | None) -> Iterator[tuple[Image.Image, bool]]:
    """Yields (8-bit image, owned): ``owned`` is False when the image is the open
    file's own, which is closed when the block ends."""
    try:
        img = Image.open(fh)
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(label, too_large_reason(e)) from None
    except UnidentifiedImageError:
        fh.seek(0)
        raise ImageDecodeError(label, _not_an_image_reason(fh.read(512))) from None
    except _CORRUPT_ERRORS as e:
        raise ImageDecodeError(label, f"the file is truncated or corrupt ({e}); re-copy or re-download it") from None

    with img:
        width, height = img.size
        if width <= 0 or height <= 0:
            raise ImageDecodeError(label, f"the header claims an empty image ({width}x{height}); the file is damaged")
        if width * height > max_pixels:
            raise ImageDecodeError(label, too_large_reason(None, width, height, max_pixels))
        if draft_size is not None and img.format == "JPEG":
            img.draft(None, draft_size)
        try:
            img.load()  # full decode of frame 0, so truncated data fails here
        except Image.DecompressionBombError as e:
            raise ImageDecodeError(label, too_large_reason(e)) from None
        except MemoryError:
            raise ImageDecodeError(label, "not enough memory to decode this image; downscale it") from None
        except _CORRUPT_ERRORS as e:
            raise ImageDecodeError(label, f"the file is truncated or corrupt ({e}); re-copy or re-download it") from None
        oriented = _oriented(img, label)
        converted = to_8bit(oriented, label)
        yield converted, converted is not img


def _oriented(img: Image.Image, label: str) -> Image.Image:
    """Apply the EXIF orientation; the image itself when there is none (most files),
    which spares the copy ``ImageOps.exif_transpose`` would make."""
    try:
        if img.getexif().get(_EXIF_ORIENTATION, 1) in (1, None):
            return img
        return ImageOps.exif_transpose(img)
    except Exception as e:  # noqa: BLE001 - a broken EXIF block must not cost the pixels
        log.warning("ignoring unreadable EXIF orientation in %s: %s", label, e)
        return img


def _not_an_image_reason(head: bytes) -> str:
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")):
        kind = "an HTML/XML page"
        if b"<svg" in text:
            kind = "an SVG drawing (vector images are not supported; export it as PNG)"
    else:
        try:
            head.decode("utf-8")
            kind = "a text file"
        except UnicodeDecodeError:
            kind = "not in an image format this app can read"
    return (f"not an image: the content is {kind}; often a failed download saved with an image name. "
            "Remove it or replace it with the real image")


def to_8bit(img: Image.Image, label: str) -> Image.Image:
    """A decoded image as 8-bit ``L`` or ``RGB``: transparency on white, high bit depths scaled."""
    mode = img.mode
    try:
        if mode in ("I", "F") or mode.startswith("I;16"):
            return _scale_high_bit_depth(img)
        gray = mode in GRAY_MODES
        if img.has_transparency_data or mode in ("PA", "RGBa", "La"):
            return _composite_on_white(img, gray)
        if mode == "L":
            return img
        if mode == "1":
            return img.convert("L")
        if mode == "RGB":
            return img
        return img.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV, RGBX ...
    except _CORRUPT_ERRORS as e:
        raise ImageDecodeError(label, f"cannot convert pixels of mode {mode} ({e})") from None


def _composite_on_white(img: Image.Image, gray: bool) -> Image.Image:
    with_alpha = img.convert("LA" if gray else "RGBA")
    base_mode = "L" if gray else "RGB"
    base = Image.new(base_mode, img.size, 255 if gray else (255, 255, 255))
    base.paste(with_alpha.convert(base_mode), mask=with_alpha.getchannel("A"))
    return base


def _scale_high_bit_depth(img: Image.Image) -> Image.Image:
    """16/32-bit integer and float images carry no reliable white point, so guess the
    usual conventions: I;16 is 0..65535, float is 0..1, else the value range decides."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        scaled = arr.astype(np.float32) / 257.0
    else:
        arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if img.mode == "F" and lo >= 0.0 and hi <= 1.0:
            scaled = arr * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            scaled = arr
        elif lo >= 0.0 and hi <= 65535.0:
            scaled = arr / 257.0
        else:
            scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(out)
