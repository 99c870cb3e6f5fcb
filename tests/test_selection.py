"""``train.method=auto``: candidates compared on the same held-out parts of the training split."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_config
from inspectflow.config import PipelineConfig
from inspectflow.data.splits import selection_folds, stratified_holdout
from inspectflow.models.selection import Candidate, Estimate, choose
from inspectflow.steps.ingest import ingest
from inspectflow.steps.train import choose_method
from inspectflow.tasks import get_task


def fixed(*scores: float) -> Candidate:
    """A candidate scoring ``scores`` on successive parts (and recording that it ran)."""
    queue = list(scores)
    return Candidate(f"scores {scores}", {"svm_kernel": "linear"}, lambda held_out: (queue.pop(0), None))


def test_the_best_mean_wins_and_the_cheaper_on_a_tie() -> None:
    parts = [np.zeros(4, bool)] * 2
    cheap, tied, worse = fixed(0.6, 0.8), fixed(0.8, 0.6), fixed(0.5, 0.5)
    choice = choose([cheap, tied, worse], parts, "macro_f1", "2 folds")
    assert choice.winner.name == cheap.name and [e.mean for e in choice.estimates] == [0.7, 0.7, 0.5]
    better = fixed(0.9, 0.7)
    assert choose([fixed(0.6, 0.8), better], parts, "macro_f1", "2 folds").winner.name == better.name
    assert "train.method=auto compared macro_f1 on 2 folds: scores (0.6, 0.8) 0.7000 ± 0.1000" in (
        choice.describe()
    )


def test_nothing_runs_after_a_perfect_candidate_or_past_the_budget() -> None:
    parts = [np.zeros(4, bool)]
    perfect = choose([fixed(1.0), fixed(0.5)], parts, "accuracy", "1 split")
    assert [e.name for e in perfect.estimates] == ["scores (1.0,)"]
    assert perfect.skipped == ["scores (0.5,) (scores (1.0,) was already perfect)"]
    spent = choose([fixed(0.4), fixed(0.5)], parts, "accuracy", "1 split", budget_s=0.0)
    assert spent.winner.name == "scores (0.4,)" and "the time budget was spent" in spent.skipped[0]
    seen: list[Estimate] = []
    choose([fixed(0.4), fixed(0.5)], parts, "accuracy", "1 split", on_estimate=seen.append)
    assert [e.mean for e in seen] == [0.4, 0.5]


def test_folds_hold_every_image_out_once_per_repeat_and_keep_the_classes() -> None:
    strata = np.repeat([0, 1, 2], [20, 10, 3])
    masks = selection_folds(strata, folds=5, repeats=2, val_fraction=0.2, seed=0)
    assert len(masks) == 10
    for repeat in (masks[:5], masks[5:]):
        assert np.array_equal(np.sum(repeat, axis=0), np.ones(len(strata)))
        assert all(set(strata[mask][:]) >= {0, 1} for mask in repeat)  # classes of 5+ in every fold
    single = selection_folds(strata, folds=1, repeats=1, val_fraction=0.2, seed=3)
    assert len(single) == 1 and np.array_equal(single[0], stratified_holdout(strata, 0.2, 3))


def write_two_classes(root: Path, apart: int, noise: float = 30) -> Path:
    """10 grayscale 96x96 images of each of two classes whose mean brightness lies ``apart`` apart."""
    rng = np.random.default_rng(0)
    for label, brightness in (("dark", 128 - apart // 2), ("light", 128 + apart // 2)):
        (root / label).mkdir(parents=True)
        for number in range(10):
            pixels = np.clip(rng.normal(brightness, noise, (96, 96)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{number}.png")
    return root


def auto_config(tmp_path: Path) -> PipelineConfig:
    return tiny_config(
        "data.classes=[]", "data.image_side=null", "validate.expected_side=null", "train.epochs=2",
        "train.folds=2", f"train.feature_cache={tmp_path / 'features'}", "register.flavor=auto",
    )  # fmt: skip


@pytest.mark.slow
def test_auto_stops_at_a_perfect_cheap_candidate(tmp_path: Path) -> None:
    config = auto_config(tmp_path)
    dataset = ingest(write_two_classes(tmp_path / "data", apart=160, noise=5), config)
    seen: list[Estimate] = []
    chosen = choose_method(get_task("classification"), dataset, config, seen.append)
    assert chosen.choice is not None and [e.name for e in seen] == ["features+logistic"]
    assert "2 folds of the training split's 16 images" in chosen.choice.describe()
    winner = chosen.config
    assert (winner.method, winner.classifier, winner.layer) == ("features+svm", "logistic", "pyramid")


@pytest.mark.slow
def test_auto_compares_features_head_only_and_full_fine_tuning_on_the_same_folds(tmp_path: Path) -> None:
    config = auto_config(tmp_path)
    dataset = ingest(write_two_classes(tmp_path / "data", apart=0, noise=60), config)  # nothing to learn
    seen: list[Estimate] = []
    chosen = choose_method(get_task("classification"), dataset, config, seen.append)
    assert [e.name for e in seen] == [
        "features+logistic",
        "features+svm rbf",
        "finetune head-only",
        "finetune",
    ]
    assert all(len(e.scores) == 2 for e in seen) and chosen.choice is not None
    if chosen.config.method == "finetune":  # a small set: trained again on all of it, for the folds' epochs
        assert chosen.config.val_fraction == 0 and chosen.config.epochs in (1, 2) and chosen.trained is None
