from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inspectflow.synth.inserts import (
    CLASSES,
    MAX_SIDE,
    MIN_SIDE,
    SHAPES,
    _broken_corner,
    _Canvas,
    _Insert,
    synthesize_inserts,
)

N = 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("inserts") / "data"  # does not exist yet: must be created
    return root, synthesize_inserts(root, n=N, seed=3)


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_counts(dataset: tuple[Path, dict[str, int]]) -> None:
    root, counts = dataset
    assert counts == {"Intact": N // 2, "Damaged": N // 2}
    assert sorted(p.name for p in root.iterdir()) == sorted(CLASSES)
    for name in CLASSES:
        assert sorted(p.name for p in (root / name).iterdir()) == [f"{i:04d}.png" for i in range(N // 2)]


def test_images_are_rgb_of_varying_size(dataset: tuple[Path, dict[str, int]]) -> None:
    root, _ = dataset
    sizes = []
    for path in sorted(root.glob("*/*.png")):
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.mode == "RGB"
            assert all(MIN_SIDE <= side <= MAX_SIDE for side in image.size)
            sizes.append(image.size)
            pixels = np.asarray(image)
        assert pixels.std() > 10  # an insert on a holder, not a flat image
        assert np.ptp(pixels.reshape(-1, 3).mean(axis=0)) < 60  # metal greys, at most slightly tinted
    assert len(set(sizes)) > 1
    assert any(width != height for width, height in sizes)


def test_same_arguments_give_same_bytes(dataset: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    root, _ = dataset
    synthesize_inserts(tmp_path / "again", n=N, seed=3)
    assert _all_files(tmp_path / "again") == _all_files(root)
    synthesize_inserts(tmp_path / "other", n=N, seed=4)
    first, other = _all_files(root), _all_files(tmp_path / "other")
    assert first.keys() == other.keys()
    assert all(first[name] != other[name] for name in first)


def test_larger_n_only_adds_images(dataset: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    root, _ = dataset
    counts = synthesize_inserts(tmp_path, n=N + 4, seed=3)
    assert counts == {"Intact": N // 2 + 2, "Damaged": N // 2 + 2}
    larger = _all_files(tmp_path)
    assert all(larger[name] == data for name, data in _all_files(root).items())


@pytest.mark.parametrize(
    ("n", "fraction", "expected"),
    [
        (10, 0.3, {"Intact": 7, "Damaged": 3}),
        (5, 0.01, {"Intact": 3, "Damaged": 2}),
        (4, 0.99, {"Intact": 2, "Damaged": 2}),
    ],
)
def test_damaged_fraction(tmp_path: Path, n: int, fraction: float, expected: dict[str, int]) -> None:
    assert synthesize_inserts(tmp_path, n=n, damaged_fraction=fraction) == expected
    assert {name: len(list((tmp_path / name).iterdir())) for name in CLASSES} == expected


@pytest.mark.parametrize("existing", CLASSES)
def test_refuses_to_overwrite(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).mkdir()
    with pytest.raises(FileExistsError, match=str(tmp_path / existing)):
        synthesize_inserts(tmp_path, n=4)
    assert [p.name for p in tmp_path.iterdir()] == [existing]
    assert not any((tmp_path / existing).iterdir())


@pytest.mark.parametrize(("n", "fraction"), [(3, 0.5), (0, 0.5), (8, 0.0), (8, 1.0), (8, -0.1)])
def test_rejects_bad_arguments(tmp_path: Path, n: int, fraction: float) -> None:
    with pytest.raises(ValueError):
        synthesize_inserts(tmp_path / "data", n=n, damaged_fraction=fraction)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("shape", [shape for shape in SHAPES if shape != "round"])
def test_broken_corner_removes_a_bold_chunk(shape: str) -> None:
    canvas = _Canvas(320, 320)
    rng = np.random.default_rng(0)
    for _ in range(5):
        insert = _Insert(shape, np.array([160.0, 160.0]), 60.0, rng.uniform(0, 2 * np.pi), 0.1)
        outline = canvas.polygon(insert.outline())
        removed, _ = _broken_corner(insert, rng)
        lost = (outline * canvas.polygon(removed)).sum() / outline.sum()
        assert 0.06 < lost < 0.21  # 8 % to 18 % of the area along a straight cut, give or take the jags
