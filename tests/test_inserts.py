"""The cutting-insert workload: class folders of any size, features+SVM, the pyfunc model, weights."""

import json
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from conftest import run_steps, tiny_inserts_config
from inspectflow.config import build_config
from inspectflow.errors import ConfigError
from inspectflow.models import weights
from inspectflow.models.networks import check_weights
from inspectflow.names import SCORES_FILE
from inspectflow.steps.evaluate import evaluate_step
from inspectflow.steps.ingest import ingest, ingest_step
from inspectflow.steps.register import register_step
from inspectflow.steps.train import train_step
from inspectflow.steps.validate import validate_step


def test_class_folders_of_mixed_sizes_become_rgb_at_a_side_from_the_data(inserts_dir: Path) -> None:
    dataset = ingest(inserts_dir, build_config("inserts"))
    assert dataset.info.classes == ["Damaged", "Intact"]  # one class per folder, found
    assert dataset.images.shape == (16, 160, 160, 3)  # the median side, at most data.max_side
    assert dataset.manifest["width"].nunique() > 1  # the sources vary in size


@pytest.mark.usefixtures("tracking")
def test_features_svm_logs_child_runs_caches_features_and_serves_paths(
    inserts_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_inserts_config("method=features+svm", f"train.feature_cache={tmp_path / 'cache'}").to_dict()
    summaries, tags = [], []
    for attempt in ("first", "second"):
        work = tmp_path / attempt
        run_id, _ = ingest_step(str(inserts_dir), config, work / "dataset", "inserts", attempt, attempt)
        validate_step(work / "dataset", config, run_id, work / "report.html")
        train_step(work / "dataset", config, run_id, work / "model")
        evaluate_step(work / "dataset", work / "model", config, run_id, work / "evaluation")
        summaries.append(register_step(work / "dataset", work / "model", work / "evaluation", config, run_id))
        tags.append(MlflowClient().get_run(run_id).data.tags["features.cache"])
    assert tags == ["miss", "hit"]
    # The identical rerun is judged on the same test accuracy as the champion, so it stays challenger.
    first, second = summaries
    assert second["alias"] == "challenger" and second["gate"]["new_score"] == first["gate"]["new_score"]
    assert second["gate"]["new_score"] == first["metrics"]["test/accuracy"]
    assert (
        "gain +0.0000 (95% interval +0.0000 to +0.0000), whose lower end is not above the required 0.0000"
        in (second["reason"])
    )

    client = MlflowClient()
    parent = client.get_run(summaries[0]["mlflow_run_id"])
    assert {"cv/accuracy_mean", "cv/accuracy_std", "cv/macro_f1_mean", "cv/recall_mean/Damaged"} <= set(
        parent.data.metrics
    )
    experiment = mlflow.get_experiment_by_name("inserts").experiment_id
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 3 and all("cv/accuracy" in run.data.metrics for run in children)

    model = mlflow.pyfunc.load_model("models:/inserts-classifier@champion")
    paths = [str(p) for p in sorted(inserts_dir.rglob("*.png"))[:3]]
    predictions = model.predict(paths)
    assert len(predictions) == 3 and set(predictions["label"]) <= {"Damaged", "Intact"}
    probabilities = predictions[["p_Damaged", "p_Intact"]].to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert list(predictions["label"]) == [["Damaged", "Intact"][i] for i in probabilities.argmax(axis=1)]
    array = np.zeros((50, 70, 3), np.uint8)
    assert len(model.predict([array])) == 1  # arrays work as well as paths


def test_the_svm_estimate_draws_on_the_training_split_only(inserts_dir: Path, tmp_path: Path) -> None:
    from inspectflow.steps.train import train_feature_svm

    dataset = ingest(inserts_dir, tiny_inserts_config())
    config = tiny_inserts_config("method=features+svm", f"train.feature_cache={tmp_path}").train
    _, _, result, _ = train_feature_svm(dataset, config)
    training = int((dataset.manifest["split"] == "train").sum())
    assert training < len(dataset.manifest)
    assert all(split.train_size + split.test_size == training for split in result.splits)


@pytest.mark.usefixtures("tracking")
def test_svm_and_finetuned_versions_are_judged_on_the_same_test_metric(
    inserts_dir: Path, tmp_path: Path
) -> None:
    """Both ways round, the decision's numbers are the versions' test accuracies as scores.json has them."""
    from inspectflow.lifecycle.aliases import promote

    cache = f"train.feature_cache={tmp_path / 'cache'}"
    methods = {"finetune": ["method=finetune", "freeze_backbone=true"], "svm": ["method=features+svm", cache]}
    accuracy = {}
    for number, method in enumerate(["finetune", "svm", "finetune"], 1):
        work = tmp_path / str(number)
        summary = run_steps(inserts_dir, work, tiny_inserts_config(*methods[method]).to_dict())
        scores = json.loads((work / "evaluation" / SCORES_FILE).read_text())
        accuracy[summary["version"]] = scores["accuracy"]
        gate, n = summary["gate"], sum(scores["support"].values())
        assert gate["new_score"] == scores["accuracy"]  # the test split's, not the cross-validated mean
        if number == 1:
            continue
        champion = str(number - 1)
        assert gate["champion_score"] == pytest.approx(accuracy[champion], abs=1e-9)
        assert (
            f"test accuracy {scores['accuracy']:.4f}" in summary["reason"]
            and f"champion {accuracy[champion]:.4f}" in summary["reason"]
            and f"on the same {n} test images" in summary["reason"]
        ), summary["reason"]
        version = MlflowClient().get_model_version("inserts-classifier", summary["version"])
        assert version.tags["gate.test_images"] == str(n)
        if method == "svm":  # the reverse next: the SVM version champion by hand, a fine-tuned one challenges
            promote(MlflowClient(), "inserts-classifier", summary["version"], "the reverse comparison")


@pytest.mark.usefixtures("tracking")
def test_finetune_registers_the_same_pyfunc(inserts_dir: Path, tmp_path: Path) -> None:
    config = tiny_inserts_config("method=finetune", "freeze_backbone=true").to_dict()
    work = tmp_path / "run"
    run_id, _ = ingest_step(str(inserts_dir), config, work / "dataset", "inserts", "ft", "ft")
    validate_step(work / "dataset", config, run_id, work / "report.html")
    train_step(work / "dataset", config, run_id, work / "model")
    evaluate_step(work / "dataset", work / "model", config, run_id, work / "evaluation")
    summary = register_step(work / "dataset", work / "model", work / "evaluation", config, run_id)
    assert summary["alias"] == "champion"
    model = mlflow.pyfunc.load_model("models:/inserts-classifier@champion")
    assert len(model.predict([str(next(inserts_dir.rglob("*.png")))])) == 1


def test_missing_imagenet_weights_stop_the_cli_in_seconds(
    inserts_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(weights, "_reachable", lambda url: False)
    with pytest.raises(ConfigError, match=r"vgg16-397923af\.pth"):
        check_weights(
            *build_config("inserts", ["method=features+svm", "backbone=vgg16"]).train.network_weights()
        )
    started = time.monotonic()
    command = [sys.executable, "-m", "inspectflow", "run", "inserts", "--data", str(inserts_dir)]
    command += ["--set", "train.model=resnet18", "--set", "train.weights=imagenet"]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "TORCH_HOME": str(tmp_path / "torch"), "HOME": str(tmp_path)},
    )
    assert result.returncode == 1
    assert "hub/checkpoints/resnet18-f37072fd.pth" in result.stderr
    assert time.monotonic() - started < 60
    assert not (tmp_path / "mlflow.db").exists()  # nothing ran


def test_cached_features_match_the_registered_extractor(inserts_dir: Path, tmp_path: Path) -> None:
    """A cache hit must give the features the saved extractor computes, even with random weights."""
    from inspectflow.models.backbones import extract_features
    from inspectflow.steps.train import train_feature_svm

    config = tiny_inserts_config(f"train.feature_cache={tmp_path}").train
    dataset = ingest(inserts_dir, tiny_inserts_config())
    train_feature_svm(dataset, config)  # fills the cache
    classifier, _, _, hit = train_feature_svm(dataset, config)
    assert hit
    cached = np.load(next(tmp_path.glob("*.npy")))
    fresh = extract_features(classifier.extractor, dataset.images, 8)
    assert cached.std() > 0 and np.allclose(
        cached, fresh, rtol=1e-3, atol=1e-3 * float(np.abs(cached).mean())
    )
