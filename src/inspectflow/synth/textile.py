"""Deterministic synthetic stand-in for the Kaggle "Textile Defect Detection" dataset.

Writes the dataset's real on-disk layout, so the ingest code paths run unchanged on synthetic data:

* ``train64.h5`` / ``test64.h5``: one HDF5 dataset ``images``, uint8 ``(N, 64, 64, 1)``.
* ``train64.csv`` / ``test64.csv``: columns :data:`CSV_COLUMNS`; ``index`` is the row in the matching
  ``images`` array, ``angle`` the rotation of the patch in degrees, ``indication_type`` the class name and
  ``indication_value`` its position in :data:`~inspectflow.config.TEXTILE_CLASSES`.

Every patch is a plain-weave fabric texture drawn directly in coordinates rotated by ``angle`` (so rotation
needs no resampling and has no border artefacts), with one bold defect per class. The same ``(n, seed,
test_fraction)`` always gives byte-identical files (for a given h5py/HDF5 build).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import numpy.typing as npt
import pandas as pd

from inspectflow.config import TEXTILE_CLASSES

SIDE = 64
CSV_COLUMNS = ["index", "angle", "indication_type", "indication_value", "split"]
SPLITS = ("train", "test")
#: The source dataset rotates its patches in 20-degree steps.
ANGLES = np.arange(0, 360, 20)

FloatArray = npt.NDArray[np.float64]
_Drawer = Callable[[FloatArray, FloatArray, FloatArray, float, np.random.Generator], FloatArray]

# Pixel centres relative to the patch centre; the texture is rendered at 2x and averaged down to
# anti-alias the sharp thread edges of the weave.
_COORDS_1X = np.arange(SIDE, dtype=np.float64) - (SIDE - 1) / 2
_COORDS_2X = (np.arange(2 * SIDE, dtype=np.float64) + 0.5) / 2 - SIDE / 2


def file_names(split: str) -> tuple[str, str]:
    """Returns the ``(images, labels)`` file names of one split, such as ``("train64.h5", "train64.csv")``."""
    return f"{split}{SIDE}.h5", f"{split}{SIDE}.csv"


def synthesize_textile(
    out_dir: Path, n: int = 600, seed: int = 0, test_fraction: float = 0.2
) -> dict[str, int]:
    """Writes a synthetic textile-defect dataset in the Kaggle layout.

    The ``n`` images are spread evenly over the classes (the ``n % 6`` remainder goes to the first classes)
    and each class is split into train and test with ``test_fraction``, keeping at least one image of every
    class in each split. Rows of each split are shuffled so that classes are interleaved as in the source.

    Args:
        out_dir: Directory to write to; created if missing.
        n: Total number of images, at least 12 (one train and one test image per class).
        seed: Seed of everything random; the same arguments always give the same bytes.
        test_fraction: Share of every class that goes to the test split, in ``(0, 1)``.

    Returns:
        Number of images per split, such as ``{"train": 480, "test": 120}``.

    Raises:
        ValueError: If ``n`` is below 12 or ``test_fraction`` is outside ``(0, 1)``.
        FileExistsError: If any of the four output files already exists in ``out_dir``; nothing is
            written then.
    """
    n_classes = len(TEXTILE_CLASSES)
    if n < 2 * n_classes:
        raise ValueError(
            f"n must be at least {2 * n_classes} (one train and one test image per class), got {n}"
        )
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")

    out_dir = Path(out_dir)
    targets = [out_dir / name for split in SPLITS for name in file_names(split)]
    existing = [str(path) for path in targets if path.exists()]
    if existing:
        raise FileExistsError(f"refusing to overwrite existing dataset file(s): {', '.join(existing)}")

    per_class = np.full(n_classes, n // n_classes)
    per_class[: n % n_classes] += 1
    n_test = np.clip(np.round(per_class * test_fraction).astype(int), 1, per_class - 1)

    # One child seed for the split plan and one per image: an image's pixels depend only on (seed, its
    # position in the plan), not on how many random numbers other images consumed.
    plan_seq, *image_seqs = np.random.SeedSequence(seed).spawn(n + 1)
    plan_rng = np.random.default_rng(plan_seq)
    labels = np.repeat(np.arange(n_classes), per_class)
    is_test = np.concatenate([np.arange(count) < t for count, t in zip(per_class, n_test, strict=True)])

    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for split, in_split in zip(SPLITS, (~is_test, is_test), strict=True):
        members = plan_rng.permutation(np.flatnonzero(in_split))
        images = np.empty((len(members), SIDE, SIDE, 1), dtype=np.uint8)
        angles = np.empty(len(members), dtype=np.int64)
        for row, member in enumerate(members):
            rng = np.random.default_rng(image_seqs[member])
            angles[row] = rng.choice(ANGLES)
            images[row, :, :, 0] = _render(int(labels[member]), float(angles[row]), rng)
        _write_split(out_dir, split, images, angles, labels[members])
        counts[split] = len(members)
    return counts


def _write_split(
    out_dir: Path,
    split: str,
    images: npt.NDArray[np.uint8],
    angles: npt.NDArray[np.int64],
    labels: npt.NDArray[np.int64],
) -> None:
    h5_name, csv_name = file_names(split)
    # Mode "x" fails rather than truncates if a file appeared since the up-front check.
    with h5py.File(out_dir / h5_name, "x") as f:
        # No creation timestamp, so that the same arguments give a byte-identical file.
        f.create_dataset("images", data=images, compression="gzip", track_times=False)
    table = pd.DataFrame(
        {
            "index": np.arange(len(images)),
            "angle": angles,
            "indication_type": [TEXTILE_CLASSES[label] for label in labels],
            "indication_value": labels,
            "split": split,
        },
        columns=CSV_COLUMNS,
    )
    with open(out_dir / csv_name, "x", newline="") as f:
        table.to_csv(f, index=False)


def _render(label: int, angle: float, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """Draws one patch of class ``TEXTILE_CLASSES[label]`` rotated by ``angle`` degrees."""
    theta = np.deg2rad(angle)
    base = rng.uniform(0.4, 0.6)
    contrast = rng.uniform(0.25, 0.4)
    texture = _weave(*_rotated_grid(_COORDS_2X, theta), rng)
    texture = texture.reshape(SIDE, 2, SIDE, 2).mean(axis=(1, 3))
    u, v = _rotated_grid(_COORDS_1X, theta)
    # Uneven lighting across the patch.
    shading = rng.uniform(-0.04, 0.04) * u / SIDE * 2 + rng.uniform(-0.04, 0.04) * v / SIDE * 2
    image = base + contrast * (texture - texture.mean()) + shading
    image = _DRAWERS[TEXTILE_CLASSES[label]](image, u, v, base, rng)
    image = image + rng.normal(0.0, rng.uniform(0.01, 0.025), image.shape)
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def _rotated_grid(coords: FloatArray, theta: float) -> tuple[FloatArray, FloatArray]:
    """Returns the fabric coordinates ``(u, v)`` of every pixel of a grid rotated by ``theta`` radians."""
    y, x = np.meshgrid(coords, coords, indexing="ij")
    cos, sin = np.cos(theta), np.sin(theta)
    return cos * x + sin * y, -sin * x + cos * y


def _weave(u: FloatArray, v: FloatArray, rng: np.random.Generator) -> FloatArray:
    """Plain-weave texture in ``[0, 1]``: warp threads run along ``u``, weft threads along ``v``."""
    period = rng.uniform(4.0, 7.0)
    pu = u / period + rng.uniform(0, 2)
    pv = v / period + rng.uniform(0, 2)
    ju, jv = np.floor(pu).astype(np.int64), np.floor(pv).astype(np.int64)
    fu, fv = pu - ju, pv - jv
    # Yarns vary in thickness and brightness from thread to thread.
    warp_gain = 1 + rng.uniform(0.04, 0.12) * rng.standard_normal(2 * SIDE)
    weft_gain = 1 + rng.uniform(0.04, 0.12) * rng.standard_normal(2 * SIDE)
    # A round yarn seen from above: elliptic brightness profile across it (bright crown, dark gap to the
    # next thread), and a parabolic rise along its float, highest between crossings.
    bump_u, bump_v = 4 * fu * (1 - fu), 4 * fv * (1 - fv)
    warp = np.sqrt(bump_v) * (0.7 + 0.3 * bump_u) * warp_gain[jv % (2 * SIDE)]
    weft = np.sqrt(bump_u) * (0.7 + 0.3 * bump_v) * weft_gain[ju % (2 * SIDE)]
    # Plain weave: warp and weft alternate on top from one crossing to the next; the lower thread is shaded.
    warp_on_top = (ju + jv) % 2 == 0
    weft_tone = rng.uniform(0.75, 0.95)
    return np.where(warp_on_top, warp, weft_tone * weft)


def _centre(rng: np.random.Generator, spread: float) -> tuple[float, float]:
    cu, cv = rng.uniform(-spread, spread, 2)
    return float(cu), float(cv)


def _harmonic_radius(
    angle: FloatArray, radius: float, amplitude: float, rng: np.random.Generator
) -> FloatArray:
    """An irregular closed outline: ``radius`` modulated by a few random low harmonics of ``angle``."""
    wobble = np.zeros_like(angle)
    for k in range(2, 6):
        wobble += rng.uniform(0, amplitude / k) * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
    return radius * (1 + wobble)


def _good(
    image: FloatArray, u: FloatArray, v: FloatArray, base: float, rng: np.random.Generator
) -> FloatArray:
    return image


def _color(
    image: FloatArray, u: FloatArray, v: FloatArray, base: float, rng: np.random.Generator
) -> FloatArray:
    """A large soft-edged dye stain (blob or band) that shifts the mean but keeps the weave visible."""
    softness = rng.uniform(2.5, 5.0)
    if rng.random() < 0.6:
        cu, cv = _centre(rng, 12)
        du, dv = u - cu, v - cv
        outline = _harmonic_radius(np.arctan2(dv, du), rng.uniform(16, 26), 0.5, rng)
        inside = outline - np.hypot(du, dv)
    else:
        phi = rng.uniform(0, np.pi)
        offset = rng.uniform(-14, 14)
        inside = rng.uniform(9, 14) - np.abs(np.cos(phi) * u + np.sin(phi) * v - offset)
    mask = 1 / (1 + np.exp(-inside / softness))
    # Darker or lighter by at least 0.25, inside the range where the weave is still visible.
    target = np.clip(base + rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.45), 0.1, 0.85)
    stained = target + 0.7 * (image - base)
    return image + mask * (stained - image)


def _cut(
    image: FloatArray, u: FloatArray, v: FloatArray, base: float, rng: np.random.Generator
) -> FloatArray:
    """A straight, sharp dark gap a few pixels wide crossing most of the patch."""
    cu, cv = _centre(rng, 10)
    phi = rng.uniform(0, np.pi)
    along = np.cos(phi) * (u - cu) + np.sin(phi) * (v - cv)
    across = np.abs(-np.sin(phi) * (u - cu) + np.cos(phi) * (v - cv))
    half_width = rng.uniform(1.0, 2.0)
    half_length = rng.uniform(22, 40)
    # Cut yarn ends make the edges slightly ragged.
    ragged = half_width + 0.4 * np.sin(along * rng.uniform(0.8, 1.6) + rng.uniform(0, 2 * np.pi))
    lengthwise = np.clip(half_length + 0.5 - np.abs(along), 0, 1)
    gap = np.clip(ragged + 0.5 - across, 0, 1) * lengthwise
    shadow = np.exp(-(((across - ragged) / 1.2) ** 2)) * lengthwise * (1 - gap)
    image = image * (1 - 0.4 * shadow)
    return image + gap * (rng.uniform(0.02, 0.1) - image)


def _hole(
    image: FloatArray, u: FloatArray, v: FloatArray, base: float, rng: np.random.Generator
) -> FloatArray:
    """A roughly round near-black hole with a frayed, darkened rim."""
    cu, cv = _centre(rng, 14)
    du, dv = u - cu, v - cv
    dist = np.hypot(du, dv)
    outline = _harmonic_radius(np.arctan2(dv, du), rng.uniform(7, 12), 0.35, rng)
    outline = outline + rng.uniform(-1.0, 1.0, dist.shape)  # frayed fibres
    hole = np.clip(outline + 0.5 - dist, 0, 1)
    rim = np.clip(outline + 3.0 - dist, 0, 1) * (1 - hole)
    image = image * (1 - 0.4 * rim)
    return image + hole * (rng.uniform(0.0, 0.05) - image)


def _thread(
    image: FloatArray, u: FloatArray, v: FloatArray, base: float, rng: np.random.Generator
) -> FloatArray:
    """A thin bright loose thread: a smooth random curve (cubic Bézier) lying on the fabric."""
    cu, cv = _centre(rng, 10)
    phi = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.cos(phi), np.sin(phi)])
    normal = np.array([-direction[1], direction[0]])
    half_length = rng.uniform(16, 30)
    steps = np.array([-1.0, -1 / 3, 1 / 3, 1.0])[:, None] * half_length * direction
    bends = np.array([0.0, *rng.uniform(-16, 16, 2), 0.0])[:, None] * normal
    control = np.array([cu, cv]) + steps + bends
    t = np.linspace(0, 1, 160)[:, None]
    basis = np.hstack([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3])
    curve = basis @ control
    # Distance to the densely sampled curve (spacing about 0.5 px), only for pixels near its bounding box:
    # everything farther is untouched by the thread and its shadow.
    near = (
        (u > curve[:, 0].min() - 4)
        & (u < curve[:, 0].max() + 4)
        & (v > curve[:, 1].min() - 4)
        & (v < curve[:, 1].max() + 4)
    )
    dist = np.full(u.shape, np.inf)
    dist[near] = np.sqrt(
        ((u[near, None] - curve[:, 0]) ** 2 + (v[near, None] - curve[:, 1]) ** 2).min(axis=1)
    )
    half_width = rng.uniform(0.5, 1.0)
    fibre = np.clip(half_width + 0.5 - dist, 0, 1)
    shadow = np.exp(-(((dist - half_width - 1.0) / 0.8) ** 2)) * (1 - fibre)
    image = image * (1 - 0.3 * shadow)
    return image + fibre * (rng.uniform(0.93, 1.0) - image)


def _metal(
    image: FloatArray, u: FloatArray, v: FloatArray, base: float, rng: np.random.Generator
) -> FloatArray:
    """One to four small specular metal flakes: saturated bright cores with a dark halo."""
    for _ in range(rng.integers(1, 5)):
        cu, cv = _centre(rng, 22)
        phi = rng.uniform(0, np.pi)
        du = np.cos(phi) * (u - cu) + np.sin(phi) * (v - cv)
        dv = -np.sin(phi) * (u - cu) + np.cos(phi) * (v - cv)
        radius = rng.uniform(2.0, 3.5)
        dist = np.hypot(du, dv * rng.uniform(1.0, 1.8))  # elongated flake
        core = np.clip(radius + 0.5 - dist, 0, 1)
        halo = np.exp(-(((dist - radius - 1.0) / 2.0) ** 2)) * (1 - core)
        image = image * (1 - 0.7 * halo)
        image = image + core * (rng.uniform(0.97, 1.05) - image)
    return image


_DRAWERS: dict[str, _Drawer] = {
    "good": _good,
    "color": _color,
    "cut": _cut,
    "hole": _hole,
    "thread": _thread,
    "metal_contamination": _metal,
}
