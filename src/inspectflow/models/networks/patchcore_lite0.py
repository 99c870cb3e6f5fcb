"""PatchCore on the ImageNet EfficientNet-Lite0 (weights from pip): the anomaly task's first model.

Kept so that versions fitted with it load; ``patchcore_lite1`` is the default.
"""

from __future__ import annotations

from torch import nn

from inspectflow.models.networks.base import BuildRequest, Network
from inspectflow.models.patchcore import PatchCore


def build(request: BuildRequest) -> nn.Module:
    """The backbone with an empty bank (``patchcore``'s fit fills it; a trained state dict brings it)."""
    return PatchCore("imagenet" if request.weights in ("auto", "imagenet") else request.weights, "lite0")


NETWORK = Network(
    name="patchcore_lite0",
    tasks=("anomaly",),
    weights="package",
    build=build,
    side_multiple=16,  # the deeper feature map's stride
    description="PatchCore: a coreset of ImageNet EfficientNet-Lite0 patch features of good parts",
)
