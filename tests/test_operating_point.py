"""The operating point: threshold for a target defect recall, escape and false-reject rates, curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inspectflow.metrics.operating_point import curves, pick_threshold, rates

# Ten defective parts scoring 0.91..1.00 and ten good ones 0.05..0.955, two among the defects' scores.
DEFECT = np.linspace(0.91, 1.0, 10)
GOOD = np.array([0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.925, 0.955])
SCORES = np.concatenate([DEFECT, GOOD])
TRUTH = np.concatenate([np.ones(10, bool), np.zeros(10, bool)])


@pytest.mark.parametrize(
    ("target", "flagged_defects", "flagged_good"),
    # 0.9 costs the same two false rejects as 1.0, so it flags all ten defects; 0.1 as few as 0.5.
    [(1.0, 10, 2), (0.9, 10, 2), (0.5, 5, 0), (0.1, 5, 0)],
)
def test_the_threshold_reaches_the_target_recall_with_the_fewest_false_rejects(
    target: float, flagged_defects: int, flagged_good: int
) -> None:
    threshold = pick_threshold(SCORES, TRUTH, target)

    assert threshold is not None
    assert int((threshold < DEFECT).sum()) == flagged_defects
    assert int((threshold < GOOD).sum()) == flagged_good
    # It sits on the highest good score still passed: anything above every passed good image is flagged.
    assert threshold in GOOD[threshold >= GOOD]


def test_no_defective_image_leaves_no_threshold_to_pick() -> None:
    assert pick_threshold(GOOD, np.zeros(10, bool), 0.99) is None


def test_a_threshold_below_every_score_flags_them_all() -> None:
    threshold = pick_threshold(np.array([0.5, 0.6]), np.array([True, True]), 1.0)

    assert threshold is not None and threshold < 0.5 and (np.array([0.5, 0.6]) > threshold).all()


def test_rates_count_escapes_among_defects_and_false_rejects_among_good_parts() -> None:
    result = rates(TRUTH, SCORES > 0.935)  # passes defects 0.91..0.93, flags good 0.955

    escape, false_reject = result["escape_rate"], result["false_reject_rate"]
    assert (escape.count, escape.total, escape.value) == (3, 10, pytest.approx(0.3))
    assert (false_reject.count, false_reject.total, false_reject.value) == (1, 10, pytest.approx(0.1))
    assert escape.low < 0.3 < escape.high and 0.0 <= false_reject.low < 0.1 < false_reject.high
    assert "30.0% (3 of 10; 95% CI" in str(escape)
    assert rates(TRUTH, SCORES > 0.935) == result  # seeded: the same figures every time


def test_no_escape_in_ten_is_not_an_escape_rate_known_to_be_zero() -> None:
    escape = rates(TRUTH, SCORES > 0.5)["escape_rate"]
    assert (escape.value, escape.low) == (0.0, 0.0)
    assert escape.high == pytest.approx(1 - 0.025 ** (1 / 10))  # exact binomial bound: about 31%


def test_a_kind_of_image_missing_gives_an_unknown_rate() -> None:
    false_reject = rates(np.ones(10, bool), DEFECT > 0.5)["false_reject_rate"]

    assert math.isnan(false_reject.value) and false_reject.total == 0


def test_curves_span_both_kinds_of_image() -> None:
    result = curves(SCORES, TRUTH)

    assert result is not None
    assert result.true_positive_rate[-1] == 1.0 and result.false_positive_rate[-1] == 1.0
    assert 0.5 < result.roc_auc <= 1.0 and 0.5 < result.average_precision <= 1.0
    assert all(math.isfinite(value) for value in result.roc_thresholds)
    assert curves(GOOD, np.zeros(10, bool)) is None
