"""Deterministic synthetic stand-in for the DAGM 2007 weakly-supervised surface-defect benchmark.

Writes the benchmark's real on-disk layout, so the ingest code paths run unchanged on synthetic data. For
every class ``k``:

* ``Class{k}/Train/NNNN.PNG`` and ``Class{k}/Test/NNNN.PNG``: 8-bit grayscale images; ids are counted from
  ``0000`` in each split.
* ``Class{k}/{Train,Test}/Label/NNNN_label.PNG``: the 0/255 defect mask, for defective images only.
* ``Class{k}/{Train,Test}/Label/Labels.txt``: a header line ``1``, then one tab-separated line per image in id
  order, byte for byte as DAGM writes them: ``id, 1, NNNN.PNG, 0, NNNN_label.PNG`` for a defective image and
  ``id, 0, NNNN.PNG, 0, 0`` plus a trailing tab for a clean one, every line ending in CRLF.

As in DAGM, every class has its own statistical background texture and its own kind of defect (see
:data:`_STYLES`). Unlike DAGM's weak labels, which are loose ellipses around the defect, the masks here are
exact: the pixels where the drawn defect has at least half its strength.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

MAX_CLASSES = 10
SPLITS = ("Train", "Test")

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Sensor noise added on top of texture and defect, in background standard deviations; it keeps the inside
#: of texture-wiping defects from being perfectly flat.
_GRAIN = 0.12


@dataclass(frozen=True)
class _Noise:
    """Gaussian-filtered white noise; the filter's standard deviations are fractions of the image side.

    ``along`` runs at ``angle`` degrees from the x axis: a large ``along`` and small ``across`` give streaks.
    """

    weight: float
    along: float
    across: float
    angle: float = 0.0


@dataclass(frozen=True)
class _Waves:
    """Interference fringes: ``count`` circular waves from sources outside the image.

    Their periods are drawn from ``period``, in fractions of the image side.
    """

    weight: float
    count: int
    period: tuple[float, float]


@dataclass(frozen=True)
class _Defect:
    """One kind of defect and how it alters the texture.

    ``shift`` moves defect pixels by that many background standard deviations (negative: darker), ``flatten``
    is the share of the texture it wipes out and ``scale`` multiplies the kind's default sizes.
    """

    kind: Literal["ellipse", "scratch", "spots", "smudge"]
    shift: float
    flatten: float
    scale: float = 1.0


@dataclass(frozen=True)
class _Style:
    """Background texture and defect of one class; ``mean`` and ``std`` are gray levels."""

    mean: float
    std: float
    noise: tuple[_Noise, ...]
    defect: _Defect
    waves: _Waves | None = None


_STYLES: tuple[_Style, ...] = (
    # 1: smooth low-frequency noise under faint fringes; elongated dark ellipses that smooth the texture.
    _Style(
        mean=75,
        std=25,
        noise=(_Noise(1.0, 0.012, 0.012), _Noise(0.35, 0.0015, 0.0015)),
        waves=_Waves(0.6, 5, (0.015, 0.04)),
        defect=_Defect("ellipse", shift=-1.5, flatten=0.7),
    ),
    # 2: fine-grained high-contrast noise; thin dark curved scratches.
    _Style(
        mean=105,
        std=45,
        noise=(_Noise(1.0, 0.0015, 0.0015), _Noise(0.3, 0.01, 0.01)),
        defect=_Defect("scratch", shift=-3.0, flatten=0.5),
    ),
    # 3: vertical streaks; clusters of dark spots.
    _Style(
        mean=120,
        std=35,
        noise=(_Noise(1.0, 0.08, 0.0025, angle=90), _Noise(0.25, 0.002, 0.002)),
        defect=_Defect("spots", shift=-2.5, flatten=0.5),
    ),
    # 4: coarse blotches; large soft low-contrast dark smudges.
    _Style(
        mean=170,
        std=18,
        noise=(_Noise(1.0, 0.03, 0.03), _Noise(0.5, 0.008, 0.008), _Noise(0.2, 0.0015, 0.0015)),
        defect=_Defect("smudge", shift=-2.0, flatten=0.5),
    ),
    # 5: dense fine fringes over weak blotches; larger ellipses that wipe the fringes out.
    _Style(
        mean=90,
        std=22,
        noise=(_Noise(0.4, 0.03, 0.03),),
        waves=_Waves(1.0, 8, (0.01, 0.025)),
        defect=_Defect("ellipse", shift=-0.8, flatten=1.0, scale=1.2),
    ),
    # 6: diagonal streaks; bright scratches.
    _Style(
        mean=140,
        std=30,
        noise=(_Noise(1.0, 0.05, 0.004, angle=45), _Noise(0.3, 0.0015, 0.0015)),
        defect=_Defect("scratch", shift=3.0, flatten=0.5),
    ),
    # 7: medium-grained noise; clusters of larger bright spots.
    _Style(
        mean=100,
        std=40,
        noise=(_Noise(1.0, 0.005, 0.005), _Noise(0.3, 0.04, 0.04)),
        defect=_Defect("spots", shift=2.5, flatten=0.5, scale=1.2),
    ),
    # 8: dark, horizontal hairline streaks; large bright smudges.
    _Style(
        mean=60,
        std=20,
        noise=(_Noise(1.0, 0.2, 0.0015, angle=0), _Noise(0.4, 0.03, 0.03)),
        defect=_Defect("smudge", shift=1.8, flatten=0.4, scale=1.15),
    ),
    # 9: broad fringes over fine grain; long dark scratches.
    _Style(
        mean=150,
        std=22,
        noise=(_Noise(0.5, 0.003, 0.003),),
        waves=_Waves(1.0, 3, (0.06, 0.12)),
        defect=_Defect("scratch", shift=-2.5, flatten=0.4, scale=1.25),
    ),
    # 10: bright anisotropic blotches; small strongly dark ellipses.
    _Style(
        mean=195,
        std=16,
        noise=(_Noise(1.0, 0.04, 0.012, angle=135), _Noise(0.3, 0.002, 0.002)),
        defect=_Defect("ellipse", shift=-2.5, flatten=0.3, scale=0.9),
    ),
)


def synthesize_dagm(
    out_dir: Path,
    classes: int = 2,
    n: int = 200,
    size: int = 512,
    seed: int = 0,
    test_fraction: float = 0.5,
    defect_fraction: float = 0.5,
) -> dict[str, int]:
    """Writes a synthetic surface-defect dataset in the DAGM 2007 layout.

    Each class gets ``n`` images, split into train and test with ``test_fraction``; in each split a
    ``defect_fraction`` share of the images, at random ids, carries one defect. Every split keeps at least
    one defective and one clean image. An image depends only on ``seed``, its class and its position in the
    class, so class ``k`` comes out the same whatever ``classes`` is.

    Args:
        out_dir: Directory to write the ``Class{k}`` folders into; created if missing.
        classes: Number of classes ``K``, 1 to 10; folders ``Class1`` to ``Class{K}`` are written.
        n: Images per class, train and test together; at least 4.
        size: Side of the square images in pixels; a multiple of 16, at least 32.
        seed: Seed of everything random; the same arguments always give the same bytes.
        test_fraction: Share of each class that goes to ``Test``, in ``(0, 1)``.
        defect_fraction: Share of each split that is defective, in ``(0, 1)``.

    Returns:
        Image counts over all classes, such as ``{"train": 200, "test": 200, "defective": 200}``.

    Raises:
        ValueError: If an argument is out of range.
        FileExistsError: If any ``Class{k}`` folder to be written already exists in ``out_dir``; nothing is
            written then.
    """
    if not 1 <= classes <= MAX_CLASSES:
        raise ValueError(f"classes must be between 1 and {MAX_CLASSES}, got {classes}")
    if n < 4:
        raise ValueError(f"n must be at least 4 (a defective and a clean image in each split), got {n}")
    if size < 32 or size % 16:
        raise ValueError(f"size must be a multiple of 16 and at least 32, got {size}")
    for name, fraction in (("test_fraction", test_fraction), ("defect_fraction", defect_fraction)):
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {fraction}")

    out_dir = Path(out_dir)
    class_dirs = [out_dir / f"Class{k}" for k in range(1, classes + 1)]
    existing = [str(path) for path in class_dirs if path.exists()]
    if existing:
        raise FileExistsError(f"refusing to overwrite existing DAGM class folder(s): {', '.join(existing)}")

    n_test = int(np.clip(round(n * test_fraction), 2, n - 2))
    split_sizes = (n - n_test, n_test)
    counts = {"train": 0, "test": 0, "defective": 0}
    grid = _grid(size)
    out_dir.mkdir(parents=True, exist_ok=True)
    for k, class_dir in enumerate(class_dirs, start=1):
        # One child seed for the defect plan and one per image: an image's pixels depend only on (seed,
        # class, its position in the class), not on how many random numbers other images consumed.
        plan_seq, *image_seqs = np.random.SeedSequence(seed, spawn_key=(k,)).spawn(n + 1)
        plan_rng = np.random.default_rng(plan_seq)
        first = 0
        for split, split_size in zip(SPLITS, split_sizes, strict=True):
            n_defective = int(np.clip(round(split_size * defect_fraction), 1, split_size - 1))
            defective = np.zeros(split_size, dtype=bool)
            defective[plan_rng.permutation(split_size)[:n_defective]] = True
            label_dir = class_dir / split / "Label"
            # No exist_ok: fails rather than mixes files if the folder appeared since the up-front check.
            label_dir.mkdir(parents=True)
            for number, is_defective in enumerate(defective):
                rng = np.random.default_rng(image_seqs[first + number])
                image, mask = _render(_STYLES[k - 1], grid, bool(is_defective), rng)
                _save_png(class_dir / split / f"{number:04d}.PNG", image)
                if mask is not None:
                    _save_png(label_dir / f"{number:04d}_label.PNG", np.where(mask, 255, 0).astype(np.uint8))
            with open(label_dir / "Labels.txt", "xb") as f:
                f.write(_labels_txt(defective))
            first += split_size
            counts[split.lower()] += split_size
            counts["defective"] += n_defective
    return counts


def _labels_txt(defective: BoolArray) -> bytes:
    """The ``Labels.txt`` of one split whose image ``i`` is defective where ``defective[i]``."""
    lines = ["1"]
    for number, is_defective in enumerate(defective):
        image_id = f"{number:04d}"
        if is_defective:
            lines.append(f"{image_id}\t1\t{image_id}.PNG\t0\t{image_id}_label.PNG")
        else:
            lines.append(f"{image_id}\t0\t{image_id}.PNG\t0\t0\t")
    return "".join(f"{line}\r\n" for line in lines).encode("ascii")


def _save_png(path: Path, pixels: npt.NDArray[np.uint8]) -> None:
    # Mode "x" fails rather than overwrites.
    with open(path, "xb") as f:
        Image.fromarray(pixels).save(f, format="PNG")


def _grid(size: int) -> tuple[FloatArray, FloatArray]:
    """Pixel-centre coordinates ``(y, x)`` of a ``size`` x ``size`` image."""
    coords = np.arange(size, dtype=np.float64)
    y, x = np.meshgrid(coords, coords, indexing="ij")
    return y, x


def _render(
    style: _Style, grid: tuple[FloatArray, FloatArray], defective: bool, rng: np.random.Generator
) -> tuple[npt.NDArray[np.uint8], BoolArray | None]:
    """Draws one image of ``style`` and, if ``defective``, its defect and mask.

    Everything is computed in background standard deviations and mapped to gray levels at the end, so a
    defect's ``shift`` means the same visibility on every class.
    """
    y, x = grid
    size = y.shape[0]
    # Independent Gaussian noise layers add up to one Gaussian field whose spectrum is the sum of theirs, so
    # one inverse FFT of complex white noise (no forward FFT needed) draws them all.
    white = rng.standard_normal((size, size // 2 + 1)) + 1j * rng.standard_normal((size, size // 2 + 1))
    texture = np.fft.irfft2(white * _noise_response(style.noise, size), s=(size, size))
    texture /= texture.std()
    if style.waves is not None:
        texture += style.waves.weight * _fringes(style.waves, size, rng)
    texture = (texture - texture.mean()) / texture.std()

    mask = None
    if defective:
        edge, softness = _DEFECT_EDGES[style.defect.kind](y, x, style.defect.scale, rng)
        # Strength of the defect: 1 inside, 0 outside, a linear ramp of width ``softness`` across the edge;
        # the mask is where it reaches one half, i.e. the same geometry that altered the pixels.
        alpha = np.clip(edge / softness + 0.5, 0.0, 1.0)
        texture += alpha * (style.defect.shift - style.defect.flatten * texture)
        mask = edge >= 0

    texture += rng.normal(0.0, _GRAIN, texture.shape)
    mean = style.mean + rng.uniform(-0.3, 0.3) * style.std
    std = style.std * rng.uniform(0.9, 1.1)
    return np.clip(np.rint(mean + std * texture), 0, 255).astype(np.uint8), mask


@functools.lru_cache(maxsize=64)
def _noise_response(layers: tuple[_Noise, ...], size: int) -> FloatArray:
    """Amplitude response, on the ``rfft2`` grid, that turns white noise into the sum of ``layers``.

    Each layer is an oriented Gaussian low-pass filter, scaled so that its output has unit variance before
    its weight is applied.
    """
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    power = np.zeros((size, size))
    for layer in layers:
        theta = np.deg2rad(layer.angle)
        f_along = np.cos(theta) * fx + np.sin(theta) * fy
        f_across = -np.sin(theta) * fx + np.cos(theta) * fy
        # Fourier transform of a Gaussian kernel with standard deviations ``sigma`` (pixels) along both axes.
        sigma_along, sigma_across = layer.along * size, layer.across * size
        gain = np.exp(-4 * np.pi**2 * ((sigma_along * f_along) ** 2 + (sigma_across * f_across) ** 2))
        power += layer.weight**2 * gain / gain.mean()
    response = np.sqrt(power[:, : size // 2 + 1])
    response.flags.writeable = False  # shared by every image through the cache
    return response


def _fringes(waves: _Waves, size: int, rng: np.random.Generator) -> FloatArray:
    """Sum of circular waves from random sources 0.75 to 3 sides away, unit std."""
    coords = np.arange(size, dtype=np.float32)
    field = np.zeros((size, size), dtype=np.float32)
    # float32 and Python-float scalars (math, not numpy) keep this five times faster than float64; the
    # precision is ample for a texture.
    for _ in range(waves.count):
        direction = rng.uniform(0, 2 * math.pi)
        distance = rng.uniform(0.75, 3.0) * size
        dy = coords - (size / 2 + distance * math.sin(direction))
        dx = coords - (size / 2 + distance * math.cos(direction))
        radius = np.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)
        wavenumber = 2 * math.pi / (rng.uniform(*waves.period) * size)
        field += rng.uniform(0.5, 1.0) * np.cos(wavenumber * radius + rng.uniform(0, 2 * math.pi))
    return ((field - field.mean()) / field.std()).astype(np.float64)


# Each defect drawer returns ``(edge, softness)``: the signed distance in pixels to the defect's outline
# (positive inside) and the width in pixels of the soft transition across it.


def _ellipse(
    y: FloatArray, x: FloatArray, scale: float, rng: np.random.Generator
) -> tuple[FloatArray, float]:
    """An elongated ellipse at a random position and orientation, 0.6 % to 3.5 % of the image at scale 1."""
    size = y.shape[0]
    cy, cx = rng.uniform(0.2, 0.8, 2) * size
    major = rng.uniform(0.07, 0.13) * scale * size
    minor = major / rng.uniform(1.5, 2.6)
    phi = rng.uniform(0, np.pi)
    du = np.cos(phi) * (x - cx) + np.sin(phi) * (y - cy)
    dv = -np.sin(phi) * (x - cx) + np.cos(phi) * (y - cy)
    # Distance to the outline, exact along the minor axis and close enough elsewhere.
    edge = (1 - np.hypot(du / major, dv / minor)) * minor
    return edge, max(1.0, 0.08 * minor)


def _scratch(
    y: FloatArray, x: FloatArray, scale: float, rng: np.random.Generator
) -> tuple[FloatArray, float]:
    """A thin circular arc tapering to points at both ends."""
    size = y.shape[0]
    mid_y, mid_x = rng.uniform(0.3, 0.7, 2) * size
    length = rng.uniform(0.35, 0.55) * scale * size
    span = rng.uniform(0.5, 2.0)  # radians: from nearly straight to strongly curved
    radius = length / span
    # The circle's centre lies ``radius`` away from the arc's midpoint in a random direction.
    towards_centre = rng.uniform(0, 2 * np.pi)
    cy = mid_y + radius * np.sin(towards_centre)
    cx = mid_x + radius * np.cos(towards_centre)
    start = towards_centre + np.pi - span / 2
    # Position along the arc in [0, 1] for pixels within its angular span, beyond 1 elsewhere.
    t = np.mod(np.arctan2(y - cy, x - cx) - start, 2 * np.pi) / span
    half_width = max(0.8, rng.uniform(0.006, 0.009) * scale * size)
    taper = np.sin(np.pi * np.clip(t, 0.0, 1.0)) ** 0.3
    ends = [(cy + radius * np.sin(a), cx + radius * np.cos(a)) for a in (start, start + span)]
    to_ends = np.minimum(*(np.hypot(y - ey, x - ex) for ey, ex in ends))
    edge = np.where(t <= 1, half_width * taper - np.abs(np.hypot(y - cy, x - cx) - radius), -to_ends)
    return edge, 0.75


def _spots(y: FloatArray, x: FloatArray, scale: float, rng: np.random.Generator) -> tuple[FloatArray, float]:
    """A cluster of two to four small round-ish spots."""
    size = y.shape[0]
    cy, cx = rng.uniform(0.2, 0.8, 2) * size
    edge = np.full(y.shape, -np.inf)
    for _ in range(rng.integers(2, 5)):
        sy, sx = np.array([cy, cx]) + rng.normal(0.0, 0.06 * size, 2)
        radius = rng.uniform(0.03, 0.05) * scale * size
        squash = rng.uniform(1.0, 1.4)
        phi = rng.uniform(0, np.pi)
        du = np.cos(phi) * (x - sx) + np.sin(phi) * (y - sy)
        dv = -np.sin(phi) * (x - sx) + np.cos(phi) * (y - sy)
        edge = np.maximum(edge, (1 - np.hypot(du, dv * squash) / radius) * radius / squash)
    return edge, 1.0


def _smudge(y: FloatArray, x: FloatArray, scale: float, rng: np.random.Generator) -> tuple[FloatArray, float]:
    """A large blob with an irregular outline and a soft edge."""
    size = y.shape[0]
    cy, cx = rng.uniform(0.25, 0.75, 2) * size
    mean_radius = rng.uniform(0.08, 0.13) * scale * size
    angle = np.arctan2(y - cy, x - cx)
    # Outline radius modulated by a few random low harmonics of the angle.
    wobble = sum(
        rng.uniform(0, 0.25 / k) * np.cos(k * angle + rng.uniform(0, 2 * np.pi)) for k in range(2, 5)
    )
    edge = mean_radius * (1 + wobble) - np.hypot(y - cy, x - cx)
    return edge, 0.25 * mean_radius


_DEFECT_EDGES = {"ellipse": _ellipse, "scratch": _scratch, "spots": _spots, "smudge": _smudge}
