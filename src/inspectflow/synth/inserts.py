"""Deterministic synthetic dataset of indexable carbide milling inserts, intact or damaged.

Writes one folder of images per class, the layout the ``folders`` ingest format reads:

* ``Intact/NNNN.png`` and ``Damaged/NNNN.png``: RGB images whose width and height are drawn independently
  from :data:`MIN_SIDE` to :data:`MAX_SIDE` pixels (ingest resizes them); ids are counted from ``0000`` in
  each class.

Every image is a top view of one insert clamped in the pocket of a dark steel tool holder, which has
machining marks, a screw hole and sometimes its outer edge in view. The insert is square, rhombic (80 or 55
degrees) or round, with a honed lighter rim, a chip-breaker groove, a countersunk central hole holding the
clamping screw and a plain, golden (TiN) or bluish (TiAlN) coating; pose, size, light direction, brightness
and colour temperature vary from image to image. A damaged insert has one (a third of them two) bold
defects on its outline, each a broken corner, a chipped edge or a worn (flank-wear) edge; see
:data:`DAMAGES`. Damage removes part of the outline, baring the dark pocket below, so it shows at 224 px.

Shapes are filled with Pillow as coverage masks on a canvas :data:`_SUPERSAMPLE` times larger and averaged
down (anti-aliasing); shading, texture and noise are added with numpy. An image depends only on ``seed``,
its class and its id, so a larger ``n`` only adds images, and the same arguments always give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("Intact", "Damaged")
MIN_SIDE, MAX_SIDE = 160, 320
#: Insert outlines; the number is the corner angle of the rhombic ones in degrees.
SHAPES = ("square", "rhombic80", "rhombic55", "round")
#: Kinds of damage; round inserts have no corner to break.
DAMAGES = ("broken_corner", "chipped_edge", "worn_edge")

FloatArray = npt.NDArray[np.float64]

_SUPERSAMPLE = 2
_CORNER_ANGLES = {"square": 90.0, "rhombic80": 80.0, "rhombic55": 55.0}
#: Coating tints (RGB gains) and their odds: uncoated carbide, TiN gold, TiAlN blue-violet, TiCN grey.
_COATINGS = np.array([[1.0, 1.0, 1.03], [1.1, 1.0, 0.74], [0.9, 0.95, 1.13], [0.9, 0.9, 0.94]])
_COATING_ODDS = np.array([0.4, 0.2, 0.3, 0.1])
# Radial structure of an insert, in units of its inscribed radius: the honed rim, the land and the
# chip-breaker groove are rings inside the outline; the countersunk hole, the gap around the screw and the
# screw head are discs around the centre.
_RIM, _LAND, _GROOVE = 0.07, 0.15, 0.27
_COUNTERSINK, _HOLE, _SCREW = 0.4, 0.31, 0.27


def synthesize_inserts(
    out_dir: Path, n: int = 300, seed: int = 0, damaged_fraction: float = 0.5
) -> dict[str, int]:
    """Writes a synthetic dataset of intact and damaged cutting inserts as class folders.

    ``round(n * damaged_fraction)`` images, kept between 2 and ``n - 2`` so that a stratified train/test
    split has both classes on both sides, go to ``Damaged`` and the rest to ``Intact``.

    Args:
        out_dir: Directory to write the ``Intact`` and ``Damaged`` folders into; created if missing.
        n: Total number of images, at least 4.
        seed: Seed of everything random; the same arguments always give the same bytes.
        damaged_fraction: Share of the images that are damaged, in ``(0, 1)``.

    Returns:
        Number of images per class, such as ``{"Intact": 150, "Damaged": 150}``.

    Raises:
        ValueError: If ``n`` is below 4 or ``damaged_fraction`` is outside ``(0, 1)``.
        FileExistsError: If the ``Intact`` or ``Damaged`` folder already exists in ``out_dir``; nothing is
            written then.
    """
    if n < 4:
        raise ValueError(f"n must be at least 4 (two images per class), got {n}")
    if not 0.0 < damaged_fraction < 1.0:
        raise ValueError(f"damaged_fraction must be in (0, 1), got {damaged_fraction}")

    out_dir = Path(out_dir)
    class_dirs = [out_dir / name for name in CLASSES]
    existing = [str(path) for path in class_dirs if path.exists()]
    if existing:
        raise FileExistsError(f"refusing to overwrite existing class folder(s): {', '.join(existing)}")

    n_damaged = int(np.clip(round(n * damaged_fraction), 2, n - 2))
    counts = dict(zip(CLASSES, (n - n_damaged, n_damaged), strict=True))
    out_dir.mkdir(parents=True, exist_ok=True)
    for label, class_dir in enumerate(class_dirs):
        # No exist_ok: fails rather than mixes files if the folder appeared since the up-front check.
        class_dir.mkdir()
        # One child seed per image, keyed by (class, id): an image's pixels depend only on (seed, class,
        # id), not on n or on how many random numbers other images consumed.
        image_seqs = np.random.SeedSequence(seed, spawn_key=(label,)).spawn(counts[class_dir.name])
        for number, image_seq in enumerate(image_seqs):
            pixels = _render(damaged=label == 1, rng=np.random.default_rng(image_seq))
            # Mode "x" fails rather than overwrites.
            with open(class_dir / f"{number:04d}.png", "xb") as f:
                # Sensor noise barely compresses: the fastest level is a third quicker for 7 % more bytes.
                Image.fromarray(pixels).save(f, format="PNG", compress_level=1)
    return counts


class _Canvas:
    """Anti-aliased coverage masks in ``[0, 1]`` of shapes given in image pixel coordinates."""

    def __init__(self, width: int, height: int, left: int = 0, top: int = 0) -> None:
        self.width, self.height = width, height
        self.left, self.top = left, top
        self._size = (width * _SUPERSAMPLE, height * _SUPERSAMPLE)

    def window(self, points: FloatArray, margin: float) -> _Canvas:
        """The part of this canvas within ``margin`` pixels of the bounding box of ``points``.

        Shapes are still given in the coordinates of the whole image; masks are the window's size.
        """
        left, top = np.maximum(np.floor(points.min(axis=0) - margin), 0).astype(int).tolist()
        right, bottom = np.ceil(points.max(axis=0) + margin).astype(int).tolist()
        right, bottom = min(right, self.left + self.width), min(bottom, self.top + self.height)
        return _Canvas(right - left, bottom - top, left, top)

    @property
    def region(self) -> tuple[slice, slice]:
        """The ``(rows, columns)`` of the whole image that this canvas covers."""
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)

    def polygon(self, points: FloatArray) -> FloatArray:
        """Coverage of the polygon with vertices ``points``, shape ``(k, 2)`` as ``(x, y)``."""
        image, draw = self._blank()
        draw.polygon(self._scale(points), fill=255)
        return self._finish(image)

    def disc(self, centre: FloatArray, radius: float) -> FloatArray:
        """Coverage of the disc of ``radius`` around ``centre`` ``(x, y)``."""
        image, draw = self._blank()
        (x, y), r = self._scale(centre[None])[0], radius * _SUPERSAMPLE
        draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
        return self._finish(image)

    def polyline(self, points: FloatArray, width: float) -> FloatArray:
        """Coverage of the open polyline through ``points`` drawn ``width`` pixels wide."""
        image, draw = self._blank()
        draw.line(self._scale(points), fill=255, width=max(1, round(width * _SUPERSAMPLE)), joint="curve")
        return self._finish(image)

    def _scale(self, points: FloatArray) -> list[tuple[float, float]]:
        scaled = (points - np.array([self.left, self.top])) * _SUPERSAMPLE
        return [(x, y) for x, y in scaled.tolist()]

    def _blank(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        image = Image.new("L", self._size, 0)
        return image, ImageDraw.Draw(image)

    def _finish(self, image: Image.Image) -> FloatArray:
        # The mean of each block of supersampled pixels is the pixel's coverage: exact box-filter
        # anti-aliasing, and 15 times faster than a Lanczos resize, which would also ring at the edges.
        return np.asarray(image.reduce(_SUPERSAMPLE), dtype=np.float64) / 255.0


@dataclass(frozen=True)
class _Insert:
    """Pose and shape of one insert; lengths in image pixels, ``radius`` is the inscribed radius."""

    shape: str
    centre: FloatArray
    radius: float
    rotation: float
    nose: float  # corner radius, in units of ``radius``

    def corners(self) -> FloatArray | None:
        """Corners of the sharp (unrounded) outline in image coordinates, or ``None`` if round."""
        unit = _unit_corners(self.shape)
        return None if unit is None else self._place(unit)

    def outline(self, inset: float = 0.0) -> FloatArray:
        """The rounded outline moved ``inset`` radii inwards (outwards if negative), as polygon points."""
        unit = _unit_corners(self.shape)
        inradius = 1.0 - inset
        if unit is None:
            angles = np.linspace(0, 2 * np.pi, 96, endpoint=False)
            return self._place(inradius * np.stack([np.cos(angles), np.sin(angles)], axis=1))
        # A tangential polygon offset inwards by d is itself scaled by (1 - d); rounding its corners with
        # radius q is offsetting the core polygon scaled by (inradius - q) outwards by q.
        corner = max(self.nose - inset, 0.02)
        core = unit * (inradius - corner)
        normals = _edge_normals(unit)
        points = []
        for i, vertex in enumerate(core):
            start = np.arctan2(normals[i - 1, 1], normals[i - 1, 0])
            sweep = np.mod(np.arctan2(normals[i, 1], normals[i, 0]) - start, 2 * np.pi)
            angles = start + np.linspace(0, sweep, 10)
            points.append(vertex + corner * np.stack([np.cos(angles), np.sin(angles)], axis=1))
        return self._place(np.concatenate(points))

    def _place(self, unit_points: FloatArray) -> FloatArray:
        cos, sin = np.cos(self.rotation), np.sin(self.rotation)
        rotation = np.array([[cos, -sin], [sin, cos]])
        return self.centre + self.radius * unit_points @ rotation.T


def _unit_corners(shape: str) -> FloatArray | None:
    """Counter-clockwise corners of the sharp outline with inscribed radius 1, or ``None`` if round."""
    if shape == "round":
        return None
    half = np.deg2rad(_CORNER_ANGLES[shape]) / 2
    # Rhombus with its acute corners on the x axis: half diagonals 1/sin and 1/cos of half the angle.
    a, b = 1 / np.sin(half), 1 / np.cos(half)
    return np.array([[a, 0.0], [0.0, b], [-a, 0.0], [0.0, -b]])


def _edge_normals(corners: FloatArray) -> FloatArray:
    """Outward unit normals of the edges ``corners[i] -> corners[i + 1]`` of a counter-clockwise polygon."""
    edges = np.roll(corners, -1, axis=0) - corners
    normals = np.stack([edges[:, 1], -edges[:, 0]], axis=1)
    unit: FloatArray = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    return unit


def _area(points: FloatArray) -> float:
    """Area of a simple polygon (shoelace formula)."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _clip(points: FloatArray, normal: FloatArray, offset: float) -> FloatArray:
    """The part of a convex polygon where ``points @ normal >= offset`` (Sutherland-Hodgman)."""
    side = points @ normal - offset
    kept = []
    for i in range(len(points)):
        j = (i + 1) % len(points)
        if side[i] >= 0:
            kept.append(points[i])
        if (side[i] >= 0) != (side[j] >= 0):
            t = side[i] / (side[i] - side[j])
            kept.append(points[i] + t * (points[j] - points[i]))
    return np.array(kept).reshape(-1, 2)


def _smooth_noise(count: int, rng: np.random.Generator, smoothness: int = 4) -> FloatArray:
    """``count`` values of zero-mean, roughly unit-amplitude noise, correlated over ``smoothness`` steps."""
    raw = rng.standard_normal(count + 2 * smoothness)
    kernel = np.hanning(2 * smoothness + 1)
    smooth = np.convolve(raw, kernel / kernel.sum(), mode="same")[smoothness:-smoothness]
    result: FloatArray = smooth / max(float(smooth.std()), 1e-9)
    return result


def _render(damaged: bool, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """Draws one image of an intact or damaged insert on its holder."""
    width, height = (int(side) for side in rng.integers(MIN_SIDE, MAX_SIDE + 1, 2))
    canvas = _Canvas(width, height)
    xs, ys = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    insert = _place_insert(width, height, rng)

    # Light comes from direction ``light`` (unit vector in image coordinates) and brightens that side.
    light_angle = rng.uniform(0, 2 * np.pi)
    light = np.array([np.cos(light_angle), np.sin(light_angle)])
    half_diagonal = np.hypot(width, height) / 2
    across = ((xs - width / 2) * light[0] + (ys - height / 2) * light[1]) / half_diagonal
    vignette = 1 - rng.uniform(0.0, 0.3) * ((xs - width / 2) ** 2 + (ys - height / 2) ** 2) / half_diagonal**2
    illumination = rng.uniform(0.75, 1.2) * (1 + rng.uniform(0.1, 0.35) * across) * vignette

    # One field of white noise serves as the grain of every surface and as sensor noise: sums of white
    # noise are white noise, and normal variates are the most expensive random numbers here.
    grain = rng.standard_normal((height, width))
    image = _holder(canvas, insert, light, xs, ys, grain, rng)

    # The insert, its pocket and its shadow lie within a third of a radius of its outline: drawing them
    # in a window around it halves the work.
    local = canvas.window(insert.outline(), 0.35 * insert.radius)
    region = local.region
    holder = image[region]
    # The pocket seat: a recess slightly larger than the insert, pushed against two of its walls.
    seat_shift = rng.normal(0.0, 0.04, 2) * insert.radius
    holder = holder * (1 - 0.6 * local.polygon(insert.outline(inset=-0.07) + seat_shift))[..., None]
    # Drop shadow of the insert on the holder, away from the light.
    shadow_shift = -light * rng.uniform(0.03, 0.08) * insert.radius
    shadow = Image.fromarray(np.uint8(local.polygon(insert.outline() + shadow_shift) * 255))
    blurred = np.asarray(
        shadow.filter(ImageFilter.GaussianBlur(0.08 * float(insert.radius))), dtype=np.float64
    )
    holder = holder * (1 - rng.uniform(0.35, 0.6) * blurred / 255)[..., None]
    coverage, colour = _insert_layers(
        local, insert, light, xs[region], ys[region], grain[region], damaged, rng
    )
    image[region] = holder + coverage[..., None] * (colour - holder)
    temperature = rng.uniform(-1, 1)
    white_balance = np.array([1 + 0.08 * temperature, 1 + 0.01 * temperature, 1 - 0.09 * temperature])
    image = image * illumination[..., None] * white_balance
    image = image + rng.uniform(0.006, 0.02) * grain[..., None]
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def _place_insert(width: int, height: int, rng: np.random.Generator) -> _Insert:
    """Draws an insert's shape and pose, large in the frame but whole, with room for damage to show."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    rotation = rng.uniform(0, 2 * np.pi)
    unit = _Insert(shape, np.zeros(2), 1.0, rotation, rng.uniform(0.06, 0.14))
    # Half extents, in inscribed radii, of the rotated outline plus the pocket around it.
    half_x, half_y = np.abs(unit.outline(inset=-0.1)).max(axis=0)
    radius = rng.uniform(0.65, 0.85) * min(width / 2 / half_x, height / 2 / half_y)
    slack = np.array([width / 2 - radius * half_x, height / 2 - radius * half_y])
    centre = np.array([width / 2, height / 2]) + rng.uniform(-0.8, 0.8, 2) * slack
    return _Insert(shape, centre, radius, rotation, unit.nose)


def _holder(
    canvas: _Canvas,
    insert: _Insert,
    light: FloatArray,
    xs: FloatArray,
    ys: FloatArray,
    grain: FloatArray,
    rng: np.random.Generator,
) -> FloatArray:
    """The dark steel tool holder, ``(h, w, 3)``: machining marks, a screw hole, maybe its outer edge."""
    width, height = canvas.width, canvas.height
    base = rng.uniform(0.2, 0.32)
    # Parallel machining marks: 1-D noise along one direction, stretched across the other.
    mark_angle = rng.uniform(0, np.pi)
    position = xs * np.cos(mark_angle) + ys * np.sin(mark_angle)
    marks = _smooth_noise(2 * (width + height), rng, smoothness=1)
    value = base * (
        1 + rng.uniform(0.04, 0.1) * np.interp(position, np.arange(-width - height, width + height), marks)
    )
    # Large, soft blotches of uneven finish.
    blotches = Image.fromarray(rng.standard_normal((5, 5)).astype(np.float32))
    value = value * (1 + 0.07 * np.asarray(blotches.resize((width, height), Image.Resampling.BICUBIC)))
    value = value + 0.02 * grain

    # The screw hole of a clamp or a neighbouring pocket, in the image corner farthest from the insert.
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], dtype=np.float64)
    corner = corners[np.argmax(np.linalg.norm(corners - insert.centre, axis=1))]
    inwards = np.sign(np.array([width, height]) / 2 - corner)
    hole_centre = corner + inwards * rng.uniform(0.1, 0.2, 2) * np.array([width, height])
    hole_radius = rng.uniform(0.05, 0.085) * min(width, height)
    local = canvas.window(hole_centre[None], 1.4 * hole_radius)
    region = local.region
    chamfer = local.disc(hole_centre, 1.35 * hole_radius)
    bore = local.disc(hole_centre, hole_radius)
    towards = (hole_centre[0] - xs[region]) * light[0] + (hole_centre[1] - ys[region]) * light[1]
    lit_side = np.clip(towards / (1.35 * hole_radius), -1, 1)
    value[region] += chamfer * (base * (1.3 + 0.5 * lit_side) - value[region])
    value[region] += bore * (0.03 + 0.02 * lit_side - value[region])

    # The outer edge of the holder, beyond the insert and its pocket, with dark background behind it.
    if rng.random() < 0.5:
        edge_angle = rng.uniform(0, 2 * np.pi)
        normal = np.array([np.cos(edge_angle), np.sin(edge_angle)])
        offset = float((insert.outline(inset=-0.15) @ normal).max()) + rng.uniform(0.05, 0.25) * min(
            width, height
        )
        distance = xs * normal[0] + ys * normal[1] - offset
        backdrop = np.clip(0.5 - distance, 0, 1)
        bevel = np.clip(1 - np.abs(distance + 2.5) / 2.0, 0, 1)
        value = value * backdrop + (1 - backdrop) * rng.uniform(0.03, 0.08)
        value = value + bevel * (1.6 * base + 0.15 - value) * (0.6 + 0.4 * max(float(normal @ light), 0.0))

    tint = np.array([1.0, 1.0, 1.0]) + rng.uniform(-0.03, 0.03, 3)
    result: FloatArray = value[..., None] * tint
    return result


def _insert_layers(
    canvas: _Canvas,
    insert: _Insert,
    light: FloatArray,
    xs: FloatArray,
    ys: FloatArray,
    grain: FloatArray,
    damaged: bool,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray]:
    """Coverage ``(h, w)`` and colour ``(h, w, 3)`` of the insert, with its damage if ``damaged``."""
    r = insert.radius
    outline = canvas.polygon(insert.outline())
    # Outward normals of the outline from the gradient of its blurred mask, for edge-dependent lighting.
    soft = Image.fromarray(np.uint8(outline * 255)).filter(
        ImageFilter.GaussianBlur(max(1.5, 0.06 * float(r)))
    )
    grad_y, grad_x = np.gradient(np.asarray(soft, dtype=np.float64))
    norm = np.hypot(grad_x, grad_y) + 1e-6
    facing = -(grad_x * light[0] + grad_y * light[1]) / norm  # 1 where the edge faces the light
    dx, dy = xs - insert.centre[0], ys - insert.centre[1]
    along_light = (dx * light[0] + dy * light[1]) / r

    base = rng.uniform(0.4, 0.55)
    rim = base * (1.35 + 0.3 * facing) + 0.08
    land = base * (1.05 + 0.08 * facing)
    groove = base * (0.72 - 0.12 * facing)  # the inner slope faces inwards, so it is lit from the far side
    face = base * (1 + 0.1 * along_light) * (1 + 0.02 * grain)
    hole_dist = np.hypot(dx, dy) + 1e-6
    cone = -(dx * light[0] + dy * light[1]) / hole_dist  # the countersink's far wall faces the light
    countersink = base * (0.95 + 0.3 * cone)
    screw = 0.22 + 0.08 * along_light / _SCREW  # dark steel, brighter by 0.08 at its lit edge

    value = rim
    for mask, layer in (
        (canvas.polygon(insert.outline(_RIM)), land),
        (canvas.polygon(insert.outline(_LAND)), groove),
        (canvas.polygon(insert.outline(_GROOVE)), face),
        (canvas.disc(insert.centre, _COUNTERSINK * r), countersink),
    ):
        value = value + mask * (layer - value)
    hole = canvas.disc(insert.centre, _HOLE * r)
    value = value + hole * (0.04 - value)
    value = value + canvas.disc(insert.centre, _SCREW * r) * (screw - value)
    coated = 1 - hole  # the screw is bare steel
    # Torx recess of the clamping screw.
    angles = rng.uniform(0, 2 * np.pi) + np.linspace(0, 2 * np.pi, 12, endpoint=False)
    lobes = np.where(np.arange(12) % 2 == 0, 0.13, 0.08) * r
    star = insert.centre + lobes[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    value = value + canvas.polygon(star) * (0.05 - value)

    coverage = outline
    colour = value[..., None] * (1 + coated[..., None] * (_COATINGS[rng.choice(4, p=_COATING_ODDS)] - 1))
    if damaged:
        # Worn-out inserts often have more than one defect: a third get a second one, of any kind, on a
        # random edge or corner.
        for _ in range(1 + int(rng.random() < 1 / 3)):
            coverage, colour = _damage(canvas, insert, coverage, colour, base, grain, rng)
    return np.clip(coverage, 0, 1), colour


def _damage(
    canvas: _Canvas,
    insert: _Insert,
    coverage: FloatArray,
    colour: FloatArray,
    base: float,
    grain: FloatArray,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray]:
    """Applies one random kind of damage from :data:`DAMAGES` to the insert's coverage and colour."""
    kinds = DAMAGES if insert.shape != "round" else DAMAGES[1:]
    kind = kinds[rng.integers(len(kinds))]
    # Freshly exposed carbide where coating flaked off or the insert fractured: matte, light, untinted.
    bare = base * rng.uniform(1.3, 1.6) * (1 + 0.12 * grain)
    if kind == "broken_corner":
        removed, fracture = _broken_corner(insert, rng)
        flaked = canvas.polyline(fracture, width=rng.uniform(0.12, 0.2) * insert.radius)
        coverage = coverage * (1 - canvas.polygon(removed))
    elif kind == "chipped_edge":
        notches, halos = _chips(insert, rng)
        flaked = np.zeros_like(coverage)
        for notch, halo in zip(notches, halos, strict=True):
            flaked = np.maximum(flaked, canvas.polygon(halo))
            coverage = coverage * (1 - canvas.polygon(notch))
    else:
        band, eroded = _wear(insert, rng)
        worn = canvas.polygon(band)
        coverage = coverage * (1 - canvas.polygon(eroded))
        # Flank wear: dull, dark, brownish and speckled, eating into the rim and the land.
        speckle = 1 + 0.3 * grain
        dark = base * rng.uniform(0.2, 0.32) * speckle
        worn_colour = dark[..., None] * np.array([1.08, 0.95, 0.8])
        colour = colour + worn[..., None] * (worn_colour - colour)
        flaked = np.zeros_like(coverage)
    colour = colour + flaked[..., None] * (bare[..., None] - colour)
    return coverage, colour


def _edge_sites(
    insert: _Insert, t: FloatArray, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Points at fractions ``t`` of one random edge, with their outward normals and tangents.

    A round insert has no edges; a random quarter of its rim stands in for one.
    """
    count = len(t)
    corners = insert.corners()
    if corners is None:
        angle = rng.uniform(0, 2 * np.pi) + (t - 0.5) * np.pi / 2
        normals = np.stack([np.cos(angle), np.sin(angle)], axis=1)
        points = insert.centre + insert.radius * normals
    else:
        i = int(rng.integers(len(corners)))
        start, end = corners[i], corners[(i + 1) % len(corners)]
        points = start + t[:, None] * (end - start)
        normals = np.repeat(_edge_normals(corners)[i : i + 1], count, axis=0)
    tangents = np.stack([-normals[:, 1], normals[:, 0]], axis=1)
    return points, normals, tangents


def _broken_corner(insert: _Insert, rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
    """A corner broken off along a jagged line: the removed region and the fracture line.

    The straight line the fracture follows is placed so that it cuts 8 % to 18 % of the insert's area.
    """
    corners = insert.corners()
    assert corners is not None  # round inserts are never given this damage
    corner = corners[rng.integers(len(corners))]
    bisector = (corner - insert.centre) / np.linalg.norm(corner - insert.centre)
    tilt = rng.uniform(-0.45, 0.45)
    cos, sin = np.cos(tilt), np.sin(tilt)
    normal = np.array([cos * bisector[0] - sin * bisector[1], sin * bisector[0] + cos * bisector[1]])
    outline = insert.outline()
    projections = outline @ normal
    target = rng.uniform(0.08, 0.18) * _area(outline)
    low, high = float(projections.min()), float(projections.max())
    for _ in range(40):  # bisection on the line's offset: the cut-off area shrinks as it grows
        middle = (low + high) / 2
        if _area(_clip(outline, normal, middle)) > target:
            low = middle
        else:
            high = middle
    tangent = np.array([-normal[1], normal[0]])
    reach = 1.2 * float(np.linalg.norm(outline - insert.centre, axis=1).max())
    foot = insert.centre + normal * (high - float(insert.centre @ normal))
    steps = np.linspace(-reach, reach, 48)
    jag = 0.035 * insert.radius * (rng.uniform(-1, 1, 48) + 0.8 * _smooth_noise(48, rng, smoothness=3))
    fracture = foot + steps[:, None] * tangent + jag[:, None] * normal
    beyond = foot + 3 * reach * normal
    removed = np.vstack([fracture, beyond + reach * tangent, beyond - reach * tangent])
    return removed, fracture


def _chips(insert: _Insert, rng: np.random.Generator) -> tuple[list[FloatArray], list[FloatArray]]:
    """Four to eight irregular notches along one edge, and the larger flaked-coating halos around them."""
    r = insert.radius
    spread = rng.uniform(0.5, 0.75)
    t = np.sort(rng.uniform(0.5 - spread / 2, 0.5 + spread / 2, rng.integers(4, 9)))
    points, normals, tangents = _edge_sites(insert, t, rng)
    notches: list[FloatArray] = []
    halos: list[FloatArray] = []
    for point, normal, tangent in zip(points, normals, tangents, strict=True):
        half_width = rng.uniform(0.07, 0.14) * r
        depth = rng.uniform(0.12, 0.2) * r
        # Notch profile across its width: deepest in the middle, ragged.
        s = np.linspace(-1, 1, 7)[1:-1]
        profile = depth * np.sin(np.pi * (s + 1) / 2) ** 0.6 * rng.uniform(0.65, 1.15, 5)
        for scale, grow, shapes in ((1.0, 0.0, notches), (1.6, 0.07 * r, halos)):
            ends = [point + tangent * sign * scale * half_width + normal * 0.08 * r for sign in (-1, 1)]
            inner = (
                point
                + (s * scale * half_width)[:, None] * tangent
                - (scale * profile + grow)[:, None] * normal
            )
            shapes.append(np.vstack([ends[0], inner, ends[1]]))
    return notches, halos


def _wear(insert: _Insert, rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
    """Flank wear along one edge: the worn band with its irregular inner boundary, and the eroded strip."""
    r = insert.radius
    count = 40
    spread = rng.uniform(0.6, 0.9)
    points, normals, _ = _edge_sites(insert, np.linspace(0.5 - spread / 2, 0.5 + spread / 2, count), rng)
    # Sorted sites run along the edge; the band tapers to nothing at both ends.
    envelope = np.sin(np.linspace(0, np.pi, count)) ** 0.35
    depth = (
        rng.uniform(0.2, 0.32)
        * r
        * envelope
        * (1 + 0.3 * _smooth_noise(count, rng, smoothness=4) + rng.uniform(-0.1, 0.1, count))
    )
    erosion = 0.06 * r * envelope * rng.uniform(0.2, 1.0, count)
    outside = points + 0.08 * r * normals
    band = np.vstack([outside, (points - depth[:, None] * normals)[::-1]])
    eroded = np.vstack([outside, (points - erosion[:, None] * normals)[::-1]])
    return band, eroded
