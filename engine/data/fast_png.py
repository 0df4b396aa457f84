"""Labeling's decode loop for folders of small PNGs: Pillow's own PNG decoder without the
Python around it, and one Pillow resize pass for a whole slice of images.

Where the time went (benchmarks/bench_cost_floor.py): an Omniglot character (105x105,
1 bit) cost 141-187 us through ``Image.open``, whose PNG reader is half Python (chunk
parsing, plugin dispatch, the EXIF lookup, per-chunk reads). Here the chunks are walked
once over the file's bytes and the image data handed straight to the C decoder Pillow
would use (``Image.frombytes(..., "zip", rawmode)``, with the modes of
``PngImagePlugin``): about 22 us. Images of one size are then resized together: Pillow
resizes in two separable passes (rows, then columns, or the other way), so stacking the
images one under the other for the row pass and side by side (transposed) for the column
pass computes every output pixel from the same source pixels with the same weights as
resizing each image alone, in the order Pillow's own call takes (measured per size, see
:func:`_pass_order`). The results are the very pixels of :func:`engine.data.pixels.decode_into`
(tests compare both, file by file).

Only files whose pixels this gives exactly come this way: grey PNGs of 1 to 8 bits and
8-bit RGB, with no transparency (tRNS), no EXIF block (eXIf: an orientation), no animation
(acTL), no palette, within a size limit, and whose header chunks pass their checksums as
Pillow requires. Every other file, and every file the decoder refuses, goes through
:mod:`engine.data.decode`, which also says what is wrong with a bad one. A resize that
crops (``shorter_side_center_crop``) runs per image: Pillow shifts a crop box by whole
rows inside one call, which a stacked call would not.
"""
from __future__ import annotations

import functools
import logging
import struct
import time
import zlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image, PngImagePlugin

from engine.data.decode import open_checked, to_8bit
from engine.data.pixels import RESAMPLE, decode_into, resize_box, resize_image
from engine.data.preprocessing import Preprocessing
from engine.errors import ImageDecodeError

log = logging.getLogger(__name__)

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# (bit depth, colour type) -> (mode, rawmode), as Pillow's PNG plugin reads them: grey and RGB.
# A Pillow without this table (it is the plugin's own) leaves every PNG to the full decoder.
MODES = {key: value for key, value in getattr(PngImagePlugin, "_MODES", {}).items()
         if key[1] in (0, 2) and key[0] <= 8}
# Chunks after which Pillow's pixels differ from the image data alone: transparency
# (composited on white by engine.data.decode), EXIF (its orientation is applied), APNG.
DECLINED_CHUNKS = frozenset({b"tRNS", b"eXIf", b"acTL"})
# Larger images gain nothing here (decoding dwarfs Python's share) and are left to the
# decoder that checks for decompression bombs.
MAX_PIXELS = 4_000_000
# Resizing together pays for images of one small size (a folder of scans or characters);
# each new size costs a measurement of Pillow's pass order (_pass_order) that large images
# would make slow, and a pass over one large image has no set-up worth sharing.
STACK_MIN = 4
STACK_MAX_PIXELS = 256 * 256
_CHUNK = struct.Struct(">I4s")
_IHDR = struct.Struct(">IIBBBBB")


class SimplePng(NamedTuple):
    width: int
    height: int
    mode: str
    rawmode: str
    interlace: int
    data: bytes  # the IDAT chunks' contents, joined


def simple_png(data: bytes) -> SimplePng | None:
    """What Pillow's decoder needs for a PNG this module decodes exactly, else None. Walks the
    chunk headers once (a few for a small file); header chunks must pass their CRC, as Pillow
    checks them (it does not check the image data's)."""
    if not data.startswith(SIGNATURE) or len(data) < 33:
        return None
    pos, header, parts = 8, None, []
    while pos + 12 <= len(data):
        length, kind = _CHUNK.unpack_from(data, pos)
        end = pos + 8 + length
        if end + 4 > len(data):
            return None  # truncated: the full decoder says so
        if kind == b"IDAT":
            parts.append(data[pos + 8:end])
        elif kind in DECLINED_CHUNKS or kind == b"PLTE":
            return None
        elif kind == b"IEND":
            break
        elif not parts and zlib.crc32(data[pos + 4:end]) != struct.unpack_from(">I", data, end)[0]:
            return None
        elif kind == b"IHDR" and length == 13:
            header = _IHDR.unpack_from(data, pos + 8)
        pos = end + 4
    if header is None or not parts:
        return None
    width, height, depth, color, _, _, interlace = header
    mode = MODES.get((depth, color))
    if mode is None or not 0 < width * height <= MAX_PIXELS:
        return None
    return SimplePng(width, height, mode[0], mode[1], interlace, b"".join(parts))


def _decoded(png: SimplePng, label: str) -> np.ndarray | None:
    """HxWxC uint8 pixels, as engine.data.decode gives them (1-bit grey as 0/255), or None
    where the decoder refuses the data (the full decoder then says why)."""
    try:
        img = Image.frombytes(png.mode, (png.width, png.height), png.data, "zip", png.rawmode, png.interlace)
    except (ValueError, OSError, zlib.error):
        return None
    img = to_8bit(img, label)
    channels = 1 if img.mode == "L" else 3
    return np.frombuffer(img.tobytes(), dtype=np.uint8).reshape(png.height, png.width, channels)


def _mode(channels: int) -> str:
    return "L" if channels == 1 else "RGB"


def _converted(stack: np.ndarray, channels: int) -> np.ndarray:
    """(N, H, W, C) in ``channels``: Pillow's own conversion, on all N images as one tall image
    (a conversion is per pixel)."""
    n, h, w, c = stack.shape
    if c == channels:
        return stack
    tall = Image.frombuffer(_mode(c), (w, n * h), stack.tobytes(), "raw", _mode(c), 0, 1).convert(_mode(channels))
    return np.frombuffer(tall.tobytes(), dtype=np.uint8).reshape(n, h, w, channels)


def _resized(stack: np.ndarray, prep: Preprocessing) -> np.ndarray | None:
    """(N, H, W, C) stretched to ``prep.size`` by two Pillow calls, one per pass: the row
    pass with the images stacked one under the other, the column pass with them side by
    side, in the order Pillow's own call takes (see :func:`_pass_order`). None when that
    order is not known for these sizes."""
    n, h, w, c = stack.shape
    th, tw = prep.size
    order = _pass_order(h, w, c, th, tw)
    if order is None:
        return None
    for step in order:
        h, w = stack.shape[1:3]
        if step == "rows" and w != tw:
            stack = _row_pass(stack, tw)
        elif step == "columns" and h != th:
            wide = np.ascontiguousarray(stack.transpose(0, 2, 1, 3))  # each image transposed: columns become rows
            stack = _row_pass(wide, th).transpose(0, 2, 1, 3)
    return stack


def _row_pass(stack: np.ndarray, width: int) -> np.ndarray:
    """Every row of every image resampled to ``width``: one Pillow call on the images stacked
    one under the other, which changes only the width and so runs only its row pass."""
    n, h, w, c = stack.shape
    mode = _mode(c)
    tall = Image.frombuffer(mode, (w, n * h), np.ascontiguousarray(stack).tobytes(), "raw", mode, 0, 1)
    return np.frombuffer(tall.resize((width, n * h), RESAMPLE).tobytes(), dtype=np.uint8).reshape(n, h, width, c)


@functools.cache
def _pass_order(h: int, w: int, c: int, th: int, tw: int) -> tuple[str, str] | None:
    """Which pass Pillow runs first when it resizes h x w to th x tw. Pillow rounds to 8 bits
    between its two passes, so the order shows in the pixels; newer Pillows choose it by a
    cost estimate that is theirs to change. Measured on random images, once per size; None
    when neither order reproduces Pillow's call."""
    rng = np.random.default_rng(h * 7919 + w)
    found = {("rows", "columns"), ("columns", "rows")}
    mode = _mode(c)
    for _ in range(8):
        probe = rng.integers(0, 256, (1, h, w, c), dtype=np.uint8)
        whole = Image.frombuffer(mode, (w, h), probe.tobytes(), "raw", mode, 0, 1).resize((tw, th), RESAMPLE)
        expected = np.frombuffer(whole.tobytes(), dtype=np.uint8).reshape(1, th, tw, c)
        for order in list(found):
            out = probe
            for step in order:
                out = _row_pass(out, tw) if step == "rows" else _row_pass(
                    np.ascontiguousarray(out.transpose(0, 2, 1, 3)), th).transpose(0, 2, 1, 3)
            if not np.array_equal(out, expected):
                found.discard(order)
        if len(found) <= 1:
            break
    return ("rows", "columns") if ("rows", "columns") in found else next(iter(found), None)


def _write_group(rows: list[int], images: list[np.ndarray], prep: Preprocessing, buf: np.ndarray) -> None:
    """Images of one size into their rows of ``buf`` (C, H, W each), converted, resized, inverted."""
    out = None
    h, w = images[0].shape[:2]
    if len(images) >= STACK_MIN and h * w <= STACK_MAX_PIXELS and resize_box(w, h, prep) is None:
        out = _resized(_converted(np.stack(images), prep.channels), prep)
    if out is None:
        out = np.stack([_crop_resized(img, prep) for img in images])
    block = out.transpose(0, 3, 1, 2)
    if prep.invert:
        block = 255 - block
    buf[rows] = block


def _crop_resized(img: np.ndarray, prep: Preprocessing) -> np.ndarray:
    h, w, c = img.shape
    pil = Image.frombuffer(_mode(c), (w, h), img.tobytes(), "raw", _mode(c), 0, 1)
    if c != prep.channels:
        pil = pil.convert(_mode(prep.channels))
    th, tw = prep.size
    return np.frombuffer(resize_image(pil, prep).tobytes(), dtype=np.uint8).reshape(th, tw, prep.channels)


def decode_rows_fast(paths: Sequence[str], prep: Preprocessing, buf: np.ndarray) -> tuple[list[str | None], float]:
    """:func:`engine.data.decode_worker.decode_rows` with simple PNGs decoded without Pillow's
    Python and resized a group at a time: per path None or the reason it failed, and this
    thread's CPU time."""
    cpu0 = time.thread_time()
    reasons: list[str | None] = [None] * len(paths)
    groups: dict[tuple[int, int, int], tuple[list[int], list[np.ndarray]]] = {}
    for k, path in enumerate(paths):
        try:
            with open_checked(path) as fh:
                data = fh.read()
            png = simple_png(data)
            pixels = _decoded(png, str(path)) if png is not None else None
            if pixels is None:
                decode_into(data, prep, buf[k], name=str(path))
                continue
            rows, images = groups.setdefault(pixels.shape, ([], []))
            rows.append(k)
            images.append(pixels)
        except ImageDecodeError as e:
            reasons[k] = e.reason
        except Exception as e:  # noqa: BLE001 - one odd file must never end a run of thousands
            log.exception("unexpected failure decoding %s", path)
            reasons[k] = f"could not be decoded ({type(e).__name__}: {e}); re-save it as PNG or JPEG"
    for rows, images in groups.values():
        _write_group(rows, images, prep, buf)
    return reasons, time.thread_time() - cpu0
