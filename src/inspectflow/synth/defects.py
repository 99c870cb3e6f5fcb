"""Synthetic defects drawn on good parts: what the anomaly task's defect head learns to find.

A line without labelled defects still knows what a defect looks like in general: a thin curve (a crack, a
scratch) or a blotch (a stain, a dent) that differs from its surroundings, darker more often than lighter.
Drawn on real good images, such defects teach a small segmenter to find local departures from the texture
around them (as DRAEM and CutPaste teach theirs), without one real defect. Sizes follow the image's shorter
side, so the same shapes suit a 288-pixel casting and a 256x640 commutator.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

#: The share of defects drawn as thin curves; the rest are blotches.
CURVE_SHARE = 2 / 3
#: The share of defects darker than their surroundings; the rest are lighter.
DARK_SHARE = 0.75
#: A defect's contrast, in the image's own standard deviations of intensity.
CONTRAST = (1.0, 3.0)
#: Where the defect's softened outline counts as defect in the target mask.
MASK_LEVEL = 0.25


def draw_defect(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic defect on a good image.

    Args:
        image: A uint8 image ``(H, W, C)``.
        rng: The source of the defect's shape, place, polarity and contrast.

    Returns:
        The image with the defect (uint8, same shape) and its mask ``(H, W)`` bool.
    """
    height, width = image.shape[:2]
    side = min(height, width)
    if rng.random() < CURVE_SHARE:
        outline = ndimage.gaussian_filter(_curve(height, width, side, rng), 0.7)
    else:
        outline = ndimage.gaussian_filter(_blotch(height, width, side, rng), 1.0)
    sign = -1.0 if rng.random() < DARK_SHARE else 1.0
    contrast = rng.uniform(*CONTRAST) * (float(image.std()) + 1.0)
    drawn = image.astype(np.float32) + sign * contrast * outline[..., None]
    return np.clip(drawn, 0, 255).astype(np.uint8), outline > MASK_LEVEL


def _curve(height: int, width: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """A thin random walk of 3 to 8 straight pieces, 1 to 3 pixels wide: float ``(H, W)`` in {0, 1}."""
    layer = Image.new("L", (width, height), 0)
    points = [(rng.uniform(0, width), rng.uniform(0, height))]
    angle = rng.uniform(0, 2 * np.pi)
    for _ in range(int(rng.integers(3, 9))):
        angle += rng.normal(0, 0.5)
        step = rng.uniform(side / 50, side / 10)
        x, y = points[-1]
        points.append((x + step * np.cos(angle), y + step * np.sin(angle)))
    ImageDraw.Draw(layer).line(points, fill=1, width=int(rng.integers(1, 4)))
    return np.asarray(layer, dtype=np.float32)


def _blotch(height: int, width: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """Half of a box of smooth noise, the box 1/32 to 1/6 of the shorter side: float ``(H, W)`` in {0, 1}."""
    noise = ndimage.gaussian_filter(rng.normal(size=(height, width)), rng.uniform(side / 80, side / 30))
    box_height = int(rng.integers(max(2, side // 32), max(3, side // 6)))
    box_width = int(rng.integers(max(2, side // 32), max(3, side // 6)))
    top = int(rng.integers(0, height - box_height + 1))
    left = int(rng.integers(0, width - box_width + 1))
    box = np.zeros((height, width), bool)
    box[top : top + box_height, left : left + box_width] = True
    return (box & (noise > np.median(noise[box]))).astype(np.float32)
