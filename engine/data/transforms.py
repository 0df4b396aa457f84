"""Pixels to model input under a :class:`Preprocessing` contract.

Images are stored as uint8 (C, H, W) after decode, channel conversion, resize and
inversion; normalisation to floats happens per batch with :func:`normalize`, so
datasets keep a quarter of the memory and the same uint8 tensors serve any
mean/std. Training, labeling and export all go through these two functions, which
is what keeps a model's inputs identical in all three.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from engine.data.decode import DEFAULT_MAX_PIXELS, decode_image, to_mode
from engine.data.preprocessing import Preprocessing
from engine.errors import FewShotError, ModelInputError

RESIZE_RULES = ("stretch", "shorter_side_center_crop")

# Bilinear in PIL widens its kernel when shrinking, i.e. it antialiases like
# torchvision's Resize(antialias=True), the convention pretrained backbones expect.
_RESAMPLE = Image.Resampling.BILINEAR


def check_preprocessing(prep: Preprocessing) -> None:
    """Refuse a contract these transforms cannot honour (e.g. from a foreign model file)."""
    h, w = prep.size
    if h <= 0 or w <= 0:
        raise FewShotError(f"preprocessing size must be positive, got {prep.size}")
    if prep.channels not in (1, 3):
        raise FewShotError(f"preprocessing asks for {prep.channels} channels; only 1 (gray) or 3 (RGB) exist")
    if prep.resize not in RESIZE_RULES:
        raise FewShotError(f"unknown resize rule '{prep.resize}'; use one of {', '.join(RESIZE_RULES)}")
    if prep.alpha != "white":
        raise FewShotError(f"unknown alpha rule '{prep.alpha}'; only 'white' is supported")
    for label, values in (("mean", prep.mean), ("std", prep.std)):
        if len(values) not in (1, prep.channels):
            raise FewShotError(f"preprocessing {label} has {len(values)} values for {prep.channels} channels")
    if any(s <= 0 for s in prep.std):
        raise FewShotError(f"preprocessing std must be positive, got {prep.std}")


def resize_image(img: Image.Image, prep: Preprocessing) -> Image.Image:
    """Resize to ``prep.size`` (height, width) by ``prep.resize``."""
    h, w = prep.size
    if prep.resize == "stretch":
        return img if img.size == (w, h) else img.resize((w, h), _RESAMPLE)
    if prep.resize == "shorter_side_center_crop":
        src_w, src_h = img.size
        scale = max(w / src_w, h / src_h)
        crop_w, crop_h = w / scale, h / scale
        left, top = (src_w - crop_w) / 2, (src_h - crop_h) / 2
        # Cropping inside resize (box=) samples the source once, with the right filter width.
        return img.resize((w, h), _RESAMPLE, box=(left, top, left + crop_w, top + crop_h))
    raise FewShotError(f"unknown resize rule '{prep.resize}'; use one of {', '.join(RESIZE_RULES)}")


def image_to_uint8(img: Image.Image, prep: Preprocessing) -> Tensor:
    """A decoded image (any mode :func:`decode_image` returns) to uint8 (C, H, W)."""
    img = resize_image(to_mode(img, prep.channels), prep)
    arr = np.array(img, dtype=np.uint8)  # a copy: torch wants writable memory
    t = torch.from_numpy(arr)
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()
    if prep.invert:
        t = 255 - t
    return t


def load_uint8(source: str | Path | bytes, prep: Preprocessing, *, name: str | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor:
    """Decode ``source`` and apply ``prep`` up to (not including) normalisation."""
    side = max(prep.size)
    img = decode_image(source, max_pixels=max_pixels, draft_size=(side, side), name=name)
    return image_to_uint8(img, prep)


def normalize(batch_uint8: Tensor, prep: Preprocessing) -> Tensor:
    """uint8 (N, C, H, W) or (C, H, W) to float32 ``(x / 255 - mean) / std``."""
    if batch_uint8.ndim not in (3, 4):
        raise ModelInputError(f"expected images shaped (C, H, W) or (N, C, H, W), got {tuple(batch_uint8.shape)}")
    channels = batch_uint8.shape[-3]
    if channels != prep.channels:
        raise ModelInputError(f"images have {channels} channels but the model expects {prep.channels}; "
                              "convert them (gray/RGB) with the model's preprocessing")
    mean = torch.tensor(prep.mean, dtype=torch.float32, device=batch_uint8.device).view(-1, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32, device=batch_uint8.device).view(-1, 1, 1)
    # Folding 1/255 into the affine map costs one multiply-add per pixel instead of three ops.
    scale = 1.0 / (255.0 * std)
    return batch_uint8.to(torch.float32).mul_(scale).sub_(mean / std)


def resize_uint8(images: Tensor, prep: Preprocessing, chunk: int = 1024) -> Tensor:
    """Bring already-decoded uint8 (N, C, H, W) tensors (e.g. from a pickle cache) to
    ``prep``: channels, size by the resize rule (antialiased bilinear), inversion."""
    h, w = prep.size
    out = torch.empty((images.shape[0], prep.channels, h, w), dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):
        x = images[start:start + chunk]
        if x.shape[1] == 3 and prep.channels == 1:
            x = TF.rgb_to_grayscale(x, num_output_channels=1)
        elif x.shape[1] == 1 and prep.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        src_h, src_w = x.shape[-2:]
        if (src_h, src_w) != (h, w):
            if prep.resize == "shorter_side_center_crop":
                scale = max(h / src_h, w / src_w)
                x = TF.resize(x, [max(h, round(src_h * scale)), max(w, round(src_w * scale))], antialias=True)
                x = TF.center_crop(x, [h, w])
            else:
                x = TF.resize(x, [h, w], antialias=True)
        # Filling a preallocated tensor keeps the peak at source + result, not three copies.
        out[start:start + x.shape[0]] = 255 - x if prep.invert else x
    return out
