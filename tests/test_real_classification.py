"""Quick classifier runs on subsets of the real sets (``../shared/data/real``): defaults, the gate's floors.

Beside ``test_real_data.py`` (the segmenter and drift watch on KolektorSDD, and the full ``real`` runs) in a
file of their own, so that README's two test workers can run them side by side.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REAL, run_steps, subset
from inspectflow.config import build_config
from inspectflow.steps.evaluate import evaluate
from inspectflow.steps.ingest import ingest
from inspectflow.steps.train import train
from inspectflow.tasks import get_task

pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real not present")


@pytest.mark.slow
def test_quick_neu_steel_defects_are_learnt_with_default_settings(tmp_path: Path) -> None:
    classes = ["crazing", "inclusion", "scratches"]
    root = subset(REAL / "neu-cls", tmp_path / "neu", 40, classes)
    config = build_config("textile", ["train.max_minutes=1"])
    dataset = ingest(root, config)
    task = get_task("classification")
    result = train(task, dataset, config.train, tmp_path / "ckpt")
    assert result.config is not None and result.config.model == "efficientnet_lite0"
    assert result.config.weights == "imagenet"
    scores = evaluate(task, result.model, dataset, config.evaluate)
    baseline = task.baseline(dataset, config.evaluate)
    assert scores.macro_f1 >= 0.85 > baseline.macro_f1 + 0.3, (scores.macro_f1, baseline.macro_f1)


@pytest.mark.slow
@pytest.mark.usefixtures("tracking")
def test_features_svm_is_gated_on_its_test_macro_f1_against_the_baseline_on_real_casting(
    tmp_path: Path,
) -> None:
    """Issue 24: a features+SVM model at the majority-class baseline is never champion, floors on.

    54 casting parts (36 defective, 18 good): an SVM with C=1e-6 answers the training split's majority class
    for every image, exactly the trivial baseline, below register.min_score and not beating the baseline;
    one with the default C is promoted, and its identical rerun stays challenger. Every reason's numbers are
    the test split's, as the evaluation's scores files hold them.
    """
    root = subset(REAL / "casting", tmp_path / "casting", 36, ["def_front"])
    subset(REAL / "casting", root, 18, ["ok_front"])
    settings = ["train.method=features+svm", f"train.feature_cache={tmp_path / 'features'}"]
    degenerate = [*settings, "train.svm_c=0.000001"]
    runs = {
        "below min_score": degenerate,
        "at the baseline": [*degenerate, "register.min_score=0"],
        "first": settings,
        "identical rerun": settings,
    }
    reasons = {}
    for name, overrides in runs.items():
        work = tmp_path / name.replace(" ", "-")
        summary = run_steps(root, work, build_config("casting", overrides, task="classification").to_dict())
        scores = json.loads((work / "evaluation" / "scores.json").read_text())
        baseline = json.loads((work / "evaluation" / "baseline.json").read_text())
        judged = f"test macro_f1 {scores['macro_f1']:.4f} on {sum(scores['support'].values())} test images"
        assert summary["gate"]["new_score"] == scores["macro_f1"]
        assert summary["alias"] == ("champion" if name == "first" else "challenger"), summary["reason"]
        reasons[name] = (summary["reason"], judged, scores, baseline)

    reason, judged, scores, baseline = reasons["below min_score"]
    assert scores["confusion"] == baseline["confusion"]  # the majority class for every image
    assert reason == (
        f"{judged} is below register.min_score 0.5000 (trivial baseline: {baseline['macro_f1']:.4f}); "
        "not promoted"
    )
    reason, judged, scores, baseline = reasons["at the baseline"]
    assert reason == (
        f"{judged} does not beat the trivial baseline (the training split's majority class for every image: "
        f"test macro_f1 {baseline['macro_f1']:.4f} on the same images) by more than register.baseline_margin "
        "0.0500; not promoted"
    )
    reason, judged, _, baseline = reasons["first"]
    assert reason == f"no champion yet; {judged} (trivial baseline: {baseline['macro_f1']:.4f})"
    reason, _, scores, _ = reasons["identical rerun"]
    assert (
        "gain +0.0000 (95% interval +0.0000 to +0.0000), whose lower end is not above the required" in reason
    )
    assert f"vs champion {scores['macro_f1']:.4f} on the same" in reason
