"""Backbone names -> modules and the preprocessing each expects.

Every backbone has ``.name`` (its registry name), ``.out_dim`` (embedding
size), ``.in_channels`` and ``.image_size``; ``forward`` maps
(N, C, H, W) to (N, out_dim).
"""
from __future__ import annotations

from torch import nn

from engine.data.preprocessing import Preprocessing
from engine.errors import FewShotError, ModelInputError
from engine.models import lite0
from engine.models.conv4 import Conv4
from engine.models.resnet12 import ResNet12

BACKBONES = ("conv4", "resnet12", "lite0")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class UnknownBackboneError(FewShotError):
    """A backbone name that this program does not know."""

    def __init__(self, name: str):
        self.backbone = name
        super().__init__(f"unknown backbone '{name}'; choose one of: {', '.join(BACKBONES)}")


def _check(name: str, channels: int, image_size: int) -> None:
    if name not in BACKBONES:
        raise UnknownBackboneError(name)
    if name == "lite0" and channels != 3:
        raise ModelInputError(
            f"lite0 is an ImageNet model and takes 3-channel (colour) images, not {channels}: "
            "use channels=3 (grayscale images are converted) or a conv4/resnet12 backbone")
    if channels not in (1, 3):
        raise ModelInputError(f"images must have 1 (grayscale) or 3 (colour) channels, not {channels}")
    if image_size < 1:
        raise ModelInputError(f"image size must be a positive number of pixels, not {image_size}")


def build_backbone(name: str, *, channels: int, image_size: int) -> nn.Module:
    """conv4 and resnet12 start from random weights; lite0 loads the packaged ImageNet weights."""
    _check(name, channels, image_size)
    if name == "conv4":
        return Conv4(in_channels=channels, image_size=image_size)
    if name == "resnet12":
        return ResNet12(in_channels=channels, image_size=image_size)
    return lite0.build_lite0(image_size=image_size)


def default_preprocessing(name: str, channels: int, image_size: int) -> Preprocessing:
    """How images are turned into this backbone's input.

    One channel means pen strokes (Omniglot-like): stretched, inverted so the
    strokes are bright on black, pixels kept on 0..1. Three channels mean
    photos: ImageNet statistics for backbones trained here, and for lite0 the
    (x - 127) / 128 scaling and centre crop its TF weights were trained with.
    """
    _check(name, channels, image_size)
    size = (image_size, image_size)
    if name == "lite0":
        return Preprocessing(size=size, channels=3, mean=lite0.MEAN, std=lite0.STD,
                             resize="shorter_side_center_crop")
    if channels == 1:
        return Preprocessing(size=size, channels=1, mean=(0.0,), std=(1.0,), resize="stretch", invert=True)
    return Preprocessing(size=size, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="stretch")
