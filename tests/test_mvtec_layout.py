"""The MVTec AD layout: detection, reading splits, kinds and masks, and its synthetic stand-in."""

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_dagm_config
from inspectflow.data.layouts import detect_layout, read_source
from inspectflow.errors import DataError
from inspectflow.steps.ingest import ingest
from inspectflow.synth.mvtec import KINDS, write_mvtec

TINY = {"train": 3, "test_good": 2, "test_per_kind": 2, "side": 32}


@pytest.fixture
def category(tmp_path: Path) -> Path:
    return write_mvtec(tmp_path / "cat", **TINY)


def test_a_written_category_is_detected_as_mvtec(category: Path) -> None:
    assert detect_layout(category).name == "mvtec"


def test_reading_keeps_splits_kinds_and_masks(category: Path) -> None:
    records = read_source(category, "auto", [])
    counts = Counter((r.split, r.label) for r in records)
    assert counts == {("train", "good"): 3, ("test", "good"): 2, ("test", "scratch"): 2, ("test", "spot"): 2}
    assert [r.source for r in records][:4] == [
        "train/good/000.png",
        "train/good/001.png",
        "train/good/002.png",
        "test/good/000.png",
    ]
    for record in records:
        assert record.pixels is not None and record.pixels.shape == (32, 32, 1)
        assert record.mask is not None and record.mask.shape == (32, 32)
        assert not record.mask_missing and record.mask_error is None
        defective = record.label != "good"
        assert record.mask.any() == defective, record.source
        if defective:
            assert record.mask_source == f"ground_truth/{record.label}/{Path(record.source).stem}_mask.png"
            assert 0.01 <= record.mask.mean() <= 0.05
        else:
            assert record.mask_source is None


def test_the_synthetic_category_is_deterministic_and_its_good_parts_differ(tmp_path: Path) -> None:
    first, again = write_mvtec(tmp_path / "a", **TINY), write_mvtec(tmp_path / "b", **TINY)
    files = sorted(p.relative_to(first) for p in first.rglob("*.png"))
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.png"))
    assert all((first / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert {f"ground_truth/{kind}/000_mask.png" for kind in KINDS} <= {f.as_posix() for f in files}
    good = [np.asarray(Image.open(first / "train" / "good" / f"00{i}.png")) for i in range(2)]
    assert good[0].dtype == np.uint8 and good[0].ndim == 2
    assert not np.array_equal(good[0], good[1])
    with pytest.raises(FileExistsError):
        write_mvtec(first, **TINY)


def test_training_images_outside_train_good_are_refused_naming_the_folder(category: Path) -> None:
    (category / "train" / "crack").mkdir()
    shutil.copy(category / "test" / "scratch" / "000.png", category / "train" / "crack" / "000.png")
    with pytest.raises(DataError, match=r"train/crack.*good parts only"):
        read_source(category, "mvtec", [])


def test_a_defective_image_without_its_mask_is_mask_missing(category: Path) -> None:
    (category / "ground_truth" / "spot" / "001_mask.png").unlink()
    records = {r.source: r for r in read_source(category, "mvtec", [], missing_masks="clean")}
    missing = records["test/spot/001.png"]
    assert missing.mask_missing and missing.mask is not None and not missing.mask.any()
    assert missing.mask_error is None
    assert [s for s, r in records.items() if r.mask_missing] == ["test/spot/001.png"]
    strict = {r.source: r for r in read_source(category, "mvtec", [])}
    assert strict["test/spot/001.png"].mask_error is not None
    assert strict["test/good/000.png"].mask_error is None


def test_ingest_keeps_the_source_split_and_caches_the_masks(category: Path) -> None:
    dataset = ingest(category, tiny_dagm_config())
    assert dataset.info.format == "mvtec" and dataset.info.split_origin == "source"
    assert dataset.masks is not None and len(dataset.masks) == len(dataset.manifest) == 9
    defective = (dataset.manifest["label"] != "good").to_numpy()
    assert (dataset.masks.reshape(len(defective), -1).any(axis=1) == defective).all()
