"""torchvision VGG16 as a frozen feature backbone (fc1), as in the classic insert-inspection papers."""

from __future__ import annotations

from torch import nn

from inspectflow.models.networks.base import Network, layers_only
from inspectflow.models.torchvision_compat import import_torchvision
from inspectflow.models.weights import load_backbone_weights


def extractor(weights: str, layer: str) -> tuple[nn.Module, int]:
    """The first fully connected layer and its ReLU (4096-d)."""
    models = import_torchvision().models
    vgg = models.vgg16(weights=None)
    load_backbone_weights(vgg, weights, models.VGG16_Weights.IMAGENET1K_V1, head_prefix="classifier.6.")
    module = nn.Sequential(vgg.features, vgg.avgpool, nn.Flatten(1), vgg.classifier[0], vgg.classifier[1])
    return module, int(vgg.classifier[0].out_features)


NETWORK = Network(
    name="vgg16",
    tasks=(),
    weights="torchvision",
    torchvision_weights="VGG16_Weights.IMAGENET1K_V1",
    extractor=extractor,
    resolve_layer=layers_only("fc1"),
    description="torchvision VGG16, fc1 features (ImageNet weights from TORCH_HOME)",
)
