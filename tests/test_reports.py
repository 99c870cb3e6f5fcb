"""DVC metrics and plots of a run: confusion rows from either kind of scores, the metrics file."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import mlflow
import numpy as np
import pytest

from inspectflow.config import TEXTILE_CLASSES, EvaluateConfig
from inspectflow.metrics import segmentation as seg
from inspectflow.reports import (
    CONFUSION_PLOT,
    TRAINING_PLOT,
    confusion_rows,
    write_metrics,
    write_plots,
)
from inspectflow.tasks import load_scores, save_scores
from inspectflow.tasks.classification import ClassificationScores, score_predictions
from inspectflow.tasks.segmentation import SegmentationScores, score_masks

# -- confusion_rows: classification --------------------------------------------------------------------------


def classification_scores(seed: int, n: int = 53) -> tuple[ClassificationScores, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, len(TEXTILE_CLASSES), size=n)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, len(TEXTILE_CLASSES), size=n))
    return score_predictions(y_true, y_pred, list(TEXTILE_CLASSES)), y_true, y_pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_rows_are_one_per_test_image_and_match_the_matrix(seed: int) -> None:
    scores, y_true, y_pred = classification_scores(seed)

    rows = confusion_rows(scores)

    assert len(rows) == len(y_true) == sum(map(sum, scores.confusion))
    assert all(set(row) == {"actual", "predicted"} for row in rows)
    counted = Counter((row["actual"], row["predicted"]) for row in rows)
    for i, actual in enumerate(scores.classes):
        for j, predicted in enumerate(scores.classes):
            assert counted[(actual, predicted)] == scores.confusion[i][j]
    classes = np.array(TEXTILE_CLASSES)
    assert counted == Counter(zip(classes[y_true].tolist(), classes[y_pred].tolist(), strict=True))


def test_classification_rows_survive_the_scores_json_round_trip(tmp_path: Path) -> None:
    scores, *_ = classification_scores(4)
    save_scores(scores, tmp_path / "scores.json")

    assert Counter(map(str, confusion_rows(load_scores(tmp_path / "scores.json")))) == Counter(
        map(str, confusion_rows(scores))
    )


def test_a_class_missing_from_the_test_split_gives_no_rows() -> None:
    scores = score_predictions(np.array([0, 0, 1]), np.array([0, 1, 1]), ["good", "hole", "cut"])

    assert sorted((r["actual"], r["predicted"]) for r in confusion_rows(scores)) == [
        ("good", "good"),
        ("good", "hole"),
        ("hole", "hole"),
    ]


# -- confusion_rows: segmentation ----------------------------------------------------------------------------


def masks_with_counts(
    rng: np.random.Generator, groups: dict[str, int], side: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random predicted and true masks ``(N, side, side)`` for images in ``groups`` (name: image count)."""
    names = np.concatenate([[name] * count for name, count in groups.items()])
    n = len(names)
    truth = np.zeros((n, side, side), dtype=bool)
    pred = np.zeros((n, side, side), dtype=bool)
    for i in range(n):
        if rng.random() < 0.45:  # a defective image: a square of defect
            top, left, size = rng.integers(0, side - 2), rng.integers(0, side - 2), rng.integers(1, 3)
            truth[i, top : top + size, left : left + size] = True
        if rng.random() < 0.5:  # a prediction of any size, from nothing to a few pixels
            pred[i] = rng.random((side, side)) < rng.choice([0.0, 0.01, 0.1])
    return pred, truth, names


def areas(pred: np.ndarray) -> np.ndarray:
    """Image scores for these tests: each image's predicted defect area."""
    return pred.reshape(len(pred), -1).mean(axis=1)


def expected_counts(pred: np.ndarray, truth: np.ndarray, threshold: float) -> Counter[tuple[str, str]]:
    rates = seg.detection_rates(areas(pred), truth.reshape(len(truth), -1).any(axis=1), threshold)
    return Counter(
        {
            ("defective", "defective"): int(rates["true_positives"]),
            ("defective", "clean"): int(rates["false_negatives"]),
            ("clean", "defective"): int(rates["false_positives"]),
            ("clean", "clean"): int(rates["true_negatives"]),
        }
    )


@pytest.mark.parametrize("seed", range(12))
def test_segmentation_rows_reconstruct_the_detection_counts_exactly(seed: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(seed)
    # Odd group sizes, so the rates are ratios such as 3/7 that floating point does not hold exactly.
    groups = {"Class1": int(rng.integers(1, 12)), "Class2": int(rng.integers(1, 30)), "Class7": 13}
    pred, truth, names = masks_with_counts(rng, groups)
    config = EvaluateConfig(detection_threshold=0.0)
    scores = score_masks(pred, areas(pred), truth, names, config)
    expected = expected_counts(pred, truth, config.detection_threshold)

    rows = confusion_rows(scores)

    assert len(rows) == len(pred)
    assert Counter((r["actual"], r["predicted"]) for r in rows) == +expected
    save_scores(scores, tmp_path / "scores.json")
    reloaded = load_scores(tmp_path / "scores.json")
    assert isinstance(reloaded, SegmentationScores)
    assert Counter((r["actual"], r["predicted"]) for r in confusion_rows(reloaded)) == +expected


@pytest.mark.parametrize("truth_defective", [False, True])
def test_segmentation_rows_when_every_image_is_of_one_kind(truth_defective: bool) -> None:
    rng = np.random.default_rng(5)
    pred = rng.random((9, 8, 8)) < 0.05
    truth = np.zeros((9, 8, 8), dtype=bool)
    if truth_defective:
        truth[:, 2:4, 2:4] = True
    config = EvaluateConfig(detection_threshold=0.0)
    scores = score_masks(pred, areas(pred), truth, np.array(["Class1"] * 9), config)

    rows = confusion_rows(scores)

    assert len(rows) == 9
    assert {r["actual"] for r in rows} == {"defective" if truth_defective else "clean"}
    assert Counter((r["actual"], r["predicted"]) for r in rows) == +expected_counts(
        pred, truth, config.detection_threshold
    )


# -- write_metrics -------------------------------------------------------------------------------------------


def summary(decision: str = "promoted") -> dict:
    return {
        "mlflow_run_id": "abc",
        "model_name": "textile-classifier",
        "version": "12",
        "alias": "champion" if decision == "promoted" else "challenger",
        "decision": decision,
        "reason": "because",
        "metrics": {"test/macro_f1": 0.123456789, "test/accuracy": 0.987654321, "test/f1/hole": 1.0},
    }


def test_write_metrics_writes_sorted_rounded_json_of_scores_only(tmp_path: Path) -> None:
    path = tmp_path / "metrics" / "nested" / "textile.json"  # parents are created

    written = write_metrics(summary(), {"train/loss": 0.5, "test/accuracy": 0.1}, path)

    text = path.read_text()
    assert text.endswith("}\n")
    assert json.loads(text) == written
    assert list(json.loads(text)) == sorted(written)
    assert text == json.dumps(written, indent=2, sort_keys=True) + "\n"
    assert written == {
        "test/accuracy": 0.987654,  # from the summary, not the run's metrics
        "test/f1/hole": 1.0,
        "test/macro_f1": 0.123457,
    }


def test_write_metrics_adds_the_cross_validation_estimate_under_its_own_name(tmp_path: Path) -> None:
    run_metrics = {
        "cv/accuracy_mean": 0.91234567,
        "cv/accuracy_std": 0.0123456789,
        "cv/macro_f1_mean": 0.5,
        "cv/recall_mean/hole": 0.7,
        "svm_c": 1.0,
    }

    written = write_metrics(summary("rejected"), run_metrics, tmp_path / "m.json")

    assert written["cv/accuracy_mean"] == 0.912346
    assert written["cv/accuracy_std"] == 0.012346
    assert written["cv/macro_f1_mean"] == 0.5
    assert written["test/macro_f1"] == 0.123457  # the test score stays under its own name, beside it
    assert "svm_c" not in written and "cv/recall_mean/hole" not in written
    assert "promoted" not in written and "model_version" not in written
    assert json.loads((tmp_path / "m.json").read_text()) == written


def test_write_metrics_overwrites_a_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write_metrics(summary(), {"cv/accuracy_mean": 0.5}, path)
    written = write_metrics(summary(), {}, path)
    assert "cv/accuracy_mean" not in json.loads(path.read_text()) and "cv/accuracy_mean" not in written


# -- write_plots ---------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("tracking")
def test_write_plots_reads_the_history_and_scores_of_an_mlflow_run(tmp_path: Path) -> None:
    scores, y_true, _ = classification_scores(7, n=20)
    save_scores(scores, tmp_path / "scores.json")
    epochs = [{"train/loss": 1.0, "val/loss": 1.2}, {"train/loss": 0.5, "val/loss": 0.7}]
    with mlflow.start_run() as run:
        mlflow.log_dict({"epochs": epochs}, "training/history.json")
        mlflow.log_artifact(str(tmp_path / "scores.json"), "evaluation")

    written = write_plots(run.info.run_id, tmp_path / "plots")

    assert sorted(p.name for p in written) == sorted([TRAINING_PLOT, CONFUSION_PLOT])
    with (tmp_path / "plots" / TRAINING_PLOT).open() as handle:
        assert list(csv.DictReader(handle)) == [
            {"epoch": "1", "train/loss": "1.0", "val/loss": "1.2"},
            {"epoch": "2", "train/loss": "0.5", "val/loss": "0.7"},
        ]
    with (tmp_path / "plots" / CONFUSION_PLOT).open() as handle:
        assert len(list(csv.DictReader(handle))) == len(y_true)


@pytest.mark.usefixtures("tracking")
def test_write_plots_without_a_training_history_writes_only_the_confusion(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    pred, truth, names = masks_with_counts(rng, {"Class1": 5})
    save_scores(score_masks(pred, areas(pred), truth, names, EvaluateConfig()), tmp_path / "scores.json")
    with mlflow.start_run() as run:  # features+svm: no epochs, no history
        mlflow.log_artifact(str(tmp_path / "scores.json"), "evaluation")

    written = write_plots(run.info.run_id, tmp_path / "plots")

    assert [p.name for p in written] == [CONFUSION_PLOT]
    with (tmp_path / "plots" / CONFUSION_PLOT).open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5 and {r["actual"] for r in rows} <= {"clean", "defective"}
