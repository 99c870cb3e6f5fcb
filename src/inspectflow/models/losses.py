"""Losses for binary defect segmentation; all take logits ``(N, 1, H, W)`` and float {0, 1} targets."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import torch
from torch.nn import functional as F

SegmentationLossName = Literal["dice", "bce", "bce+dice"]
SegmentationLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Smoothed soft Dice loss ``1 - (2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth)``.

    ``p = sigmoid(logits)``. The sums pool every pixel of the batch: per-image Dice would make each clean
    image (most of a real inspection batch) a term that tiny false alarms swing between 0 and 1, and a
    defect of a few pixels weigh as much as one covering a tenth of the image. The smoothing keeps an
    all-clean batch well defined (small when nothing is predicted, growing with the predicted area).

    Args:
        logits: Predicted logits, shape ``(N, 1, H, W)``.
        target: Ground-truth mask as floats in {0, 1}, same shape.
        smooth: Added to numerator and denominator (add-one smoothing by default).

    Returns:
        Scalar loss in ``[0, 1)``.
    """
    probabilities = torch.sigmoid(logits)
    intersection = (probabilities * target).sum()
    total = probabilities.sum() + target.sum()
    return 1 - (2 * intersection + smooth) / (total + smooth)


def bce_loss(logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 1.0) -> torch.Tensor:
    """Pixel-wise binary cross-entropy, averaged over all pixels, computed stably from logits.

    Args:
        logits: Predicted logits, shape ``(N, 1, H, W)``.
        target: Ground-truth mask as floats in {0, 1}, same shape.
        pos_weight: Weight of defect pixels relative to clean ones.

    Returns:
        Scalar loss.
    """
    weight = None if pos_weight == 1.0 else torch.tensor(pos_weight, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 1.0) -> torch.Tensor:
    """Sum of :func:`bce_loss` and :func:`soft_dice_loss`.

    BCE gives well-behaved per-pixel gradients; Dice counters the imbalance of small defects on a large
    background.

    Args:
        logits: Predicted logits, shape ``(N, 1, H, W)``.
        target: Ground-truth mask as floats in {0, 1}, same shape.
        pos_weight: Weight of defect pixels in BCE.

    Returns:
        Scalar loss.
    """
    return bce_loss(logits, target, pos_weight) + soft_dice_loss(logits, target)


_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "dice": soft_dice_loss,
    "bce": bce_loss,
    "bce+dice": bce_dice_loss,
}


def segmentation_loss(name: SegmentationLossName, pos_weight: float = 1.0) -> SegmentationLoss:
    """Returns the loss function called ``name``.

    Args:
        name: ``"dice"``, ``"bce"`` or ``"bce+dice"``.
        pos_weight: Weight of defect pixels in the BCE term (ignored by ``dice``).

    Returns:
        A function ``(logits, target) -> scalar loss``.

    Raises:
        ValueError: If ``name`` is not one of the above.
    """
    try:
        loss = _LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown segmentation loss {name!r}; expected one of {sorted(_LOSSES)}") from None
    return loss if name == "dice" or pos_weight == 1.0 else functools.partial(loss, pos_weight=pos_weight)
