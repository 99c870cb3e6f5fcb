"""The small residual CNN of the textile defect example: small patches, trained from scratch."""

from __future__ import annotations

import torch
from torch import nn

from inspectflow.models.networks.base import BuildRequest, Network
from inspectflow.models.weights import load_own_weights


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions whose output is added to the block's input (a 1x1 projection when shapes differ).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride of the first convolution; 2 halves the resolution.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the block."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResidualCNN(nn.Module):
    """Stem, three residual blocks (skip connections by addition), global average pooling, dense head.

    Each block halves the resolution and doubles the channels, so most of the compute runs at low
    resolution: about 45 MMAC per 64x64 image, which trains in seconds per epoch on two CPU cores.

    Args:
        num_classes: Output logits.
        in_channels: Image channels.
        width: Channels of the stem; each block doubles them.
    """

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(
            ResidualBlock(width, 2 * width, stride=2),
            ResidualBlock(2 * width, 4 * width, stride=2),
            ResidualBlock(4 * width, 8 * width, stride=2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns class logits for images in ``[0, 1]``, shape ``(N, C, H, W)``."""
        features = self.pool(self.blocks(self.stem(x)))
        return self.head(torch.flatten(features, 1))


def build(request: BuildRequest) -> nn.Module:
    """The network with random weights, or a state dict file's (it has no ImageNet weights to freeze)."""
    return load_own_weights(ResidualCNN(request.classes, request.channels), request.weights)


NETWORK = Network(
    name="residual_cnn",
    tasks=("classification",),
    weights="none",
    build=build,
    auto_rank=2,  # small patches (64 px textile) learn quickly from scratch
    description="small residual CNN (3 blocks, ~45 MMAC at 64 px), from scratch",
)
