from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from inspectflow.synth.dagm import synthesize_dagm

CLASSES, N, SIZE = 2, 8, 32
SPLITS = ("Train", "Test")
REAL_SAMPLE = Path("/work/shared/data/dagm-samples")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("dagm") / "data"  # does not exist yet: must be created
    return root, synthesize_dagm(root, classes=CLASSES, n=N, size=SIZE, seed=3)


def _parse_labels(path: Path) -> list[tuple[str, bool, str, str | None]]:
    """Reads a DAGM ``Labels.txt`` into ``(id, defective, image, label or None)``, checking every field."""
    lines = [line.rstrip("\r\n") for line in path.read_text(encoding="ascii").splitlines(keepends=True)]
    assert lines[0] == "1"
    rows: list[tuple[str, bool, str, str | None]] = []
    for line in lines[1:]:
        fields = line.split("\t")
        image_id, flag, image = fields[:3]
        assert image == f"{image_id}.PNG"
        assert fields[3] == "0"
        if flag == "1":
            assert fields[4:] == [f"{image_id}_label.PNG"]
            rows.append((image_id, True, image, fields[4]))
        else:
            assert flag == "0"
            assert fields[4:] == ["0", ""]  # the trailing tab
            rows.append((image_id, False, image, None))
    return rows


def _label_files(root: Path) -> list[Path]:
    return sorted(root.glob("Class*/*/Label/Labels.txt"))


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_counts(dataset: tuple[Path, dict[str, int]]) -> None:
    root, counts = dataset
    assert counts == {"train": CLASSES * N // 2, "test": CLASSES * N // 2, "defective": CLASSES * N // 2}
    assert sorted(p.name for p in root.iterdir()) == ["Class1", "Class2"]
    for k in (1, 2):
        assert sorted(p.name for p in (root / f"Class{k}").iterdir()) == ["Test", "Train"]
        for split in SPLITS:
            folder = root / f"Class{k}" / split
            names = sorted(p.name for p in folder.iterdir())
            assert names == [f"{i:04d}.PNG" for i in range(N // 2)] + ["Label"]
            defective = [row[0] for row in _parse_labels(folder / "Label" / "Labels.txt") if row[1]]
            assert sorted(p.name for p in (folder / "Label").iterdir()) == sorted(
                [f"{image_id}_label.PNG" for image_id in defective] + ["Labels.txt"]
            )


def test_images_are_grayscale_and_textured(dataset: tuple[Path, dict[str, int]]) -> None:
    root, _ = dataset
    for path in root.glob("Class*/*/*.PNG"):
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.mode == "L"
            assert image.size == (SIZE, SIZE)
            assert np.asarray(image).std() > 5


def test_labels_txt_bytes(dataset: tuple[Path, dict[str, int]]) -> None:
    root, _ = dataset
    for path in _label_files(root):
        data = path.read_bytes()
        assert data.startswith(b"1\r\n")
        assert data.endswith(b"\r\n")
        assert data.count(b"\n") == data.count(b"\r\n") == 1 + N // 2
        lines = data.split(b"\r\n")[1:-1]
        assert [line[:4] for line in lines] == [f"{i:04d}".encode() for i in range(N // 2)]
        for line in lines:
            image_id = line[:4]
            assert line in (
                image_id + b"\t1\t" + image_id + b".PNG\t0\t" + image_id + b"_label.PNG",
                image_id + b"\t0\t" + image_id + b".PNG\t0\t0\t",
            )
        rows = _parse_labels(path)
        assert [row[1] for row in rows].count(True) == N // 4  # defect_fraction 0.5 of each split


def test_labels_txt_parses_like_the_real_sample(dataset: tuple[Path, dict[str, int]]) -> None:
    if not REAL_SAMPLE.is_dir():
        pytest.skip(f"no real DAGM sample at {REAL_SAMPLE}")
    root, _ = dataset
    for path in _label_files(REAL_SAMPLE) + _label_files(root):
        rows = _parse_labels(path)
        ids = [row[0] for row in rows]
        assert ids == sorted(ids)
        assert any(row[1] for row in rows) and not all(row[1] for row in rows)
        for _, _, image, label in rows:
            assert (path.parent.parent / image).is_file()
            assert label is None or (path.parent / label).is_file()


def test_masks_are_binary_and_match_the_defective_ids(dataset: tuple[Path, dict[str, int]]) -> None:
    root, _ = dataset
    for path in _label_files(root):
        for _, defective, _, label in _parse_labels(path):
            assert defective == (label is not None)
            if label is None:
                continue
            with Image.open(path.parent / label) as mask_image:
                assert mask_image.mode == "L"
                assert mask_image.size == (SIZE, SIZE)
                mask = np.asarray(mask_image)
            assert set(np.unique(mask)) == {0, 255}
            assert 0.003 < (mask == 255).mean() < 0.1


def test_every_class_defect_stands_out_inside_its_mask(tmp_path: Path) -> None:
    synthesize_dagm(tmp_path, classes=10, n=4, size=64, seed=1)
    masks = sorted(tmp_path.glob("Class*/*/Label/*_label.PNG"))
    assert len(masks) == 10 * 2
    for mask_path in masks:
        mask = np.asarray(Image.open(mask_path)) == 255
        image_path = mask_path.parent.parent / mask_path.name.replace("_label", "")
        pixels = np.asarray(Image.open(image_path)).astype(np.float64)
        inside, outside = pixels[mask], pixels[~mask]
        # Shifted brightness, or a texture wiped out (class 5 mostly flattens).
        shifted = abs(inside.mean() - outside.mean()) > 0.75 * outside.std()
        flattened = inside.std() < 0.5 * outside.std()
        assert shifted or flattened, mask_path


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a, b, c, d = (tmp_path / name for name in "abcd")
    synthesize_dagm(a, classes=CLASSES, n=N, size=SIZE, seed=7)
    synthesize_dagm(b, classes=CLASSES, n=N, size=SIZE, seed=7)
    synthesize_dagm(c, classes=CLASSES, n=N, size=SIZE, seed=8)
    synthesize_dagm(d, classes=1, n=N, size=SIZE, seed=7)
    files_a, files_c = _all_files(a), _all_files(c)
    assert files_a == _all_files(b)
    assert files_a["Class1/Train/0000.PNG"] != files_c["Class1/Train/0000.PNG"]
    # A class does not depend on how many classes are written.
    assert _all_files(d) == {name: data for name, data in files_a.items() if name.startswith("Class1/")}


def test_counts_follow_the_fractions(tmp_path: Path) -> None:
    counts = synthesize_dagm(tmp_path, classes=1, n=10, size=32, test_fraction=0.3, defect_fraction=0.25)
    assert counts == {"train": 7, "test": 3, "defective": 2 + 1}
    assert len(list(tmp_path.glob("Class1/Test/*.PNG"))) == 3
    assert len(list(tmp_path.glob("Class1/*/Label/*_label.PNG"))) == 3


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    user_file = tmp_path / "Class2" / "notes.txt"
    user_file.parent.mkdir()
    user_file.write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="Class2"):
        synthesize_dagm(tmp_path, classes=2, n=4, size=32)
    assert user_file.read_bytes() == b"user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Class2"]  # nothing else was written
    assert [p.name for p in user_file.parent.iterdir()] == ["notes.txt"]


def test_leaves_other_classes_alone(tmp_path: Path) -> None:
    (tmp_path / "Class2").mkdir()
    synthesize_dagm(tmp_path, classes=1, n=4, size=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Class1", "Class2"]
    assert not any((tmp_path / "Class2").iterdir())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": 0}, "classes"),
        ({"classes": 11}, "classes"),
        ({"n": 3}, "n must"),
        ({"size": 16}, "size"),
        ({"size": 40}, "size"),
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"defect_fraction": 0.0}, "defect_fraction"),
        ({"defect_fraction": 1.5}, "defect_fraction"),
    ],
)
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"n": 4, "size": 32, **kwargs}
    with pytest.raises(ValueError, match=message):
        synthesize_dagm(tmp_path / "out", **arguments)
    assert not (tmp_path / "out").exists()
