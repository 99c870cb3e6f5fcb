"""Pixel AUROC and AUPRO of anomaly maps, against hand-worked values and a slow per-threshold reference."""

import re

import numpy as np
import pytest
from scipy import ndimage

from inspectflow.metrics.anomaly import aupro, pixel_auroc


def reference_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float) -> float:
    """AUPRO the obvious way: every distinct score as a threshold, overlaps and FPR counted directly."""
    regions = []
    for index, mask in enumerate(masks):  # 8-connected regions, each image on its own
        labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
        for label in range(1, n + 1):
            region = np.zeros(masks.shape, dtype=bool)
            region[index] = labels == label
            regions.append(region)
    clean = ~masks
    fprs, pros = [0.0], [0.0]
    for threshold in np.unique(maps)[::-1]:
        hit = maps >= threshold
        fprs.append(hit[clean].mean())
        pros.append(np.mean([hit[region].mean() for region in regions]))
    fpr, pro = np.array(fprs), np.array(pros)
    inside = fpr <= fpr_limit
    x, y = fpr[inside], pro[inside]
    if x[-1] < fpr_limit:
        after = int(np.argmax(fpr > fpr_limit))
        before = after - 1
        y_at = pro[before] + (pro[after] - pro[before]) * (fpr_limit - fpr[before]) / (
            fpr[after] - fpr[before]
        )
        x, y = np.append(x, fpr_limit), np.append(y, y_at)
    return float(np.trapezoid(y, x)) / fpr_limit


def blobs(seed: int, n: int = 3, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Masks with 2-3 discs per image (plus one clean image) and noisy maps that favour the discs."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    masks = np.zeros((n + 1, size, size), dtype=bool)
    for image in masks[:n]:
        for _ in range(rng.integers(2, 4)):
            row, col, radius = rng.integers(0, size), rng.integers(0, size), rng.uniform(1.0, 3.5)
            image |= (rows - row) ** 2 + (cols - col) ** 2 <= radius**2
    # Rounded to two decimals, so that many pixels tie on a score.
    maps = np.round(rng.normal(size=masks.shape) + 1.5 * masks * rng.uniform(0.0, 2.0, masks.shape), 2)
    return maps, masks


def perfect(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A map equal to the mask, with noise on the clean pixels that stays below every defect score."""
    _, masks = blobs(seed)
    rng = np.random.default_rng(seed)
    maps = np.where(masks, 1.0 + rng.uniform(0.0, 0.1, masks.shape), rng.uniform(0.0, 0.5, masks.shape))
    return maps, masks


def two_regions() -> tuple[np.ndarray, np.ndarray]:
    """One image of 14 pixels: region A (1 pixel), region B (3 pixels, found later), 10 clean pixels."""
    masks = np.zeros((1, 2, 7), dtype=bool)
    masks[0, 0, 0] = True  # A
    masks[0, 1, 3:6] = True  # B, not touching A
    maps = np.zeros((1, 2, 7))
    maps[0, 0, 0] = 0.9  # A found before any false positive
    maps[0, 0, 1:3] = [0.8, 0.7]  # then two false positives (FPR 0.2)
    maps[0, 1, 3] = 0.65  # one pixel of B
    maps[0, 0, 3] = 0.6  # a third false positive (FPR 0.3)
    maps[0, 1, 4:6] = 0.55  # the rest of B
    maps[0, 0, 4:] = [0.5, 0.4, 0.3]
    maps[0, 1, [0, 1, 2, 6]] = [0.25, 0.2, 0.15, 0.1]
    return maps, masks


def test_perfect_map_scores_one() -> None:
    maps, masks = perfect()
    assert pixel_auroc(maps, masks) == 1.0
    assert aupro(maps, masks) == pytest.approx(1.0, abs=1e-12)


def test_inverted_map_scores_zero() -> None:
    maps, masks = perfect()
    assert pixel_auroc(-maps, masks) == 0.0
    assert aupro(-maps, masks) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("fpr_limit", "expected"),
    [
        # Curve: (0, 0) (0, 1/2) (0.2, 1/2) (0.2, 2/3) (0.3, 2/3) (0.3, 1) ...; each region weighs 1/2.
        (0.3, (0.5 * 0.2 + 2 / 3 * 0.1) / 0.3),
        (0.25, (0.5 * 0.2 + 2 / 3 * 0.05) / 0.25),
        (0.1, 0.5),
    ],
)
def test_aupro_two_regions_by_hand(fpr_limit: float, expected: float) -> None:
    maps, masks = two_regions()
    assert aupro(maps, masks, fpr_limit) == pytest.approx(expected, abs=1e-12)
    assert reference_aupro(maps, masks, fpr_limit) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("fpr_limit", [0.3, 0.05, 1.0])
def test_aupro_matches_reference(seed: int, fpr_limit: float) -> None:
    maps, masks = blobs(seed)
    assert aupro(maps, masks, fpr_limit) == pytest.approx(reference_aupro(maps, masks, fpr_limit), abs=1e-6)


def test_aupro_matches_reference_without_ties() -> None:
    maps, masks = blobs(7)
    maps = maps + np.random.default_rng(7).uniform(0.0, 1e-3, maps.shape)
    assert aupro(maps, masks) == pytest.approx(reference_aupro(maps, masks, 0.3), abs=1e-6)


def test_regions_are_8_connected_within_each_image() -> None:
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 1, 2] = True  # one region through a diagonal step
    masks[1, 0, 0] = True  # a second region, under the first one's corner in the next image
    maps = np.where(masks, 0.0, 0.5)
    maps[0, 0, 0] = 1.0  # only the corner pixel of the first region is found before any false positive
    # 8-connected, per image: overlaps 1/3 and 0 -> 1/6. (4-connected: 1/3; merged across images: 1/4.)
    assert aupro(maps, masks) == pytest.approx(1 / 6, abs=1e-12)


def test_no_defect_or_no_clean_pixel_gives_nan() -> None:
    maps = np.random.default_rng(0).uniform(size=(2, 4, 4))
    for masks in (np.zeros(maps.shape, dtype=bool), np.ones(maps.shape, dtype=bool)):
        assert np.isnan(pixel_auroc(maps, masks))
        assert np.isnan(aupro(maps, masks))


@pytest.mark.parametrize("metric", [pixel_auroc, aupro])
def test_shape_errors_name_both_shapes(metric) -> None:
    with pytest.raises(ValueError, match=re.escape("(2, 4, 4)") + ".*" + re.escape("(2, 4, 5)")):
        metric(np.zeros((2, 4, 4)), np.zeros((2, 4, 5), dtype=bool))
    with pytest.raises(ValueError, match=re.escape("(4, 4)") + ".*" + re.escape("(4, 4)")):
        metric(np.zeros((4, 4)), np.zeros((4, 4), dtype=bool))


def test_bad_limit_and_non_finite_scores_are_refused() -> None:
    maps, masks = two_regions()
    for fpr_limit in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fpr_limit"):
            aupro(maps, masks, fpr_limit)
    maps[0, 0, 5] = np.nan
    for metric in (pixel_auroc, aupro):
        with pytest.raises(ValueError, match="finite"):
            metric(maps, masks)
