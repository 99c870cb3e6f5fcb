"""Pretrained weights: torchvision enums cached in ``TORCH_HOME``, or a local state dict."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from inspectflow.config import TrainConfig
from inspectflow.errors import ConfigError

_PROBE_TIMEOUT_S = 3.0


def load_pretrained_state(weights: str, enum_member: Any) -> dict[str, torch.Tensor] | None:
    """Resolves a ``weights`` setting to a state dict.

    Args:
        weights: ``none`` (random initialisation), ``imagenet`` (the torchvision enum's file, read from the
            torch hub cache under ``TORCH_HOME`` or downloaded into it) or a path to a state dict.
        enum_member: The torchvision weights enum member used for ``imagenet``, such as
            ``ResNet18_Weights.IMAGENET1K_V1``.

    Returns:
        The state dict, or ``None`` for ``none``.

    Raises:
        ConfigError: The file is missing, unreadable or not a state dict, or ImageNet weights are neither
            cached nor downloadable.
    """
    if weights == "none":
        return None
    if weights == "imagenet":
        return _load_imagenet(enum_member)
    return _load_file(Path(weights))


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConfigError(f"{path}: weights file not found (train.weights takes none, imagenet or a path)")
    try:
        # weights_only: a state dict never needs to run code when it loads.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{path}: not a readable PyTorch state dict ({exc})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: expected a state dict of tensors")
    return state


def _cached_file(enum_member: Any) -> Path:
    """Where torch hub keeps the weights file of a torchvision enum member (under ``TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(enum_member.url).path).name


def _load_imagenet(enum_member: Any) -> dict[str, torch.Tensor]:
    url: str = enum_member.url
    cached = _cached_file(enum_member)
    if cached.is_file():
        return _load_file(cached)
    if not _reachable(url):
        raise ConfigError(
            f"ImageNet weights {enum_member} are not cached and cannot be downloaded (no network). "
            f"Download {url} on a machine with network access and put it at {cached} "
            "(set TORCH_HOME to change the cache folder), or pass train.weights=PATH."
        )
    state: dict[str, torch.Tensor] = torch.hub.load_state_dict_from_url(
        url, map_location="cpu", progress=False, check_hash=True
    )
    return state


def _reachable(url: str) -> bool:
    """Probes the download host so that an offline machine fails in seconds, not after a long hang."""
    host = urlparse(url).hostname or ""
    try:
        with socket.create_connection((host, 443), timeout=_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def check_weights(config: TrainConfig) -> None:
    """Fails at once when the configured pretrained weights can be neither read nor downloaded.

    Run before a pipeline starts, so that a missing file stops it in seconds rather than at its train step.

    Raises:
        ConfigError: As :func:`load_pretrained_state` would.
    """
    if config.weights == "none":
        return
    if config.weights != "imagenet":
        _load_file(Path(config.weights))
        return
    from inspectflow.models.torchvision_compat import import_torchvision

    models = import_torchvision().models
    uses_features = config.method == "features+svm"
    name = config.backbone if uses_features else config.model
    enums = {
        "resnet18": models.ResNet18_Weights.IMAGENET1K_V1,
        "vgg16": models.VGG16_Weights.IMAGENET1K_V1,
        "mobilenet_v2": models.MobileNet_V2_Weights.IMAGENET1K_V1,
    }
    if not _cached_file(enums[name]).is_file():
        _load_imagenet(enums[name])  # downloads the file into the cache, or says where to put it
