"""Conv4: the four-block CNN of Matching Networks, Prototypical Networks and MAML.

Each block is conv3x3 (64 filters) -> BatchNorm -> ReLU -> maxpool 2 (computed as
maxpool then ReLU: the same function, cheaper); the
output is flattened, so the embedding size depends on the input size:
Omniglot 28x28 -> 64, mini-ImageNet 84x84 -> 64*5*5 = 1600.
"""
from __future__ import annotations

from torch import Tensor, nn

from engine.errors import ModelInputError
from engine.models.fast_pool import MaxPool2

BLOCKS = 4


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    # Not in-place: MAML-style methods run this through torch.func, where
    # out-of-place activations keep every transform simple and safe.
    # Pooling before the ReLU is the same function (max and ReLU commute: both are
    # monotonic), with the same gradients, but the ReLU and its backward see a quarter
    # of the elements; parameter names are unchanged (neither layer has any).
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        MaxPool2(),  # nn.MaxPool2d(2) on a faster CPU kernel (engine/models/fast_pool.py)
        nn.ReLU(),
    )


def spatial_after_pools(image_size: int, pools: int = BLOCKS) -> int:
    side = image_size
    for _ in range(pools):
        side //= 2
    return side


class Conv4(nn.Module):
    """Four conv blocks; ``forward`` maps (N, C, H, W) to (N, out_dim)."""

    name = "conv4"

    def __init__(self, in_channels: int = 1, image_size: int = 28, hidden: int = 64):
        super().__init__()
        side = spatial_after_pools(image_size)
        if side < 1:
            raise ModelInputError(
                f"conv4 needs images of at least {2 ** BLOCKS} px (four 2x poolings); "
                f"got {image_size} px: choose a larger image size")
        self.in_channels = in_channels
        self.image_size = image_size
        self.out_dim = hidden * side * side
        self.encoder = nn.Sequential(
            conv_block(in_channels, hidden),
            *(conv_block(hidden, hidden) for _ in range(BLOCKS - 1)),
        )

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.name, self.in_channels, self.image_size)
        return self.encoder(x).flatten(1)


def check_input(x: Tensor, model: str, channels: int, image_size: int | None) -> None:
    """Turn a shape mismatch into a message a user can act on, not a matmul error."""
    if x.dim() != 4:
        raise ModelInputError(f"{model} takes image batches shaped (N, C, H, W); got shape {tuple(x.shape)}")
    if x.shape[-3] != channels:
        raise ModelInputError(
            f"{model} was built for {channels}-channel images but got {x.shape[-3]} channels: "
            "use the model's own preprocessing (grayscale vs colour)")
    if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
        raise ModelInputError(
            f"{model} was built for {image_size}x{image_size} images but got "
            f"{x.shape[-2]}x{x.shape[-1]}: resize with the model's own preprocessing")
