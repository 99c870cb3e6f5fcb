"""Builds the configured model."""

from __future__ import annotations

from torch import nn

from inspectflow.config import TrainConfig
from inspectflow.models.residual_cnn import ResidualCNN
from inspectflow.models.resnet import build_resnet18
from inspectflow.models.unet import UNet
from inspectflow.models.weights import load_pretrained_state


def build_model(config: TrainConfig, num_classes: int, in_channels: int) -> nn.Module:
    """Returns the untrained model that ``config.model`` names, with ``config.weights`` loaded.

    Args:
        config: Training settings.
        num_classes: Outputs of a classifier (ignored by the U-Net, which outputs one defect-logit map).
        in_channels: Image channels.
    """
    if config.model == "resnet18":
        return build_resnet18(num_classes, in_channels, config.weights, config.freeze_backbone)
    model: nn.Module = UNet(in_channels) if config.model == "unet" else ResidualCNN(num_classes, in_channels)
    state = load_pretrained_state(config.weights, enum_member=None)  # imagenet is refused by the config
    if state is not None:
        model.load_state_dict(state)
    return model
