"""Frozen ImageNet feature backbones, the one place one is built: for features+svm and the drift watch.

A backbone is a registered network with an ``extractor`` (:mod:`inspectflow.models.networks`): pooled
EfficientNet-Lite0 (weights from pip), VGG16 fc1 or a pooled MobileNetV2 block (torchvision's files).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from inspectflow import console
from inspectflow.errors import ConfigError
from inspectflow.models.efficientnet import IMAGENET_MEAN, IMAGENET_STD
from inspectflow.models.networks import get_network, network_names


def resolve_layer(backbone: str, layer: str | None) -> str:
    """Validates a cut point of a backbone and fills in its default.

    Args:
        backbone: A registered network with an extractor (``efficientnet_lite0``, ``vgg16``,
            ``mobilenet_v2``).
        layer: ``None`` for the default; ``pool`` for EfficientNet-Lite0; ``fc1`` for VGG16; ``pool`` or
            ``features.N`` for MobileNetV2.

    Returns:
        The explicit layer name.

    Raises:
        ValueError: Unknown backbone or a layer the backbone does not have.
    """
    try:
        network = get_network(backbone)
    except ConfigError:
        network = None
    if network is None or network.extractor is None:
        names = ", ".join(network_names(backbones=True))
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {names}")
    try:
        return network.resolve_layer(layer)
    except ValueError as exc:
        raise ValueError(f"{backbone} {exc}") from None


def build_extractor(backbone: str, weights: str, layer: str | None = None) -> tuple[nn.Module, int]:
    """Builds a frozen feature extractor from an ImageNet classifier.

    Args:
        backbone: A registered backbone (see :func:`resolve_layer`).
        weights: ``none``, ``imagenet`` or a path to the backbone's state dict (see
            :func:`~inspectflow.models.weights.load_pretrained_state`; for EfficientNet-Lite0, also a
            fine-tuned ``efficientnet_lite0`` classifier's).
        layer: Cut point; ``None`` for the default (see :func:`resolve_layer`).

    Returns:
        The extractor in eval mode with gradients off, mapping float ``(N, 3, H, W)`` ImageNet-normalised
        images to ``(N, D)`` features, and ``D``.

    Raises:
        ValueError: Unknown backbone or layer.
        ConfigError: The weights cannot be loaded or do not fit the backbone.
    """
    layer = resolve_layer(backbone, layer)
    build = get_network(backbone).extractor
    assert build is not None  # resolve_layer checked it
    extractor, dim = build(weights, layer)
    extractor.eval()
    for parameter in extractor.parameters():
        parameter.requires_grad = False
    return extractor, int(dim)


def extract_features(extractor: nn.Module, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Runs an extractor over uint8 images in batches.

    Images are scaled to ``[0, 1]`` and normalised with the ImageNet mean and std; they are not resized
    (callers prepare 224x224 images, but the backbones' pooling accepts any size).

    Args:
        extractor: A module from :func:`build_extractor`.
        images: ``(N, H, W, 3)`` RGB or ``(N, H, W, 1)`` grayscale uint8 images; grayscale is repeated to
            three channels.
        batch_size: Images per forward pass.

    Returns:
        ``(N, D)`` float32 features.

    Raises:
        ValueError: The images are not ``(N, H, W, 1|3)`` or the batch size is not positive.
    """
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, H, W, 1|3), got {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = next(extractor.parameters()).device
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    outputs: list[np.ndarray] = []
    # An empty set still runs one (empty) pass, so the result has the extractor's width.
    starts = range(0, len(images), batch_size) if len(images) else [0]
    with torch.no_grad():
        for number, start in enumerate(starts, 1):
            console.progress(number - 1, len(starts), "extract features")
            # Converted per batch: a float copy of the whole set would be 4x the uint8 memory.
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
            batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
            batch = batch.expand(-1, 3, -1, -1) if batch.shape[1] == 1 else batch
            outputs.append(extractor((batch - mean) / std).float().cpu().numpy())
    return np.concatenate(outputs).astype(np.float32, copy=False)
