"""Training losses: defect segmentation (logits ``(N, 1, H, W)``, float {0, 1} targets), graded levels."""

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


def squared_emd_loss(
    logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Squared earth mover's distance between predicted and true distributions over ordered levels.

    The sum over levels of the squared difference of the two cumulative distributions (Hou et al., "Squared
    Earth Mover's Distance-based Loss for Training Deep Neural Networks", 2016): predicting a level ``k``
    away from the truth costs ``k`` (certain predictions), so far confusions cost more than neighbours.

    Args:
        logits: Class logits ``(N, levels)``, levels in order.
        target: True level indices ``(N,)``.
        class_weights: Optional weight of each true level (class balance), normalised as cross-entropy's.

    Returns:
        Scalar loss, the (weighted) mean over the batch.
    """
    levels = logits.shape[1]
    predicted = torch.cumsum(torch.softmax(logits.float(), dim=1), dim=1)
    truth = (torch.arange(levels, device=target.device)[None, :] >= target[:, None]).float()
    per_image = ((predicted - truth) ** 2).sum(dim=1)
    if class_weights is None:
        return per_image.mean()
    weights = class_weights.to(per_image.device)[target]
    return (per_image * weights).sum() / weights.sum().clamp(min=1e-12)
