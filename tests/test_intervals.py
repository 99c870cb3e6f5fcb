"""Bootstrap intervals of test scores, paired gains, and the graded-level (ordinal) scores."""

import re

import numpy as np
import pytest
import torch
from sklearn.metrics import cohen_kappa_score

from inspectflow.config import EvaluateConfig, build_config
from inspectflow.errors import ConfigError
from inspectflow.metrics.intervals import (
    Interval,
    load_intervals,
    paired_gain,
    save_intervals,
    score_intervals,
)
from inspectflow.models.losses import squared_emd_loss
from inspectflow.tasks.classification import quadratic_kappa, score_predictions
from inspectflow.tasks.segmentation import score_masks

LEVELS = ["p000", "p033", "p067", "p100"]


def graded(n: int = 200, seed: int = 0, right: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """True levels and predictions that are right with probability ``right``, else one level off."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, len(LEVELS), n)
    off = np.clip(truth + rng.choice([-1, 1], n), 0, len(LEVELS) - 1)
    return truth, np.where(rng.random(n) < right, truth, off)


def test_every_resampled_metric_of_the_whole_split_is_the_metric() -> None:
    truth, guesses = graded(57)
    scores = score_predictions(truth, guesses, LEVELS, ordinal=True)
    whole = np.arange(57)[None, :]
    for metric in ("accuracy", "macro_f1", "kappa", "mean_level_error"):
        assert scores.resampled(metric, whole)[0] == pytest.approx(getattr(scores, metric)), metric

    rng = np.random.default_rng(3)
    truth_masks = rng.random((9, 8, 8)) < 0.2
    truth_masks[:3] = False  # clean images too
    masks = score_masks(
        rng.random((9, 8, 8)) < 0.2, rng.random(9), truth_masks, np.zeros(9), EvaluateConfig()
    )
    for metric in ("dice", "iou", "defect_dice", "mean_defect_iou", "detection_tpr", "detection_fpr"):
        assert masks.resampled(metric, np.arange(9)[None, :])[0] == pytest.approx(getattr(masks, metric)), (
            metric
        )


def test_an_interval_holds_its_score_and_narrows_with_more_images() -> None:
    small = score_intervals(score_predictions(*graded(40), LEVELS), ["accuracy", "macro_f1"])
    large = score_intervals(score_predictions(*graded(1000), LEVELS), ["accuracy", "macro_f1"])
    for intervals in (small, large):
        for interval in intervals.values():
            assert interval.low <= interval.value <= interval.high
    assert small["accuracy"].high - small["accuracy"].low > 2 * (
        large["accuracy"].high - large["accuracy"].low
    )
    # Seeded: the same images give the same interval in every run.
    assert (
        score_intervals(score_predictions(*graded(40), LEVELS), ["accuracy"])["accuracy"] == small["accuracy"]
    )


def test_a_paired_gain_is_zero_for_the_same_predictions_and_signed_for_lower_is_better() -> None:
    truth, guesses = graded(100)
    same = score_predictions(truth, guesses, LEVELS, ordinal=True)
    assert paired_gain(same, same, "macro_f1", lower_is_better=False) == Interval(0.0, 0.0, 0.0)
    better = score_predictions(truth, truth, LEVELS, ordinal=True)
    gain = paired_gain(better, same, "mean_level_error", lower_is_better=True)
    assert gain.value == pytest.approx(same.mean_level_error) and gain.low > 0
    with pytest.raises(ValueError, match="same test images"):
        paired_gain(score_predictions(truth[:50], guesses[:50], LEVELS), same, "accuracy", False)


def test_intervals_round_trip_through_their_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    intervals = {"macro_f1": Interval(0.8, 0.7, 0.9)}
    save_intervals(intervals, tmp_path / "intervals.json")
    assert load_intervals(tmp_path / "intervals.json") == intervals
    assert load_intervals(tmp_path / "missing.json") == {}


def test_quadratic_kappa_is_scikit_learns_and_zero_where_undefined() -> None:
    for seed in range(20):
        truth, guesses = graded(30, seed, right=0.5)
        expected = cohen_kappa_score(truth, guesses, labels=range(4), weights="quadratic")
        assert quadratic_kappa(truth, guesses, 4) == pytest.approx(expected)
    assert quadratic_kappa(np.zeros(5, int), np.zeros(5, int), 4) == 0.0


def test_graded_levels_are_scored_by_kappa_and_level_error_and_unordered_classes_are_not() -> None:
    truth = np.array([0, 1, 2, 3, 3])
    near, far = np.array([0, 1, 2, 3, 2]), np.array([0, 1, 2, 3, 0])
    scored_near, scored_far = (score_predictions(truth, p, LEVELS, ordinal=True) for p in (near, far))
    # One mistake each: macro-F1 cannot tell a neighbour from the far end; kappa and level error can.
    assert scored_near.accuracy == scored_far.accuracy
    assert scored_near.kappa > scored_far.kappa and scored_near.mean_level_error == pytest.approx(0.2)
    assert scored_far.mean_level_error == pytest.approx(0.6)
    assert {"test/kappa", "test/mean_level_error"} <= set(scored_near.metrics())
    unordered = score_predictions(truth, near, LEVELS)
    assert np.isnan(unordered.kappa) and "test/kappa" not in unordered.metrics()


def test_the_squared_emd_loss_grows_with_the_levels_between() -> None:
    certain = torch.full((3, 4), -30.0)
    certain[torch.arange(3), torch.tensor([0, 1, 3])] = 30.0  # predicts levels 0, 1 and 3
    losses = [float(squared_emd_loss(certain[i : i + 1], torch.tensor([0]))) for i in range(3)]
    assert losses == pytest.approx([0.0, 1.0, 3.0], abs=1e-6)
    logits = torch.zeros(2, 4, requires_grad=True)
    squared_emd_loss(logits, torch.tensor([0, 3]), torch.tensor([1.0, 1.0, 1.0, 2.0])).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_graded_settings_need_data_ordinal() -> None:
    with pytest.raises(ConfigError, match=re.escape("register.primary_metric=kappa is for graded levels")):
        build_config("cells", ["register.primary_metric=kappa"], task="classification")
    with pytest.raises(ConfigError, match=re.escape("train.loss=cross_entropy+emd is for graded levels")):
        build_config("cells", ["train.loss=cross_entropy+emd"], task="classification")
    config = build_config(
        "cells",
        ["data.ordinal=true", "register.primary_metric=kappa", "train.loss=cross_entropy+emd"],
        task="classification",
    )
    assert config.data.ordinal and "data.ordinal" in config.used()
    assert "data.ordinal" not in build_config("dagm").used()
