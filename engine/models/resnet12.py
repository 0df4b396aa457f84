"""ResNet-12 as used by TADAM, MetaOptNet and RFS (Tian et al. 2020).

Four residual blocks of widths 64-160-320-640; each block is three
conv3x3 -> BN -> LeakyReLU(0.1) layers (the last activation after the
residual sum) with a 1x1 conv + BN shortcut, then a 2x2 max-pool. A global
average pool gives a 640-d embedding whatever the input size.

DropBlock, which MetaOptNet and RFS add in the last two blocks for long
mini-ImageNet runs, is not included: it is a training regulariser only, and
the short runs this project makes do not need it. Add it here if long runs
overfit.
"""
from __future__ import annotations

from torch import Tensor, nn

from engine.errors import ModelInputError
from engine.models.conv4 import check_input, spatial_after_pools

WIDTHS = (64, 160, 320, 640)
NEGATIVE_SLOPE = 0.1


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)


class ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv3 = conv3x3(out_channels, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.pool(self.act(out + self.shortcut(x)))


class ResNet12(nn.Module):
    """``forward`` maps (N, C, H, W) to (N, 640)."""

    name = "resnet12"

    def __init__(self, in_channels: int = 3, image_size: int = 84, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        if spatial_after_pools(image_size, len(widths)) < 1:
            raise ModelInputError(
                f"resnet12 needs images of at least {2 ** len(widths)} px (four 2x poolings); "
                f"got {image_size} px: choose a larger image size")
        self.in_channels = in_channels
        self.image_size = image_size
        self.out_dim = widths[-1]
        chans = (in_channels, *widths)
        self.blocks = nn.Sequential(*(ResidualBlock(a, b) for a, b in zip(chans[:-1], chans[1:])))
        self._init_weights()

    def _init_weights(self) -> None:
        # RFS / MetaOptNet initialisation: He-normal (fan-out) for the leaky
        # ReLUs, BN as identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=NEGATIVE_SLOPE, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        # The global pool makes any size at least 16 px work, so only channels are checked.
        check_input(x, self.name, self.in_channels, None)
        return self.blocks(x).mean(dim=(-2, -1))
