from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from inspectflow.config import TEXTILE_CLASSES
from inspectflow.synth.textile import CSV_COLUMNS, synthesize_textile

N = 26  # not a multiple of 6, so the remainder handling runs too
SPLITS = ("train", "test")


def _images(root: Path, split: str) -> np.ndarray:
    with h5py.File(root / f"{split}64.h5", "r") as f:
        assert list(f.keys()) == ["images"]
        return f["images"][()]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("textile") / "data"  # does not exist yet: must be created
    return root, synthesize_textile(root, n=N, seed=3)


def test_layout_shapes_and_csv(dataset: tuple[Path, dict[str, int]]) -> None:
    root, counts = dataset
    assert sorted(p.name for p in root.iterdir()) == ["test64.csv", "test64.h5", "train64.csv", "train64.h5"]
    assert counts["train"] + counts["test"] == N
    for split in SPLITS:
        images = _images(root, split)
        assert images.shape == (counts[split], 64, 64, 1)
        assert images.dtype == np.uint8
        assert images.std() > 0
        header = (root / f"{split}64.csv").read_text().splitlines()[0]
        assert header == "index,angle,indication_type,indication_value,split"
        table = pd.read_csv(root / f"{split}64.csv")
        assert list(table.columns) == CSV_COLUMNS
        assert table["index"].tolist() == list(range(len(images)))
        assert (table["split"] == split).all()
        assert table["angle"].between(0, 359).all()
        assert [TEXTILE_CLASSES[v] for v in table["indication_value"]] == table["indication_type"].tolist()


def test_every_class_in_both_splits_and_balanced(dataset: tuple[Path, dict[str, int]]) -> None:
    root, _ = dataset
    tables = [pd.read_csv(root / f"{split}64.csv") for split in SPLITS]
    for table in tables:
        assert set(table["indication_type"]) == set(TEXTILE_CLASSES)
    totals = pd.concat(tables)["indication_type"].value_counts()
    assert totals.max() - totals.min() <= 1


def test_counts_follow_test_fraction(tmp_path: Path) -> None:
    assert synthesize_textile(tmp_path, n=60, seed=0, test_fraction=0.2) == {"train": 48, "test": 12}


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    synthesize_textile(a, n=N, seed=7)
    synthesize_textile(b, n=N, seed=7)
    synthesize_textile(c, n=N, seed=8)
    for split in SPLITS:
        np.testing.assert_array_equal(_images(a, split), _images(b, split))
        assert (a / f"{split}64.csv").read_bytes() == (b / f"{split}64.csv").read_bytes()
        assert (a / f"{split}64.h5").read_bytes() == (b / f"{split}64.h5").read_bytes()
    assert not np.array_equal(_images(a, "train"), _images(c, "train"))


@pytest.mark.parametrize("name", ["train64.h5", "test64.h5", "train64.csv", "test64.csv"])
def test_refuses_to_overwrite(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"user data")
    with pytest.raises(FileExistsError, match=name):
        synthesize_textile(tmp_path, n=N)
    assert (tmp_path / name).read_bytes() == b"user data"
    assert [p.name for p in tmp_path.iterdir()] == [name]  # nothing else was written


@pytest.mark.parametrize("n", [0, 6, 11])
def test_rejects_too_few_images(tmp_path: Path, n: int) -> None:
    with pytest.raises(ValueError, match="at least 12"):
        synthesize_textile(tmp_path, n=n)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_rejects_bad_test_fraction(tmp_path: Path, fraction: float) -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        synthesize_textile(tmp_path, n=N, test_fraction=fraction)


def test_smallest_dataset_keeps_every_class_in_both_splits(tmp_path: Path) -> None:
    assert synthesize_textile(tmp_path, n=12, test_fraction=0.9) == {"train": 6, "test": 6}


def test_the_cli_refuses_to_overwrite_a_dataset_with_a_one_line_error(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "inspectflow", "synth", "textile", "--out", str(tmp_path), "--n", "24"]
    assert subprocess.run(command, capture_output=True, check=False).returncode == 0
    again = subprocess.run(command, capture_output=True, text=True, check=False)
    assert again.returncode == 1
    assert (
        again.stderr.startswith("inspectflow: error: refusing to overwrite")
        and "Traceback" not in again.stderr
    )
