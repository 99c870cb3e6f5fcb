import numpy as np
import pytest

from inspectflow.config import RegisterConfig
from inspectflow.metrics.operating_point import rate_fields
from inspectflow.steps.register import decide
from inspectflow.tasks.classification import ClassificationScores, score_predictions

CLASSES = ["good", "hole"]
LEVELS = ["good", "hole", "stain"]


def scores(
    macro_f1: float, good: float, hole: float, accuracy: float = 0.9, support: tuple[int, int] = (5, 5)
) -> ClassificationScores:
    f1 = {"good": good, "hole": hole}
    counts = dict(zip(CLASSES, support, strict=True))
    return ClassificationScores(CLASSES, accuracy, macro_f1, f1, f1, f1, counts, [])


def predicted(*mistakes: tuple[str, str, int], per_class: int = 100) -> ClassificationScores:
    """Scores of ``per_class`` test images of each of :data:`LEVELS`, in the same order for every model,
    all right but the first ``count`` of each ``(true, predicted, count)``."""
    truth = np.repeat(np.arange(len(LEVELS)), per_class)
    guesses = truth.copy()
    for actual, guess, count in mistakes:
        guesses[np.flatnonzero(truth == LEVELS.index(actual))[:count]] = LEVELS.index(guess)
    return score_predictions(truth, guesses, LEVELS)


GATE = RegisterConfig(min_improvement=0.01, max_class_drop=0.05)


def test_first_model_becomes_champion() -> None:
    decision = decide(scores(0.5, 0.5, 0.5), None, GATE)
    assert decision.promote and "no champion yet" in decision.reason


def test_a_clear_improvement_is_promoted() -> None:
    champion = predicted(("good", "stain", 20), ("stain", "good", 20))
    decision = decide(predicted(), champion, GATE)
    assert decision.promote
    assert f"beats champion {champion.macro_f1:.4f} by +" in decision.reason


def test_no_improvement_is_rejected() -> None:
    decision = decide(predicted(("hole", "good", 10)), predicted(("hole", "good", 10)), GATE)
    assert not decision.promote
    assert "gain +0.0000 (95% interval +0.0000 to +0.0000), whose lower end is not above the required" in (
        decision.reason
    )


def test_a_gain_within_the_noise_of_the_test_images_is_rejected() -> None:
    # Issue 27: two runs of the same settings differ on a few images; that must never move production.
    champion = predicted(("good", "stain", 4), ("hole", "good", 4))
    decision = decide(
        predicted(("hole", "good", 4)), champion, GATE.model_copy(update={"min_improvement": 0})
    )
    assert decision.new_score > decision.champion_score  # type: ignore[operator]
    assert not decision.promote and "whose lower end is not above the required 0.0000" in decision.reason


def test_a_per_class_regression_blocks_promotion() -> None:
    champion = predicted(("good", "stain", 40), ("stain", "good", 40))
    decision = decide(predicted(("hole", "stain", 12)), champion, GATE)
    assert not decision.promote
    assert "hole F1 -0.0638" in decision.reason


def test_accuracy_can_be_the_primary_metric() -> None:
    gate = RegisterConfig(primary_metric="accuracy", min_improvement=0.0)
    assert decide(predicted(), predicted(("good", "hole", 30)), gate).promote


def test_only_the_test_splits_score_is_judged_whatever_the_methods_own_estimate() -> None:
    # Issue 24: features+svm was judged by its cross-validated mean (0.95 here) in place of its test
    # accuracy (0.5) and promoted over a champion at 0.9. No other number can be handed to the gate now.
    gate = RegisterConfig(primary_metric="accuracy", min_improvement=0.01)
    new, champion = predicted(("good", "hole", 100), ("hole", "stain", 50)), predicted(("stain", "good", 30))
    with pytest.raises(TypeError):
        decide(new, champion, gate, 0.95)  # type: ignore[misc]
    decision = decide(new, champion, gate)
    assert not decision.promote and decision.new_score == 0.5 and decision.champion_score == 0.9
    assert decision.reason.startswith("test accuracy 0.5000 vs champion 0.9000 on the same 300 test images:")


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
    against = decide(predicted(), predicted(("good", "hole", 40)), GATE, baseline=majority)
    assert against.reason == (
        "test macro_f1 1.0000 beats champion 0.8611 by +0.1389 (95% interval +0.1016 to +0.1792) on the same "
        "300 test images (trivial baseline: 0.3333) (lower end > 0.0100), no class F1 drops more than 0.0500"
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
    result = score_predictions(truth.astype(int), flagged.astype(int), CLASSES)
    result.decision_rates = rate_fields(truth, flagged)
    result.defective, result.flagged = truth.tolist(), flagged.tolist()
    return result


FRR_GATE = RegisterConfig(primary_metric="false_reject_rate", min_improvement=0.0, max_class_drop=0.05)


def test_false_rejects_are_judged_lower_is_better_at_the_signed_recall() -> None:
    first = decide(rated(4, 1), None, FRR_GATE, target_recall=0.95)
    better = decide(rated(0, 1), rated(8, 1), FRR_GATE, target_recall=0.95)
    worse = decide(rated(6, 0), rated(4, 1), FRR_GATE, target_recall=0.95)

    assert first.promote and first.new_score == pytest.approx(0.1)
    assert better.promote and better.reason.startswith(
        "test false_reject_rate 0.0000 beats champion 0.2000 by +0.2000 (95% interval"
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


def test_a_version_that_passes_too_many_defective_parts_is_refused_whatever_its_score() -> None:
    # 19 of 40 defective parts pass: a fair macro-F1, and half the defects shipped.
    halfway = rated(0, 19)
    floored = RegisterConfig(max_escape_rate=0.2)
    assert decide(halfway, None, RegisterConfig()).promote  # without the floor
    decision = decide(halfway, None, floored)
    assert not decision.promote
    assert decision.reason.startswith("test escape rate 47.5% (19 of 40;")
    assert decision.reason.endswith(
        "at the operating point is above register.max_escape_rate 20.0%: too many defective parts pass "
        "for use on a line; not promoted"
    )
    assert decide(rated(0, 8), None, floored).promote  # 20.0% is not above 20%
    no_decisions = decide(scores(0.9, 0.9, 0.9), None, floored)
    assert not no_decisions.promote and no_decisions.reason.startswith("no escape rate on this test split")
