"""Metrics for binary defect segmentation on boolean masks ``(N, H, W)`` (numpy only, no torch).

Conventions: a set in which both the prediction and the truth are empty scores 1.0 for Dice and IoU
(nothing to find, nothing found), and detection rates with no image to count are 0.0, with the counts
returned alongside so that callers can tell such a 0.0 from a real one.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def _as_masks(pred: npt.ArrayLike, truth: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Returns both masks as boolean arrays of shape ``(N, H, W)``, checking that the shapes agree."""
    pred_mask = np.asarray(pred, dtype=bool)
    truth_mask = np.asarray(truth, dtype=bool)
    if pred_mask.shape != truth_mask.shape:
        raise ValueError(
            f"predicted masks {pred_mask.shape} and truth masks {truth_mask.shape} differ in shape"
        )
    if pred_mask.ndim != 3:
        raise ValueError(f"masks must have shape (N, H, W), got {pred_mask.shape}")
    return pred_mask, truth_mask


def pixel_counts(pred: npt.ArrayLike, truth: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each image's pixels in both masks, in the prediction and in the truth: three ``(N,)`` arrays.

    Raises:
        ValueError: If the shapes differ or are not ``(N, H, W)``.
    """
    pred_mask, truth_mask = _as_masks(pred, truth)
    flat_pred, flat_truth = pred_mask.reshape(len(pred_mask), -1), truth_mask.reshape(len(truth_mask), -1)
    return (flat_pred & flat_truth).sum(axis=1), flat_pred.sum(axis=1), flat_truth.sum(axis=1)


def pooled_dice(both: npt.ArrayLike, predicted: npt.ArrayLike, true: npt.ArrayLike) -> float:
    """Foreground Dice pooled over images from their counts: ``2 * sum |P & T| / sum (|P| + |T|)``.

    Pooling (rather than averaging per image) weights images by their defect area and keeps clean
    images, whose per-image Dice is 0/0, from dominating. The counts may be weighted (an image's own
    pixels per mask pixel). 1.0 when both are empty everywhere.
    """
    total = float(np.sum(predicted) + np.sum(true))
    return 2 * float(np.sum(both)) / total if total else 1.0


def pooled_iou(both: npt.ArrayLike, predicted: npt.ArrayLike, true: npt.ArrayLike) -> float:
    """Foreground IoU pooled over images from their counts: sum of intersections over sum of unions.

    1.0 when both are empty everywhere.
    """
    union = float(np.sum(predicted) + np.sum(true) - np.sum(both))
    return float(np.sum(both)) / union if union else 1.0


def foreground_dice(pred: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """Dice of the defect class pooled over all pixels of the set (:func:`pooled_dice`).

    Args:
        pred: Predicted masks, boolean ``(N, H, W)``.
        truth: Ground-truth masks, same shape.

    Raises:
        ValueError: If the shapes differ or are not ``(N, H, W)``.
    """
    return pooled_dice(*pixel_counts(pred, truth))


def foreground_iou(pred: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """IoU of the defect class pooled over all pixels of the set (:func:`pooled_iou`).

    Args:
        pred: Predicted masks, boolean ``(N, H, W)``.
        truth: Ground-truth masks, same shape.

    Raises:
        ValueError: If the shapes differ or are not ``(N, H, W)``.
    """
    return pooled_iou(*pixel_counts(pred, truth))


def per_image_iou(pred: npt.ArrayLike, truth: npt.ArrayLike) -> np.ndarray:
    """IoU of the defect class for each image.

    Args:
        pred: Predicted masks, boolean ``(N, H, W)``.
        truth: Ground-truth masks, same shape.

    Returns:
        Float array ``(N,)``; 1.0 for an image whose prediction and truth are both empty.

    Raises:
        ValueError: If the shapes differ or are not ``(N, H, W)``.
    """
    pred_mask, truth_mask = _as_masks(pred, truth)
    intersection = np.logical_and(pred_mask, truth_mask).sum(axis=(1, 2))
    union = np.logical_or(pred_mask, truth_mask).sum(axis=(1, 2))
    # Divide only where the union is non-empty; the rest keeps the empty-empty value 1.0.
    iou = np.ones(pred_mask.shape[0], dtype=np.float64)
    np.divide(intersection, union, out=iou, where=union > 0)
    return iou


def detection_rates(
    image_scores: npt.ArrayLike, is_defective: npt.ArrayLike, threshold: float
) -> dict[str, int | float]:
    """Image-level detection: an image is declared defective when its defect score is too high.

    Args:
        image_scores: Each image's defect score (the segmenter's highest pixel probability), ``(N,)``.
        is_defective: Whether each image truly contains a defect, boolean ``(N,)``.
        threshold: An image is declared defective when its score is strictly greater than this.

    Returns:
        ``true_positive_rate`` (defective images declared defective / defective images) and
        ``false_positive_rate`` (clean images declared defective / clean images), both 0.0 when their
        denominator is zero, and the integer counts ``true_positives``, ``false_negatives``,
        ``false_positives``, ``true_negatives``, ``n_defective`` and ``n_clean`` that tell those cases
        apart.

    Raises:
        ValueError: If the two arrays are not one-dimensional of the same length.
    """
    scores = np.asarray(image_scores, dtype=np.float64)
    defective = np.asarray(is_defective, dtype=bool)
    if scores.ndim != 1 or scores.shape != defective.shape:
        raise ValueError(f"image_scores {scores.shape} and is_defective {defective.shape} must both be (N,)")
    declared = scores > threshold
    true_positives = int(np.sum(declared & defective))
    false_negatives = int(np.sum(~declared & defective))
    false_positives = int(np.sum(declared & ~defective))
    true_negatives = int(np.sum(~declared & ~defective))
    n_defective = true_positives + false_negatives
    n_clean = false_positives + true_negatives
    return {
        "true_positive_rate": true_positives / n_defective if n_defective else 0.0,
        "false_positive_rate": false_positives / n_clean if n_clean else 0.0,
        "true_positives": true_positives,
        "false_negatives": false_negatives,
        "false_positives": false_positives,
        "true_negatives": true_negatives,
        "n_defective": n_defective,
        "n_clean": n_clean,
    }


def pick_detection_threshold(
    image_scores: npt.ArrayLike, is_defective: npt.ArrayLike, default: float
) -> float:
    """The score threshold that best separates defective from clean images (Youden's J = TPR - FPR).

    Of equally good cuts the one with fewer false alarms is taken, and the threshold hugs the clean side:
    it is the highest score still declared clean, so that any image scoring above that is flagged. A
    missed defect (an escape) costs a line more than a second look at a clean part, and a small validation
    split rarely shows the faintest defects to come.

    Args:
        image_scores: Each image's defect score, shape ``(N,)``.
        is_defective: Whether each image truly contains a defect, boolean ``(N,)``.
        default: The threshold returned when no cut beats chance or one of the two kinds of image is
            missing.

    Returns:
        A threshold for :func:`detection_rates`.
    """
    from sklearn.metrics import roc_curve

    scores = np.asarray(image_scores, dtype=np.float64)
    defective = np.asarray(is_defective, dtype=bool)
    if defective.all() or not defective.any():
        return default
    false_alarms, found, cuts = roc_curve(defective, scores, drop_intermediate=False)
    youden = found - false_alarms
    # The first maximum (to rounding) is the highest cut: fewest false alarms.
    best = int(np.flatnonzero(youden >= youden.max() - 1e-9)[0])
    if youden[best] <= 0:
        return default
    below = scores[scores < cuts[best]]
    return float(below.max()) if below.size else default
