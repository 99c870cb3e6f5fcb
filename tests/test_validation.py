import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inspectflow.config import ValidateConfig
from inspectflow.data.dataset import Dataset, DatasetInfo, load_dataset, pixel_sha256, save_dataset
from inspectflow.errors import DataError
from inspectflow.imaging import Preprocess
from inspectflow.validation import ValidationReport, validate_dataset, write_report

CLASSES = ["good", "color", "cut", "hole", "thread", "metal_contamination"]
CONFIG = ValidateConfig(min_per_class=3, expected_side=8, min_side=8, unique_images=True)


def make_dataset(per_split: int = 3) -> Dataset:
    """6 classes x (per_split train + per_split test) random 8x8 images named <class>/<nnnn>.png."""
    rng = np.random.default_rng(0)
    rows, images = [], []
    for label in CLASSES:
        for number in range(2 * per_split):
            image = rng.integers(0, 256, size=(8, 8, 1), dtype=np.uint8)
            images.append(image)
            rows.append(
                {
                    "source": f"{label}/{number:04d}.png",
                    "index": 0,
                    "label": label,
                    "split": "train" if number < per_split else "test",
                    "sha256": pixel_sha256(image),
                    "width": 8,
                    "height": 8,
                    "channels": 1,
                    "dtype": "uint8",
                    "pixel_std": float(image.std()),
                    "decode_error": None,
                }
            )
    preprocess = Preprocess("resize", 8, 8, 1)
    info = DatasetInfo(
        classes=list(CLASSES), source="mem", format="npy", preprocess=preprocess, split_origin="seeded"
    )
    return Dataset(images=np.stack(images), manifest=pd.DataFrame(rows), info=info)


@pytest.fixture
def dataset() -> Dataset:
    return make_dataset()


def row(dataset: Dataset, source: str) -> int:
    return int(np.flatnonzero(dataset.manifest["source"] == source)[0])


def only_failure(report: ValidationReport, column: str):
    assert not report.success
    failures = [f for f in report.failures if f.column == column]
    assert len(failures) == 1, report.summary()
    return failures[0]


def test_clean_dataset_passes(dataset: Dataset) -> None:
    report = validate_dataset(dataset, CLASSES, CONFIG)
    assert report.success, report.summary()
    assert report.failures == []
    # 5 not-null, decode, label, split, dtype, 2 min_side, 2 expected_side, std, unique, leakage, counts
    assert report.checks == len(report.passed) == 17
    assert report.summary() == "data validation passed: 17 checks"


def test_no_expected_side_drops_the_exact_size_checks(dataset: Dataset) -> None:
    dataset.manifest.loc[row(dataset, "cut/0001.png"), "width"] = 32
    report = validate_dataset(
        dataset, CLASSES, ValidateConfig(min_per_class=3, expected_side=None, min_side=8)
    )
    assert report.success, report.summary()
    assert report.checks == 15


@pytest.mark.parametrize("column", ["label", "split", "sha256", "width", "height"])
def test_missing_value(dataset: Dataset, column: str) -> None:
    dataset.manifest[column] = dataset.manifest[column].astype(object)
    dataset.manifest.loc[row(dataset, "good/0002.png"), column] = None
    report = validate_dataset(dataset, CLASSES, CONFIG)
    failure = only_failure(report, column)
    assert failure.expectation == "expect_column_values_to_not_be_null"
    assert failure.files == ["good/0002.png"]
    assert f"{column}: 1 image has no {column}: good/0002.png" in report.summary()


def test_undecodable_image_is_reported_once(dataset: Dataset) -> None:
    index = row(dataset, "hole/0003.png")
    dataset.manifest.loc[index, ["decode_error", "pixel_std", "width", "height", "dtype"]] = [
        "cannot identify image file",
        0.0,
        0,
        0,
        None,
    ]
    report = validate_dataset(dataset, CLASSES, CONFIG)
    assert [f.column for f in report.failures] == ["decode_error"], report.summary()
    assert report.failures[0].values == ["cannot identify image file"]
    assert (
        "decode_error: 1 image cannot be decoded: hole/0003.png (cannot identify image file)"
        in report.summary()
    )


def test_label_outside_classes(dataset: Dataset) -> None:
    dataset.manifest.loc[row(dataset, "hole/0001.png"), ["source", "label"]] = ["stain/0001.png", "stain"]
    report = validate_dataset(dataset, CLASSES, CONFIG)
    failure = only_failure(report, "label")
    assert failure.files == ["stain/0001.png"]
    assert failure.values == ["stain"]
    assert f"label: 1 image has a label outside {CLASSES}: stain/0001.png (label 'stain')" in report.summary()


def test_split_outside_train_test(dataset: Dataset) -> None:
    dataset.manifest.loc[row(dataset, "cut/0005.png"), "split"] = "val"
    report = validate_dataset(dataset, CLASSES, CONFIG)
    failure = only_failure(report, "split")
    assert failure.files == ["cut/0005.png"]
    assert "cut/0005.png (split 'val')" in report.summary()


def test_dtype_not_uint8(dataset: Dataset) -> None:
    dataset.manifest.loc[row(dataset, "thread/0000.png"), "dtype"] = "uint16"
    failure = only_failure(validate_dataset(dataset, CLASSES, CONFIG), "dtype")
    assert failure.problem == "1 image is not uint8: thread/0000.png (dtype 'uint16')"


def test_too_small_and_wrong_size(dataset: Dataset) -> None:
    dataset.manifest.loc[row(dataset, "good/0000.png"), "width"] = 4
    dataset.manifest.loc[row(dataset, "good/0001.png"), "height"] = 16
    report = validate_dataset(dataset, CLASSES, CONFIG)
    problems = {(f.column, f.problem) for f in report.failures}
    assert problems == {
        ("width", "1 image is less than 8 px wide: good/0000.png (width 4)"),
        ("width", "1 image is not 8 px wide: good/0000.png (width 4)"),
        ("height", "1 image is not 8 px high: good/0001.png (height 16)"),
    }, report.summary()


def test_constant_image(dataset: Dataset) -> None:
    dataset.manifest.loc[row(dataset, "metal_contamination/0004.png"), "pixel_std"] = 0.0
    failure = only_failure(validate_dataset(dataset, CLASSES, CONFIG), "pixel_std")
    assert failure.files == ["metal_contamination/0004.png"]
    assert failure.expectation == "expect_column_values_to_be_between"


def test_duplicates_name_every_file_sharing_the_hash(dataset: Dataset) -> None:
    sha = dataset.manifest.loc[row(dataset, "color/0000.png"), "sha256"]
    for source in ("color/0001.png", "color/0002.png"):
        dataset.manifest.loc[row(dataset, source), "sha256"] = sha
    failure = only_failure(validate_dataset(dataset, CLASSES, CONFIG), "sha256")
    assert sorted(failure.files) == ["color/0000.png", "color/0001.png", "color/0002.png"]
    assert failure.values == [sha] * 3
    assert "color/0000.png (train) = color/0001.png (train) = color/0002.png (train)" in failure.problem


def test_by_default_repeated_images_fail_only_when_their_labels_differ(dataset: Dataset) -> None:
    config = CONFIG.model_copy(update={"unique_images": False})
    sha = dataset.manifest.loc[row(dataset, "color/0000.png"), "sha256"]
    dataset.manifest.loc[row(dataset, "color/0001.png"), "sha256"] = sha
    assert validate_dataset(dataset, CLASSES, config).success
    dataset.manifest.loc[row(dataset, "hole/0000.png"), "sha256"] = sha
    failure = only_failure(validate_dataset(dataset, CLASSES, config), "same_pixels_other_label")
    assert sorted(failure.files) == ["color/0000.png", "color/0001.png", "hole/0000.png"]
    assert "same pixels but different labels" in failure.problem


def test_train_test_leakage(dataset: Dataset) -> None:
    train, test = row(dataset, "hole/0000.png"), row(dataset, "hole/0004.png")
    dataset.manifest.loc[test, "sha256"] = dataset.manifest.loc[train, "sha256"]
    report = validate_dataset(dataset, CLASSES, CONFIG)
    failure = only_failure(report, "in_train_and_test")
    assert sorted(failure.files) == ["hole/0000.png", "hole/0004.png"]
    assert "2 images are in both train and test (leakage): hole/0000.png (train) = hole/0004.png (test)" in (
        report.summary()
    )
    # A leaked image is also a duplicate.
    assert {f.column for f in report.failures} == {"in_train_and_test", "sha256"}


def test_too_few_images_per_class_and_split(dataset: Dataset) -> None:
    manifest = dataset.manifest
    dataset.manifest = manifest[
        ~manifest["source"].isin(["cut/0005.png", *(f"hole/000{i}.png" for i in range(3))])
    ]
    report = validate_dataset(dataset, CLASSES, CONFIG)
    failure = only_failure(report, "count")
    assert failure.files == []
    assert failure.values == ["cut/test", "hole/train"]
    assert failure.problem == "2 class/splits have fewer than 3 images: cut/test (2), hole/train (0)"


def test_a_missing_class_and_an_unknown_label_are_reported_once_each(dataset: Dataset) -> None:
    thread = dataset.manifest["label"] == "thread"
    dataset.manifest.loc[thread, "label"] = "threads"
    report = validate_dataset(dataset, CLASSES, CONFIG)
    assert [f.column for f in report.failures] == ["label", "count"], report.summary()
    label, count = report.failures
    assert len(label.files) == 6
    assert count.values == ["thread/train", "thread/test"]


def test_long_lists_are_truncated_in_the_problem_but_not_in_files() -> None:
    dataset = make_dataset(per_split=4)
    dataset.manifest["dtype"] = "float32"
    failure = only_failure(validate_dataset(dataset, CLASSES, CONFIG), "dtype")
    assert len(failure.files) == 48
    assert failure.problem.startswith("48 images are not uint8: good/0000.png (dtype 'float32'), ")
    assert failure.problem.endswith(", and 28 more")


def test_a_reloaded_dataset_gives_the_same_report(dataset: Dataset, tmp_path: Path) -> None:
    # In memory, "no error" is None and width an int; after the CSV round trip, <NA> in a string column.
    index = row(dataset, "hole/0003.png")
    dataset.manifest.loc[index, ["decode_error", "pixel_std"]] = ["cannot identify image file", 0.0]
    dataset.manifest.loc[row(dataset, "good/0001.png"), "label"] = "stain"
    save_dataset(dataset, tmp_path)
    assert validate_dataset(load_dataset(tmp_path), CLASSES, CONFIG) == validate_dataset(
        dataset, CLASSES, CONFIG
    )


def test_a_check_that_cannot_run_is_a_failure(dataset: Dataset) -> None:
    dataset.manifest["width"] = "8"
    failures = validate_dataset(dataset, CLASSES, CONFIG).failures
    assert [(f.column, f.problem.split(":")[0]) for f in failures] == [
        ("width", "check 'width >= 8 px' could not run"),
        ("width", "check 'width == 8 px' could not run"),
    ]


def test_a_manifest_without_its_columns_is_a_data_error(dataset: Dataset) -> None:
    with pytest.raises(DataError, match=r"lacks the columns \['pixel_std'\]"):
        validate_dataset(
            Dataset(dataset.images, dataset.manifest.drop(columns="pixel_std"), dataset.info), CLASSES, CONFIG
        )


def test_write_report_round_trips(dataset: Dataset, tmp_path: Path) -> None:
    dataset.manifest.loc[row(dataset, "hole/0001.png"), ["source", "label"]] = ["stain/<0001>.png", "stain"]
    report = validate_dataset(dataset, CLASSES, CONFIG)
    json_path, html_path = write_report(report, tmp_path / "out")
    assert (json_path.name, html_path.name) == ("validation.json", "validation.html")
    assert ValidationReport.from_dict(json.loads(json_path.read_text())) == report
    page = html_path.read_text()
    assert page.count("<tr>") == 1 + report.checks
    assert 'class="fail">fail' in page and 'class="pass">pass' in page
    assert "stain/&lt;0001&gt;.png" in page


def test_good_parts_need_enough_good_training_images_and_both_kinds_under_test() -> None:
    dataset = make_dataset()
    dataset.info.good_class = "good"
    assert validate_dataset(dataset, CLASSES, CONFIG, rules=("good_parts",)).success
    # Only the good class's test images left: nothing defective to score the detector on.
    kept = (dataset.manifest["split"] == "train") | (dataset.manifest["label"] == "good")
    dataset = Dataset(
        dataset.images[kept.to_numpy()], dataset.manifest[kept].reset_index(drop=True), dataset.info
    )
    report = validate_dataset(dataset, CLASSES, ValidateConfig(min_per_class=4), rules=("good_parts",))
    assert not report.success
    (failure,) = report.failures
    assert failure.values == ["good/train", "defective/test"]
    assert "good/train has 3, needs 4; defective/test has 0, needs 1" in failure.problem
