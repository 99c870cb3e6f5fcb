import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY_SIDE, tiny_config
from inspectflow.config import TEXTILE_CLASSES
from inspectflow.data.dataset import MANIFEST_COLUMNS, dataset_digest, load_dataset, save_dataset
from inspectflow.data.layouts import detect_layout
from inspectflow.errors import DataError
from inspectflow.steps.ingest import ingest


def test_formats_are_detected(kaggle_dir: Path, npy_dir: Path, folders_dir: Path, tmp_path: Path) -> None:
    assert detect_layout(kaggle_dir).name == "kaggle-h5"
    assert detect_layout(npy_dir).name == "npy"
    assert detect_layout(folders_dir).name == "folders"
    with pytest.raises(DataError, match="no supported layout"):
        detect_layout(tmp_path)
    with pytest.raises(DataError, match="not found"):
        detect_layout(tmp_path / "missing")


def test_kaggle_layout_keeps_the_source_split(kaggle_dir: Path) -> None:
    dataset = ingest(kaggle_dir, tiny_config("data.image_side=64"))
    source_rows = sum(len(pd.read_csv(csv)) for csv in kaggle_dir.glob("*.csv"))
    assert len(dataset.manifest) == source_rows == 48
    assert dataset.info.split_origin == "source"
    assert set(dataset.manifest["source"]) == {"train64.h5", "test64.h5"}
    assert (dataset.manifest.loc[dataset.manifest["source"] == "test64.h5", "split"] == "test").all()
    assert dataset.images.shape == (48, 64, 64, 1) and dataset.images.dtype == np.uint8
    assert list(dataset.manifest.columns) == MANIFEST_COLUMNS


def test_npy_layout_maps_integer_labels_and_splits_stratified(npy_dir: Path) -> None:
    dataset = ingest(npy_dir, tiny_config())
    assert dataset.info.split_origin == "seeded"
    assert set(dataset.manifest["label"]) == set(TEXTILE_CLASSES)
    per_class = dataset.manifest.groupby(["label", "split"]).size().unstack()
    assert (per_class["test"] == 2).all() and (per_class["train"] == 8).all()  # 20% of 10, stratified
    again = ingest(npy_dir, tiny_config())
    assert again.manifest["split"].tolist() == dataset.manifest["split"].tolist()  # seeded


def test_npy_one_hot_labels_are_accepted(npy_dir: Path) -> None:
    labels = np.load(npy_dir / "Y.npy")
    np.save(npy_dir / "Y.npy", np.eye(len(TEXTILE_CLASSES), dtype=np.uint8)[labels])
    assert set(ingest(npy_dir, tiny_config()).manifest["label"]) == set(TEXTILE_CLASSES)


def test_folders_are_resized_to_the_configured_side(folders_dir: Path) -> None:
    dataset = ingest(folders_dir, tiny_config("data.image_side=32"))
    assert dataset.images.shape == (24, 32, 32, 1)
    assert set(dataset.manifest["width"]) == {TINY_SIDE}  # the source size is what the manifest records
    assert dataset.manifest["source"].iloc[0] == "color/0000.png"


def test_folder_train_test_split_is_kept(folders_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "split"
    shutil.copytree(folders_dir, root / "train")
    shutil.copytree(folders_dir, root / "test")
    dataset = ingest(root, tiny_config())
    assert dataset.info.split_origin == "source"
    assert (dataset.manifest["split"] == "test").sum() == 24


def test_a_corrupt_image_is_recorded_not_fatal(folders_dir: Path) -> None:
    (folders_dir / "hole" / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    dataset = ingest(folders_dir, tiny_config())
    bad = dataset.manifest[dataset.manifest["decode_error"].notna()]
    assert bad["source"].tolist() == ["hole/0002.png"]


def test_forced_format_and_broken_structure_fail_naming_the_file(kaggle_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"X\.npy"):
        ingest(kaggle_dir, tiny_config("data.format=npy"))
    broken = tmp_path / "broken"
    shutil.copytree(kaggle_dir, broken)
    pd.read_csv(broken / "test64.csv").drop(columns=["split"]).to_csv(broken / "test64.csv", index=False)
    with pytest.raises(DataError, match=r"test64.csv: missing column\(s\) \['split'\]"):
        ingest(broken, tiny_config())


def test_dataset_round_trips_and_digest_ignores_row_order(npy_dir: Path, tmp_path: Path) -> None:
    dataset = ingest(npy_dir, tiny_config())
    save_dataset(dataset, tmp_path / "ds")
    loaded = load_dataset(tmp_path / "ds")
    assert np.array_equal(loaded.images, dataset.images)
    assert loaded.info == dataset.info
    assert dataset_digest(loaded.manifest) == dataset_digest(dataset.manifest.iloc[::-1])
    images, labels = loaded.split("train")
    assert len(images) == len(labels) == 48


def test_a_good_class_that_is_not_a_class_of_the_source_is_named(npy_dir: Path) -> None:
    with pytest.raises(
        DataError, match=rf"{npy_dir}: data.good_class 'ok' is not one of its classes \(good, "
    ):
        ingest(npy_dir, tiny_config("data.good_class=ok"))


def test_the_good_class_is_kept_with_the_dataset(npy_dir: Path, tmp_path: Path) -> None:
    dataset = ingest(npy_dir, tiny_config("data.good_class=hole"))
    save_dataset(dataset, tmp_path / "dataset")

    loaded = load_dataset(tmp_path / "dataset")
    assert loaded.info.good_class == "hole" and loaded.info.good_index == TEXTILE_CLASSES.index("hole")
