"""Pixels under a :class:`Preprocessing` contract, with Pillow and NumPy only.

Decoding, channel conversion, resizing and inversion live here, free of torch,
so that ``fewshot predict`` (onnxruntime only) and the labeler's decode threads
produce exactly the pixels training saw: :mod:`engine.data.transforms` builds
its tensors from these same functions.
"""
from __future__ import annotations

import math

from pathlib import Path

import numpy as np
from PIL import Image

from engine.data.decode import DEFAULT_MAX_PIXELS, decoded, to_mode
from engine.data.preprocessing import Preprocessing
from engine.errors import FewShotError, ModelInputError

RESIZE_RULES = ("stretch", "shorter_side_center_crop")

# Bilinear in PIL widens its kernel when shrinking, i.e. it antialiases like
# torchvision's Resize(antialias=True), the convention pretrained backbones expect.
RESAMPLE = Image.Resampling.BILINEAR


#: The largest input side a model may ask for: bigger ones are no image model's, and a
#: crafted file asking for 1e9 pixels would make every batch a 140 GiB allocation.
MAX_INPUT_SIDE = 4096


def check_preprocessing(prep: Preprocessing) -> None:
    """Refuse a contract these transforms cannot honour (e.g. from a foreign model file)."""
    h, w = prep.size
    if h <= 0 or w <= 0:
        raise FewShotError(f"preprocessing size must be positive, got {prep.size}")
    if h > MAX_INPUT_SIDE or w > MAX_INPUT_SIDE:
        raise FewShotError(f"preprocessing asks for {h}x{w} pixel inputs; image models take at most "
                           f"{MAX_INPUT_SIDE} on a side: the model file is damaged or not an image model")
    if prep.channels not in (1, 3):
        raise FewShotError(f"preprocessing asks for {prep.channels} channels; only 1 (gray) or 3 (RGB) exist")
    if prep.resize not in RESIZE_RULES:
        raise FewShotError(f"unknown resize rule '{prep.resize}'; use one of {', '.join(RESIZE_RULES)}")
    if prep.alpha != "white":
        raise FewShotError(f"unknown alpha rule '{prep.alpha}'; only 'white' is supported")
    for label, values in (("mean", prep.mean), ("std", prep.std)):
        if len(values) not in (1, prep.channels):
            raise FewShotError(f"preprocessing {label} has {len(values)} values for {prep.channels} channels")
    if not all(math.isfinite(v) for v in (*prep.mean, *prep.std)):
        raise FewShotError(f"preprocessing mean and std must be finite numbers, got {prep.mean} and {prep.std}")
    if any(s <= 0 for s in prep.std):
        raise FewShotError(f"preprocessing std must be positive, got {prep.std}")


def resize_box(src_w: int, src_h: int, prep: Preprocessing) -> tuple[float, float, float, float] | None:
    """The source region ``prep.resize`` samples (left, top, right, bottom), or None for the whole image."""
    if prep.resize == "stretch":
        return None
    if prep.resize == "shorter_side_center_crop":
        h, w = prep.size
        scale = max(w / src_w, h / src_h)
        # min(): rounding can make w / scale exceed the source by a hair, and PIL refuses
        # a box outside the image.
        crop_w, crop_h = min(src_w, w / scale), min(src_h, h / scale)
        left, top = (src_w - crop_w) / 2, (src_h - crop_h) / 2
        return left, top, left + crop_w, top + crop_h
    raise FewShotError(f"unknown resize rule '{prep.resize}'; use one of {', '.join(RESIZE_RULES)}")


def resize_image(img: Image.Image, prep: Preprocessing) -> Image.Image:
    """Resize to ``prep.size`` (height, width) by ``prep.resize``."""
    h, w = prep.size
    box = resize_box(*img.size, prep)
    if box is None:
        return img if img.size == (w, h) else img.resize((w, h), RESAMPLE)
    # Cropping inside resize (box=) samples the source once, with the right filter width.
    return img.resize((w, h), RESAMPLE, box=box)


def write_pixels(img: Image.Image, prep: Preprocessing, out: np.ndarray) -> None:
    """A decoded image (any mode :func:`decode_image` returns) into ``out``, uint8 (C, H, W)."""
    img = resize_image(to_mode(img, prep.channels), prep)
    h, w = prep.size
    # tobytes + frombuffer is a third of the cost of np.asarray's array-interface path.
    arr = np.frombuffer(img.tobytes(), dtype=np.uint8).reshape(h, w, prep.channels)
    out[...] = arr.transpose(2, 0, 1)
    if prep.invert:
        np.subtract(255, out, out=out)


def decode_into(source: str | Path | bytes, prep: Preprocessing, out: np.ndarray, *,
                name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Decode ``source`` under ``prep`` into ``out`` in place (no per-image array:
    a batch is assembled row by row). Raises ImageDecodeError for bad files."""
    side = max(prep.size)
    with decoded(source, max_pixels=max_pixels, draft_size=(side, side), name=name) as img:
        write_pixels(img, prep, out)


def load_array(source: str | Path | bytes, prep: Preprocessing, *, name: str | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``source`` and apply ``prep`` up to (not including) normalisation: uint8 (C, H, W)."""
    out = np.empty((prep.channels, *prep.size), dtype=np.uint8)
    decode_into(source, prep, out, name=name, max_pixels=max_pixels)
    return out


def check_batch_shape(shape: tuple[int, ...], prep: Preprocessing) -> None:
    """Images must be (C, H, W) or (N, C, H, W) with the model's channel count."""
    if len(shape) not in (3, 4):
        raise ModelInputError(f"expected images shaped (C, H, W) or (N, C, H, W), got {shape}")
    if shape[-3] != prep.channels:
        raise ModelInputError(f"images have {shape[-3]} channels but the model expects {prep.channels}; "
                              "convert them (gray/RGB) with the model's preprocessing")


def normalize_array(batch_uint8: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8 (N, C, H, W) or (C, H, W) to float32 ``(x / 255 - mean) / std``, the same
    arithmetic as :func:`engine.data.transforms.normalize`."""
    check_batch_shape(tuple(batch_uint8.shape), prep)
    mean = np.asarray(prep.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(prep.std, dtype=np.float32).reshape(-1, 1, 1)
    scale = np.float32(1.0) / (np.float32(255.0) * std)
    out = batch_uint8.astype(np.float32)
    out *= scale
    out -= mean / std
    return out
