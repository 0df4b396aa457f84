"""Pixels to model input under a :class:`Preprocessing` contract.

Images are stored as uint8 (C, H, W) after decode, channel conversion, resize and
inversion (:mod:`engine.data.pixels`, torch-free); normalisation to floats
happens per batch with :func:`normalize`, so datasets keep a quarter of the memory and the same uint8 tensors serve any
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

from engine.data.decode import DEFAULT_MAX_PIXELS
from engine.data.pixels import (RESIZE_RULES, check_batch_shape, check_preprocessing, load_array, resize_image,
                                write_pixels)
from engine.data.preprocessing import Preprocessing

__all__ = ["RESIZE_RULES", "check_preprocessing", "image_to_uint8", "load_uint8", "normalize",
           "resize_image", "resize_uint8"]


def image_to_uint8(img: Image.Image, prep: Preprocessing) -> Tensor:
    """A decoded image (any mode :func:`decode_image` returns) to uint8 (C, H, W)."""
    out = np.empty((prep.channels, *prep.size), dtype=np.uint8)
    write_pixels(img, prep, out)
    return torch.from_numpy(out)


def load_uint8(source: str | Path | bytes, prep: Preprocessing, *, name: str | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor:
    """Decode ``source`` and apply ``prep`` up to (not including) normalisation."""
    return torch.from_numpy(load_array(source, prep, name=name, max_pixels=max_pixels))


def normalize(batch_uint8: Tensor, prep: Preprocessing) -> Tensor:
    """uint8 (N, C, H, W) or (C, H, W) to float32 ``(x / 255 - mean) / std``."""
    check_batch_shape(tuple(batch_uint8.shape), prep)
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
