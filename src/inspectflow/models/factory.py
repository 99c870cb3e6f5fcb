"""Builds the configured model."""

from __future__ import annotations

from torch import nn

from inspectflow.config import TrainConfig
from inspectflow.models.efficientnet import build_efficientnet_lite0, build_unet_lite0
from inspectflow.models.residual_cnn import ResidualCNN
from inspectflow.models.resnet import build_resnet18
from inspectflow.models.unet import UNet
from inspectflow.models.weights import load_pretrained_state


def build_model(config: TrainConfig, num_classes: int, in_channels: int) -> nn.Module:
    """Returns the untrained model that ``config.model`` names, with ``config.weights`` loaded.

    Args:
        config: Training settings.
        num_classes: Outputs of a classifier (ignored by the U-Nets, which output one defect-logit map).
        in_channels: Image channels.
    """
    if config.model == "resnet18":
        return build_resnet18(num_classes, in_channels, config.weights, config.freeze_backbone)
    if config.model == "efficientnet_lite0":
        return build_efficientnet_lite0(num_classes, in_channels, config.weights, config.freeze_backbone)
    if config.model == "unet_lite0":
        return build_unet_lite0(in_channels, config.weights, freeze_encoder=config.freeze_backbone)
    model: nn.Module = UNet(in_channels) if config.model == "unet" else ResidualCNN(num_classes, in_channels)
    state = load_pretrained_state(config.weights, enum_member=None)  # imagenet is refused by the config
    if state is not None:
        model.load_state_dict(state)
    return model
