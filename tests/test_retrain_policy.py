"""The retrain policy (``inspectflow retrain``): new data version, drift, and the line that says why."""

from __future__ import annotations

import pytest

from inspectflow.lifecycle.retrain import Champion, Verdict, decide_retrain

NAME, SOURCE = "textile-classifier", "data/textile"


def test_no_champion_yet_retrains() -> None:
    decision = decide_retrain(NAME, SOURCE, "abc", None)
    assert decision.retrain and decision.verdict is Verdict.RETRAIN
    assert decision.reason == "data/textile: data version abc (champion: no champion yet); retraining"


def test_a_new_data_version_retrains() -> None:
    decision = decide_retrain(NAME, SOURCE, "new", Champion("3", "old"))
    assert decision.retrain
    assert decision.reason == "data/textile: data version new (champion: old); retraining"


def test_a_champion_without_a_data_version_tag_is_retrained_on_any_data() -> None:
    decision = decide_retrain(NAME, SOURCE, "abc", Champion("1", None))
    assert decision.retrain
    assert decision.reason == "data/textile: data version abc (champion: unknown); retraining"


def test_the_champions_own_data_is_not_retrained_on() -> None:
    decision = decide_retrain(NAME, SOURCE, "abc", Champion("3", "abc"))
    assert not decision.retrain and decision.verdict is Verdict.SAME_DATA
    assert decision.reason == (
        "data/textile: data version abc is the one textile-classifier version 3 (@champion) was trained on; "
        "nothing to retrain"
    )


def test_no_drift_means_nothing_to_retrain_even_on_new_data() -> None:
    decision = decide_retrain(NAME, SOURCE, "new", Champion("3", "old"), "new-images", drifted=False)
    assert not decision.retrain and decision.verdict is Verdict.NO_DRIFT
    assert decision.reason == "new-images: no drift from textile-classifier version 3; nothing to retrain"


def test_drift_on_new_data_retrains() -> None:
    decision = decide_retrain(NAME, SOURCE, "new", Champion("3", "old"), "new-images", drifted=True)
    assert decision.retrain


def test_drift_on_the_champions_own_data_needs_labelled_images_first() -> None:
    decision = decide_retrain(NAME, SOURCE, "abc", Champion("3", "abc"), "new-images", drifted=True)
    assert not decision.retrain and decision.verdict is Verdict.NEEDS_NEW_DATA
    assert decision.reason == (
        "data/textile: data version abc is the one textile-classifier version 3 was trained on; add labelled "
        "images of the new conditions (inspectflow data import), then retrain"
    )


def test_a_drift_verdict_needs_a_champion_and_the_images() -> None:
    with pytest.raises(ValueError, match="champion"):
        decide_retrain(NAME, SOURCE, "abc", None, "new-images", drifted=True)
    with pytest.raises(ValueError, match="champion"):
        decide_retrain(NAME, SOURCE, "abc", Champion("3", "abc"), None, drifted=False)
