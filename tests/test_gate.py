import numpy as np
import pytest

from inspectflow.config import RegisterConfig
from inspectflow.metrics.operating_point import rate_fields
from inspectflow.steps.register import decide
from inspectflow.tasks.classification import ClassificationScores

CLASSES = ["good", "hole"]


def scores(
    macro_f1: float, good: float, hole: float, accuracy: float = 0.9, support: tuple[int, int] = (5, 5)
) -> ClassificationScores:
    f1 = {"good": good, "hole": hole}
    counts = dict(zip(CLASSES, support, strict=True))
    return ClassificationScores(CLASSES, accuracy, macro_f1, f1, f1, f1, counts, [])


GATE = RegisterConfig(min_improvement=0.01, max_class_drop=0.05)


def test_first_model_becomes_champion() -> None:
    decision = decide(scores(0.5, 0.5, 0.5), None, GATE)
    assert decision.promote and "no champion yet" in decision.reason


def test_a_clear_improvement_is_promoted() -> None:
    decision = decide(scores(0.90, 0.90, 0.90), scores(0.85, 0.88, 0.82), GATE)
    assert decision.promote
    assert "beats champion 0.8500" in decision.reason


@pytest.mark.parametrize("new_score", [0.85, 0.855, 0.86])
def test_no_or_too_small_improvement_is_rejected(new_score: float) -> None:
    decision = decide(scores(new_score, 0.85, 0.85), scores(0.85, 0.85, 0.85), GATE)
    assert not decision.promote
    assert "is not above the required 0.0100" in decision.reason


def test_a_per_class_regression_blocks_promotion() -> None:
    decision = decide(scores(0.92, 0.99, 0.85), scores(0.88, 0.85, 0.91), GATE)
    assert not decision.promote
    assert "hole F1 -0.0600" in decision.reason


def test_accuracy_can_be_the_primary_metric() -> None:
    gate = RegisterConfig(primary_metric="accuracy", min_improvement=0.0)
    assert decide(scores(0.5, 0.9, 0.9, accuracy=0.95), scores(0.9, 0.9, 0.9, accuracy=0.9), gate).promote


def test_only_the_test_splits_score_is_judged_whatever_the_methods_own_estimate() -> None:
    # Issue 24: features+svm was judged by its cross-validated mean (0.95 here) in place of its test
    # accuracy (0.5) and promoted over a champion at 0.9. No other number can be handed to the gate now.
    gate = RegisterConfig(primary_metric="accuracy", min_improvement=0.01)
    with pytest.raises(TypeError):
        decide(scores(0.9, 0.9, 0.9, accuracy=0.5), scores(0.9, 0.9, 0.9, accuracy=0.9), gate, 0.95)  # type: ignore[misc]
    decision = decide(scores(0.9, 0.9, 0.9, accuracy=0.5), scores(0.9, 0.9, 0.9, accuracy=0.9), gate)
    assert not decision.promote and decision.new_score == 0.5 and decision.champion_score == 0.9
    assert decision.reason.startswith("test accuracy 0.5000 vs champion 0.9000 on the same 10 test images:")


def test_every_reason_names_the_test_metric_its_images_and_the_baseline() -> None:
    majority = scores(0.3333, 1.0, 0.0, accuracy=0.5)
    first = decide(scores(0.9, 0.9, 0.9), None, GATE, baseline=majority, baseline_description="majority")
    low = decide(
        scores(0.55, 0.55, 0.55), None, GATE.model_copy(update={"min_score": 0.6}), baseline=majority
    )

    assert first.promote
    assert (
        first.reason == "no champion yet; test macro_f1 0.9000 on 10 test images (trivial baseline: 0.3333)"
    )
    assert low.reason == (
        "test macro_f1 0.5500 on 10 test images is below register.min_score 0.6000 "
        "(trivial baseline: 0.3333); not promoted"
    )
    against = decide(scores(0.9, 0.9, 0.9), scores(0.85, 0.88, 0.82), GATE, baseline=majority)
    assert against.reason.startswith(
        "test macro_f1 0.9000 beats champion 0.8500 by +0.0500 on the same 10 test images "
        "(trivial baseline: 0.3333) (> 0.0100)"
    )


def test_a_score_below_min_score_is_never_promoted_not_even_first() -> None:
    gate = GATE.model_copy(update={"min_score": 0.6})
    decision = decide(scores(0.55, 0.55, 0.55), None, gate)
    assert not decision.promote
    assert "below register.min_score 0.6000" in decision.reason


def test_a_model_that_does_not_beat_the_trivial_baseline_is_never_promoted() -> None:
    majority = scores(0.3333, 1.0, 0.0, accuracy=0.5)
    decision = decide(scores(0.36, 0.7, 0.02), None, GATE, baseline=majority, baseline_description="majority")
    assert not decision.promote
    assert decision.reason == (
        "test macro_f1 0.3600 on 10 test images does not beat the trivial baseline (majority: test macro_f1 "
        "0.3333 on the same images) by more than register.baseline_margin 0.0500; not promoted"
    )
    assert decide(scores(0.40, 0.7, 0.1), None, GATE, baseline=majority).promote
    unguarded = GATE.model_copy(update={"baseline_margin": None})
    assert decide(scores(0.36, 0.7, 0.02), None, unguarded, baseline=majority).promote


def rated(false_reject: int, escapes: int, good: int = 40, defective: int = 40) -> ClassificationScores:
    """Scores whose decisions flagged ``false_reject`` good parts and passed ``escapes`` defective ones."""
    truth = np.r_[np.zeros(good, bool), np.ones(defective, bool)]
    flagged = np.r_[np.arange(good) < false_reject, np.arange(defective) >= escapes]
    result = scores(0.9, 0.9, 0.9, support=(good, defective))
    result.decision_rates = rate_fields(truth, flagged)
    return result


FRR_GATE = RegisterConfig(primary_metric="false_reject_rate", min_improvement=0.0, max_class_drop=0.05)


def test_false_rejects_are_judged_lower_is_better_at_the_signed_recall() -> None:
    first = decide(rated(4, 1), None, FRR_GATE, target_recall=0.95)
    better = decide(rated(2, 1), rated(4, 1), FRR_GATE, target_recall=0.95)
    worse = decide(rated(6, 0), rated(4, 1), FRR_GATE, target_recall=0.95)

    assert first.promote and first.new_score == pytest.approx(0.1)
    assert better.promote and better.reason.startswith(
        "test false_reject_rate 0.0500 beats champion 0.1000 by +0.0500 on the same 80 test images"
    )
    assert not worse.promote and "gain -0.0500" in worse.reason


def test_passing_every_part_is_refused_by_the_escape_floor() -> None:
    # The majority-class baseline of a line: no false reject, every defect escapes.
    decision = decide(rated(0, 40), None, FRR_GATE, target_recall=0.95)

    assert not decision.promote
    assert "escape rate 100.0% (40 of 40" in decision.reason and "target_recall 0.95" in decision.reason


def test_an_escape_rate_within_the_tests_sampling_error_of_the_target_passes() -> None:
    # 3 escapes in 40 (7.5%) is not significantly above 5%; 12 in 40 is.
    assert decide(rated(4, 3), None, FRR_GATE, target_recall=0.95).promote
    assert not decide(rated(4, 12), None, FRR_GATE, target_recall=0.95).promote


def test_flagging_every_part_is_refused_by_the_baseline_margin() -> None:
    decision = decide(rated(39, 0), None, FRR_GATE, target_recall=0.95)

    assert not decision.promote and "does not beat flagging every part" in decision.reason


def test_a_champion_without_false_reject_rate_is_not_replaced_automatically() -> None:
    decision = decide(rated(2, 1), scores(0.9, 0.9, 0.9), FRR_GATE, target_recall=0.95)

    assert not decision.promote and "champion has no false_reject_rate" in decision.reason
