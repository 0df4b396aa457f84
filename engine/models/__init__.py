"""Backbones: Conv4, ResNet-12 and the pretrained EfficientNet-Lite0."""
from engine.models.conv4 import Conv4
from engine.models.lite0 import Lite0, build_lite0
from engine.models.registry import (
    BACKBONES,
    UnknownBackboneError,
    build_backbone,
    default_preprocessing,
)
from engine.models.resnet12 import ResNet12

__all__ = [
    "BACKBONES",
    "Conv4",
    "Lite0",
    "ResNet12",
    "UnknownBackboneError",
    "build_backbone",
    "build_lite0",
    "default_preprocessing",
]
