"""Deterministic synthetic stand-in for one category of the MVTec AD anomaly-detection benchmark.

Writes the benchmark's real on-disk layout, so the ingest code paths run unchanged on synthetic data:

* ``train/good/NNN.png``: defect-free training images; 8-bit grayscale, ids counted from ``000``.
* ``test/good/NNN.png``: defect-free test images.
* ``test/{scratch,spot}/NNN.png``: defective test images, one folder per defect kind.
* ``ground_truth/{scratch,spot}/NNN_mask.png``: the 0/255 defect masks, for defective images only.

Every image is the same woven surface (two crossing thread waves over faint horizontal brushing) with its
own weave phase, brightness and sensor noise, so good parts are alike but never identical. A ``scratch`` is
a thin straight bright or dark line, a ``spot`` a small dark round blob; each covers 1 % to 5 % of the
image. The masks are exact: the pixels the defect altered.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

#: The defect kinds, in the order their test folders are written.
KINDS = ("scratch", "spot")

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Share of the image a defect's mask covers: drawing is repeated until it falls in this range.
_DEFECT_AREA = (0.01, 0.05)
#: Weave period, in fractions of the image side.
_PERIOD = 1 / 8
#: Sensor noise standard deviation, in gray levels.
_NOISE = 3.0


def write_mvtec(
    root: Path,
    *,
    train: int = 24,
    test_good: int = 8,
    test_per_kind: int = 6,
    side: int = 64,
    seed: int = 0,
) -> Path:
    """Writes a synthetic MVTec AD category: ``train/good``, ``test/<kind>`` and ``ground_truth/<kind>``.

    An image depends only on ``seed``, its folder and its number, so changing one count leaves the other
    folders' images as they were.

    Args:
        root: The category folder to write; created if missing, and it must hold nothing yet.
        train: Defect-free training images, at least 1.
        test_good: Defect-free test images, at least 1.
        test_per_kind: Defective test images of each kind in :data:`KINDS`, at least 1.
        side: Side of the square images in pixels, at least 32.
        seed: Seed of everything random; the same arguments always give the same bytes.

    Returns:
        ``root``.

    Raises:
        ValueError: If a count or ``side`` is out of range.
        FileExistsError: If ``root`` exists and is not an empty folder.
    """
    for name, count in (("train", train), ("test_good", test_good), ("test_per_kind", test_per_kind)):
        if count < 1:
            raise ValueError(f"{name} must be at least 1, got {count}")
    if side < 32:
        raise ValueError(f"side must be at least 32, got {side}")
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"refusing to write an MVTec category into non-empty {root}")

    folders: list[tuple[str, str, int]] = [("train", "good", train), ("test", "good", test_good)]
    folders += [("test", kind, test_per_kind) for kind in KINDS]
    for group, (split, kind, count) in enumerate(folders):
        image_dir = root / split / kind
        image_dir.mkdir(parents=True)
        mask_dir = root / "ground_truth" / kind
        if kind != "good":
            mask_dir.mkdir(parents=True)
        for number in range(count):
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(group, number)))
            image, mask = _render(side, kind, rng)
            _save_png(image_dir / f"{number:03d}.png", image)
            if mask is not None:
                _save_png(mask_dir / f"{number:03d}_mask.png", np.where(mask, 255, 0).astype(np.uint8))
    return root


def _save_png(path: Path, pixels: npt.NDArray[np.uint8]) -> None:
    # Mode "x" fails rather than overwrites.
    with open(path, "xb") as f:
        Image.fromarray(pixels).save(f, format="PNG")


def _render(side: int, kind: str, rng: np.random.Generator) -> tuple[npt.NDArray[np.uint8], BoolArray | None]:
    """One image of the surface and, for a defect kind, the defect drawn on it and its mask."""
    coords = np.arange(side, dtype=np.float64)
    y, x = np.meshgrid(coords, coords, indexing="ij")
    surface = _surface(y, x, rng)
    mask = None
    if kind != "good":
        mask = _defect_mask(_DRAWERS[kind], y, x, rng)
        if kind == "scratch":
            surface = np.where(mask, surface + rng.choice([-1.0, 1.0]) * rng.uniform(60, 80), surface)
        else:
            surface = np.where(mask, 0.3 * surface + rng.uniform(0, 10), surface)
    surface += rng.normal(0.0, _NOISE, surface.shape)
    return np.clip(np.rint(surface), 0, 255).astype(np.uint8), mask


def _surface(y: FloatArray, x: FloatArray, rng: np.random.Generator) -> FloatArray:
    """The defect-free woven surface in gray levels: crossing thread waves, brushing, a brightness offset."""
    side = y.shape[0]
    wavenumber = 2 * np.pi / (_PERIOD * side * rng.uniform(0.97, 1.03))
    phase_y, phase_x = rng.uniform(0, 2 * np.pi, 2)
    warp = np.cos(wavenumber * x + phase_x)
    weft = np.cos(wavenumber * y + phase_y)
    # Over-under weave: the threads cross in a checkerboard of raised and sunken knots.
    weave = 0.5 * (warp + weft) + 0.5 * warp * weft
    # Brushing: every row a little brighter or darker, smoothed over a few rows.
    rows = np.convolve(rng.normal(0.0, 1.0, side + 4), np.ones(5) / 5, mode="valid")
    brightness = 128 + rng.uniform(-8, 8)
    return brightness + 22 * weave + 6 * rows[:, np.newaxis]


def _defect_mask(
    draw: Callable[[FloatArray, FloatArray, np.random.Generator], BoolArray],
    y: FloatArray,
    x: FloatArray,
    rng: np.random.Generator,
) -> BoolArray:
    """Draws with ``draw`` until the defect covers :data:`_DEFECT_AREA` of the image."""
    while True:
        mask = draw(y, x, rng)
        if _DEFECT_AREA[0] <= mask.mean() <= _DEFECT_AREA[1]:
            return mask


def _scratch(y: FloatArray, x: FloatArray, rng: np.random.Generator) -> BoolArray:
    """A thin straight line segment at a random position and angle: pixels within its half-width."""
    side = y.shape[0]
    cy, cx = rng.uniform(0.25, 0.75, 2) * side
    length = rng.uniform(0.35, 0.6) * side
    angle = rng.uniform(0, np.pi)
    dy, dx = np.sin(angle), np.cos(angle)
    # Position along the segment, clipped to its ends, then the distance to that nearest point.
    along = np.clip((y - cy) * dy + (x - cx) * dx, -length / 2, length / 2)
    distance = np.hypot(y - (cy + along * dy), x - (cx + along * dx))
    return distance <= max(1.0, 0.015 * side)


def _spot(y: FloatArray, x: FloatArray, rng: np.random.Generator) -> BoolArray:
    """A small slightly elliptical blob at a random position."""
    side = y.shape[0]
    cy, cx = rng.uniform(0.2, 0.8, 2) * side
    radius = rng.uniform(0.06, 0.09) * side
    squash = rng.uniform(1.0, 1.3)
    angle = rng.uniform(0, np.pi)
    du = np.cos(angle) * (x - cx) + np.sin(angle) * (y - cy)
    dv = -np.sin(angle) * (x - cx) + np.cos(angle) * (y - cy)
    return np.hypot(du, dv * squash) <= radius


_DRAWERS: dict[str, Callable[[FloatArray, FloatArray, np.random.Generator], BoolArray]] = {
    "scratch": _scratch,
    "spot": _spot,
}
