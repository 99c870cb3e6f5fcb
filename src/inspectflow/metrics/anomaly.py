"""Pixel-level metrics of anomaly maps ``(N, H, W)`` against boolean defect masks (numpy/scipy/sklearn only).

An anomaly map holds one score per pixel, higher meaning more anomalous (PatchCore-style); a pixel is
declared anomalous at threshold ``t`` when its score is ``>= t``. Both metrics pool the pixels of the whole
set and return NaN where they are undefined (no defect pixel, or no clean pixel), so that callers can tell
"nothing to measure" from a real score.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# 8-connectivity inside each image and none across images: anomalib labels each ground-truth mask with
# ``cv2.connectedComponents`` (default connectivity 8) on the CPU, and with kornia's 3x3 max-pool
# propagation (also 8-connected) on the GPU.
_REGION_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_REGION_STRUCTURE[1] = True


def _as_maps_and_masks(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns float64 maps and boolean masks, checking that both have the same ``(N, H, W)`` shape."""
    scores = np.asarray(maps, dtype=np.float64)
    truth = np.asarray(masks, dtype=bool)
    if scores.shape != truth.shape or scores.ndim != 3:
        raise ValueError(
            f"anomaly maps {scores.shape} and masks {truth.shape} must have the same shape (N, H, W)"
        )
    if not np.isfinite(scores).all():
        raise ValueError("anomaly maps must hold finite scores only")
    return scores, truth


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> float:
    """ROC AUC of the per-pixel anomaly scores against the defect masks, pooled over all pixels of the set.

    Args:
        maps: Anomaly scores, float ``(N, H, W)``, higher meaning more anomalous.
        masks: Ground-truth defect masks, boolean, same shape.

    Returns:
        AUROC in ``[0, 1]``; NaN when the masks hold no defect pixel or no clean pixel (AUC undefined).

    Raises:
        ValueError: If the shapes differ or are not ``(N, H, W)``, or a score is not finite.
    """
    from sklearn.metrics import roc_auc_score

    scores, truth = _as_maps_and_masks(maps, masks)
    n_defect = int(truth.sum())
    if n_defect == 0 or n_defect == truth.size:
        return float("nan")
    return float(roc_auc_score(truth.ravel(), scores.ravel()))


def _pro_curve(
    scores: np.ndarray, regions: np.ndarray, n_regions: int, fpr_limit: float
) -> tuple[np.ndarray, np.ndarray]:
    """The (global FPR, mean per-region overlap) curve over all score thresholds, from the top down.

    The curve starts at ``(0, 0)`` (threshold above every score) and has one point per distinct score,
    down to the first point whose FPR exceeds ``fpr_limit`` (or reaches 1); lower thresholds are not needed.

    Args:
        scores: Anomaly scores, flat float array.
        regions: Region label of each pixel (0 for clean pixels), flat integer array of the same length.
        n_regions: Number of regions (labels ``1..n_regions``); at least 1.
        fpr_limit: The FPR up to which the curve is needed.

    Returns:
        ``fpr`` and ``pro``, ascending float arrays of equal length.
    """
    # Each defect pixel adds 1 / (its region's size * number of regions) to the mean overlap.
    region_weight = 1.0 / (np.bincount(regions, minlength=n_regions + 1) * n_regions)
    region_weight[0] = 0.0
    clean = regions == 0
    n_clean = int(clean.sum())
    # Only pixels scoring at least the k-th highest clean score can matter: with k clean pixels above
    # threshold the FPR is already past the limit, so lower thresholds lie beyond the integration range.
    k = min(n_clean, int(fpr_limit * n_clean) + 1)
    cut = np.partition(scores[clean], n_clean - k)[n_clean - k]
    keep = scores >= cut
    scores, regions = scores[keep], regions[keep]

    order = np.argsort(scores)[::-1]
    scores, regions = scores[order], regions[order]
    pro = np.cumsum(region_weight[regions])
    false_positives = np.cumsum(regions == 0)
    # A threshold takes every pixel scoring at least it: keep the last pixel of each run of tied scores.
    last_of_tie = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))
    fpr = np.concatenate(([0.0], false_positives[last_of_tie] / n_clean))
    pro = np.concatenate(([0.0], pro[last_of_tie]))
    return fpr, pro


def _area_up_to(fpr: np.ndarray, pro: np.ndarray, fpr_limit: float) -> float:
    """Trapezoid area under ``pro(fpr)`` for ``fpr <= fpr_limit``, the point at the limit interpolated."""
    inside = int(np.searchsorted(fpr, fpr_limit, side="right"))
    x, y = fpr[:inside], pro[:inside]
    if x[-1] < fpr_limit and inside < fpr.size:
        # Linearly interpolate between the last point inside and the first point past the limit.
        step = (fpr_limit - fpr[inside - 1]) / (fpr[inside] - fpr[inside - 1])
        x = np.append(x, fpr_limit)
        y = np.append(y, pro[inside - 1] + step * (pro[inside] - pro[inside - 1]))
    return float(np.trapezoid(y, x))


def aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Area under the per-region-overlap (PRO) curve up to a false-positive rate, normalised to ``[0, 1]``.

    The MVTec AD definition (Bergmann et al.) as anomalib computes it (``anomalib.metrics.aupro.AUPRO``):
    the ground-truth masks are split into connected regions; at each threshold (every distinct score,
    pixels scoring ``>=`` it declared anomalous) the PRO is the fraction of each region's pixels declared
    anomalous, averaged over all regions of the set (so a small defect weighs as much as a large one), and
    the FPR is the fraction of all clean pixels of the set declared anomalous. The area under PRO against
    FPR for ``FPR <= fpr_limit`` (trapezoids, the point at the limit interpolated linearly) is divided by
    ``fpr_limit``, so that 1.0 is perfect.

    Regions are 8-connected (diagonal neighbours join), within each image only: anomalib labels the masks
    with ``cv2.connectedComponents`` (default connectivity 8) on the CPU and kornia's 3x3 max-pool
    propagation (also 8-connected) on the GPU. Unlike anomalib, which resamples per-region ROC curves on a
    common index grid, every threshold is evaluated exactly, in one sort of the pixel scores.

    Args:
        maps: Anomaly scores, float ``(N, H, W)``, higher meaning more anomalous.
        masks: Ground-truth defect masks, boolean, same shape.
        fpr_limit: The FPR up to which the curve is integrated, in ``(0, 1]``; 0.3 as in MVTec AD.

    Returns:
        AUPRO in ``[0, 1]``; NaN when the masks hold no defect region or no clean pixel.

    Raises:
        ValueError: If the shapes differ or are not ``(N, H, W)``, a score is not finite, or ``fpr_limit``
            is not in ``(0, 1]``.
    """
    scores, truth = _as_maps_and_masks(maps, masks)
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    regions, n_regions = ndimage.label(truth, structure=_REGION_STRUCTURE)
    if n_regions == 0 or truth.all():
        return float("nan")
    fpr, pro = _pro_curve(scores.ravel(), regions.ravel(), int(n_regions), fpr_limit)
    return _area_up_to(fpr, pro, fpr_limit) / fpr_limit
