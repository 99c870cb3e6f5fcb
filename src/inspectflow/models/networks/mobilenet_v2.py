"""torchvision MobileNetV2 as a frozen feature backbone: any block, globally average-pooled."""

from __future__ import annotations

from torch import nn

from inspectflow.models.networks.base import Network
from inspectflow.models.torchvision_compat import import_torchvision
from inspectflow.models.weights import load_backbone_weights

_BLOCKS = 19  # len(mobilenet_v2().features)


def _block(layer: str) -> int | None:
    prefix, _, index = layer.partition(".")
    # isdecimal rejects signs and spaces, so "features.-1" cannot wrap around to the last block.
    if prefix != "features" or not index.isdecimal() or int(index) >= _BLOCKS:
        return None
    return int(index)


def resolve_layer(layer: str | None) -> str:
    """``pool`` (the last block, 1280-d; also for ``None``) or ``features.N``, which pools block ``N``."""
    if layer is None or layer == "pool" or _block(layer) is not None:
        return layer or "pool"
    raise ValueError(f"layer must be pool (or None) or features.N with N in 0..{_BLOCKS - 1}, got {layer!r}")


def extractor(weights: str, layer: str) -> tuple[nn.Module, int]:
    """Block ``layer`` of ``.features``, globally average-pooled."""
    models = import_torchvision().models
    mobilenet = models.mobilenet_v2(weights=None)
    load_backbone_weights(
        mobilenet, weights, models.MobileNet_V2_Weights.IMAGENET1K_V1, head_prefix="classifier."
    )
    block = _BLOCKS - 1 if layer == "pool" else _block(layer)
    assert block is not None  # resolve_layer accepted it
    blocks = mobilenet.features[: block + 1]
    return nn.Sequential(blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(1)), int(blocks[-1].out_channels)


NETWORK = Network(
    name="mobilenet_v2",
    tasks=(),
    weights="torchvision",
    torchvision_weights="MobileNet_V2_Weights.IMAGENET1K_V1",
    extractor=extractor,
    resolve_layer=resolve_layer,
    description="torchvision MobileNetV2, a pooled block's features (ImageNet weights from TORCH_HOME)",
)
