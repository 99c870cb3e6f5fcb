"""The registry of networks: every module of this package that defines ``NETWORK`` is one.

Adding a network is one new module here defining its ``nn.Module`` (or builder) and ``NETWORK = Network(...)``
(see :mod:`.base`); config validation, ``train.model=auto``, the weights loader, ``precision=auto``, the
features+svm backbones and the model loader read it from here.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import TYPE_CHECKING

from inspectflow.errors import ConfigError
from inspectflow.models.networks.base import BuildRequest, Network

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "BuildRequest",
    "Network",
    "auto_network",
    "build_model",
    "check_weights",
    "get_network",
    "network_names",
    "networks",
]


@functools.cache
def networks() -> tuple[Network, ...]:
    """Returns every registered network, by name."""
    found = []
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            network = getattr(importlib.import_module(f"{__name__}.{module.name}"), "NETWORK", None)
            if isinstance(network, Network):
                found.append(network)
    return tuple(sorted(found, key=lambda network: network.name))


def network_names(task: str | None = None, backbones: bool = False) -> list[str]:
    """The registered networks' names: those trained for ``task`` (all with ``None``), or the backbones."""
    return [
        network.name
        for network in networks()
        if (network.extractor is not None if backbones else task is None or task in network.tasks)
    ]


def get_network(name: str) -> Network:
    """Returns the network called ``name``.

    Raises:
        ConfigError: No network has that name (the message lists the registered ones).
    """
    for network in networks():
        if network.name == name:
            return network
    raise ConfigError(f"unknown network {name!r}; registered networks: {', '.join(network_names())}")


def auto_network(task: str, side: int, package_installed: bool) -> Network:
    """What ``train.model=auto`` becomes: the first-ranked network of ``task`` the data and install allow.

    Args:
        task: The workload's task.
        side: The smaller working side of the images.
        package_installed: Whether the ImageNet weights package is installed (networks whose weights come
            from it are picked only then, and with those weights).

    Raises:
        ConfigError: No ranked network serves the task.
    """
    ranked = sorted(
        (n for n in networks() if task in n.tasks and n.auto_rank is not None),
        key=lambda n: n.auto_rank or 0,
    )
    for network in ranked:
        if side >= network.auto_min_side and (network.weights != "package" or package_installed):
            return network
    raise ConfigError(f"no network for train.model=auto serves the {task} task at {side} px")


def build_model(
    name: str,
    num_classes: int,
    in_channels: int,
    weights: str = "none",
    freeze_backbone: bool = False,
    task: str | None = None,
) -> nn.Module:
    """Returns the untrained network ``name`` with ``weights`` (``none``, ``imagenet`` or a state dict path).

    Args:
        name: A registered network trained for a task.
        num_classes: Outputs of a classifier (segmenters output one defect-logit map).
        in_channels: Image channels.
        weights: Initial weights.
        freeze_backbone: Train only the head (pretrained networks).
        task: The task it is built for; ``None``: the first it serves.

    Raises:
        ConfigError: Unknown network, one that is only a backbone or does not serve ``task``, or weights
            that do not fit.
    """
    network = get_network(name)
    if network.build is None:
        raise ConfigError(f"{name} is a feature backbone (train.backbone), not a network to train")
    task = task or network.tasks[0]
    if task not in network.tasks:
        raise ConfigError(f"{name} does not serve the {task} task ({', '.join(network.tasks)})")
    return network.build(BuildRequest(task, num_classes, in_channels, weights, freeze_backbone))


def check_weights(name: str, weights: str) -> None:
    """Fails at once when network ``name``'s weights can be neither read nor downloaded.

    Run before a pipeline starts, so that a missing file stops it in seconds rather than at its train step.

    Args:
        name: The network; ``auto`` picks an EfficientNet-Lite0 network whenever ImageNet weights are used.
        weights: ``none``, ``random``, ``auto``, ``imagenet`` or a path to a state dict.

    Raises:
        ConfigError: The file is missing or unreadable, the weights package is not installed, or a
            torchvision file is neither cached nor downloadable (the message says where to put it).
    """
    from pathlib import Path

    from inspectflow.models.weights import ensure_cached, load_state_file, packaged_imagenet_file

    if weights in ("none", "random", "auto"):
        return
    if weights != "imagenet":
        load_state_file(Path(weights))
        return
    network = None if name == "auto" else get_network(name)
    if network is None or network.weights == "package":
        load_state_file(packaged_imagenet_file(network.package if network else "lite0"))
    elif network.weights == "torchvision" and network.torchvision_weights:
        from inspectflow.models.torchvision_compat import import_torchvision

        enum, _, member = network.torchvision_weights.partition(".")
        ensure_cached(getattr(getattr(import_torchvision().models, enum), member))
