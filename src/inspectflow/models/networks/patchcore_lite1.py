"""PatchCore on the ImageNet EfficientNet-Lite1 (weights from pip): the anomaly task's model.

Lite1 is Lite0 a little deeper (more blocks per stage, the same widths at blocks 2 and 4): on KolektorSDD
its patch features separate thin cracks from good texture better (test image AUROC 0.907 against 0.824 with
Lite0, the same bank and settings; benchmarks/README.md).
"""

from __future__ import annotations

from torch import nn

from inspectflow.models.networks.base import BuildRequest, Network
from inspectflow.models.patchcore import PatchCore


def build(request: BuildRequest) -> nn.Module:
    """The backbone with an empty bank (``patchcore``'s fit fills it; a trained state dict brings it)."""
    return PatchCore("imagenet" if request.weights in ("auto", "imagenet") else request.weights, "lite1")


NETWORK = Network(
    name="patchcore_lite1",
    tasks=("anomaly",),
    weights="package",
    package="lite1",
    build=build,
    side_multiple=16,  # the deeper feature map's stride
    auto_rank=1,
    description="PatchCore: a coreset of ImageNet EfficientNet-Lite1 patch features of good parts",
)
