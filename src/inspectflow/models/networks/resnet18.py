"""torchvision ResNet18 adapted to the workload's channels and classes."""

from __future__ import annotations

import torch
from torch import nn

from inspectflow.models.networks.base import BuildRequest, Network
from inspectflow.models.torchvision_compat import import_torchvision
from inspectflow.models.weights import load_pretrained_state


def build_resnet18(num_classes: int, in_channels: int, weights: str, freeze_backbone: bool) -> nn.Module:
    """Builds ResNet18 with a new head, optionally from pretrained weights.

    A grayscale stem is made from RGB weights by summing the first convolution over its input channels,
    which keeps the pretrained filters' response to luminance.

    Args:
        num_classes: Outputs of the new fully connected head.
        in_channels: Image channels: 1 (grayscale stem) or 3.
        weights: ``none``, ``imagenet`` or a path to a ResNet18 state dict (see
            :func:`~inspectflow.models.weights.load_pretrained_state`).
        freeze_backbone: Train only the head.

    Returns:
        The model; its ``fc`` layer is the head.
    """
    torchvision = import_torchvision()
    model = torchvision.models.resnet18(weights=None)
    state = load_pretrained_state(weights, torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    if state is not None:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        model.load_state_dict(state, strict=False)
    if in_channels == 1:
        rgb = model.conv1.weight.detach()
        model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        with torch.no_grad():
            model.conv1.weight.copy_(rgb.sum(dim=1, keepdim=True))
    if freeze_backbone:
        for parameter in model.parameters():
            parameter.requires_grad = False
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def build(request: BuildRequest) -> nn.Module:
    """ResNet18 for the request (see :func:`build_resnet18`)."""
    return build_resnet18(request.classes, request.channels, request.weights, request.freeze_backbone)


NETWORK = Network(
    name="resnet18",
    tasks=("classification",),
    weights="torchvision",
    torchvision_weights="ResNet18_Weights.IMAGENET1K_V1",
    build=build,
    bf16_faster=True,  # measured: a training step 1.9x faster in bfloat16 autocast on AVX512-BF16
    description="torchvision ResNet18 (ImageNet weights from TORCH_HOME, asked for by name)",
)
