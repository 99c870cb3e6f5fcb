"""The step functions against a real (sqlite) MLflow store, in-process: one MLflow run per pipeline run."""

from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from conftest import DAGM_SAMPLES, run_steps, tiny_config, tiny_dagm_config
from inspectflow.errors import DataError
from inspectflow.steps.evaluate import evaluate_step
from inspectflow.steps.ingest import ingest_step
from inspectflow.steps.register import register_step
from inspectflow.steps.train import train_step
from inspectflow.steps.validate import validate_step


@pytest.mark.usefixtures("tracking")
def test_first_version_is_champion_and_an_equal_rerun_is_challenger(npy_dir: Path, tmp_path: Path) -> None:
    config = tiny_config().to_dict()
    first = run_steps(npy_dir, tmp_path / "one", config)
    assert first["alias"] == "champion" and first["version"] == "1"

    second = run_steps(npy_dir, tmp_path / "two", config)
    assert second["alias"] == "challenger" and second["decision"] == "rejected"
    assert "is not above the required" in second["reason"]  # same seed and data: identical scores

    client = MlflowClient()
    champion = client.get_model_version_by_alias("textile-classifier", "champion")
    challenger = client.get_model_version_by_alias("textile-classifier", "challenger")
    assert (str(champion.version), str(challenger.version)) == ("1", "2")
    assert challenger.tags["gate.reason"] == second["reason"]
    assert challenger.tags["gate.champion_version"] == "1"
    # the model card: verdict, scores against the champion and the baseline, how to use it
    card = challenger.description
    assert card.startswith("**rejected**, `@challenger`") and "| test macro_f1 |" in card, card
    assert "champion (version 1)" in card and "models:/textile-classifier/2" in card
    assert challenger.tags["data.digest"] == champion.tags["data.digest"]

    run = client.get_run(second["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "1"
    assert run.data.tags["kfp.pipeline_run_name"] == "test-run"
    assert "test/macro_f1" in run.data.metrics and "train/loss" in run.data.metrics
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoints", "evaluation", "validation", "data", "registry", "training"} <= artifacts
    evaluation = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/confusion_matrix.png", "evaluation/confusion_matrix.json"} <= evaluation

    model = mlflow.pytorch.load_model("models:/textile-classifier@champion")
    assert model is not None


@pytest.mark.usefixtures("tracking")
def test_failed_validation_marks_the_run_failed_and_trains_nothing(folders_dir: Path, tmp_path: Path) -> None:
    (folders_dir / "stain").mkdir()
    (folders_dir / "good" / "0001.png").rename(folders_dir / "stain" / "0001.png")
    config = tiny_config().to_dict()
    with pytest.raises(DataError, match=r"stain/0001.png"):
        run_steps(folders_dir, tmp_path / "bad", config)
    (run,) = MlflowClient().search_runs([mlflow.get_experiment_by_name("textile").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["validation.success"] == "false"
    assert run.data.tags["inspectflow.failure"].startswith(f"validate: {folders_dir}: data validation failed")
    assert not (tmp_path / "bad" / "model").exists()


@pytest.mark.usefixtures("tracking")
def test_a_register_failure_marks_the_run_failed_with_its_cause(npy_dir: Path, tmp_path: Path) -> None:
    config = tiny_config().to_dict()
    work = tmp_path / "run"
    run_id, _ = ingest_step(
        str(npy_dir), config, work / "dataset", "test-pipeline", "test-run", "test-run-id"
    )
    validate_step(work / "dataset", config, run_id, work / "report.html")
    train_step(work / "dataset", config, run_id, work / "model")
    evaluate_step(work / "dataset", work / "model", config, run_id, work / "evaluation")
    (work / "evaluation" / "scores.json").unlink()  # lost between the steps

    with pytest.raises(FileNotFoundError):
        register_step(work / "dataset", work / "model", work / "evaluation", config, run_id)

    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FAILED"
    scores = work / "evaluation" / "scores.json"
    assert run.data.tags["inspectflow.failure"] == f"register: {scores}: No such file or directory"


@pytest.mark.usefixtures("tracking")
def test_dice_and_bce_runs_compare_side_by_side_in_one_experiment(dagm_dir: Path, tmp_path: Path) -> None:
    for loss in ("dice", "bce"):
        run_steps(dagm_dir, tmp_path / loss, tiny_dagm_config(f"train.loss={loss}").to_dict())
    client = MlflowClient()
    runs = client.search_runs([mlflow.get_experiment_by_name("dagm").experiment_id])
    assert sorted(run.data.params["train.loss"] for run in runs) == ["bce", "dice"]
    for run in runs:
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val/iou")] == [1]
        assert "test/iou" in run.data.metrics and "test/iou/Class1" in run.data.metrics
        overlays = client.list_artifacts(run.info.run_id, "evaluation/overlays")
        assert any(a.path.split("/")[-1].startswith("worst_") for a in overlays)
        logged = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
        assert any(path.startswith("images/visuals~overlays~worst_1+step+0") for path in logged), (
            logged
        )  # log_image


@pytest.mark.usefixtures("tracking")
def test_a_first_run_that_learned_nothing_ends_with_no_champion_and_says_why(
    npy_dir: Path, tmp_path: Path
) -> None:
    # Random pixels: nothing to learn, so the model cannot beat the majority class by a margin.
    config = tiny_config("register.min_score=0", "register.baseline_margin=0.5").to_dict()
    summary = run_steps(npy_dir, tmp_path / "one", config)
    assert summary["alias"] == "challenger" and summary["decision"] == "rejected"
    assert "does not beat the trivial baseline (the training split's majority class" in summary["reason"]
    client = MlflowClient()
    assert "champion" not in client.get_registered_model("textile-classifier").aliases
    run = client.get_run(summary["mlflow_run_id"])
    assert "test/baseline_macro_f1" in run.data.metrics


@pytest.mark.slow
@pytest.mark.skipif(not DAGM_SAMPLES.is_dir(), reason="../shared/data/dagm-samples not present")
@pytest.mark.usefixtures("tracking")
def test_a_champion_trained_at_another_size_is_scored_on_the_new_data(dagm_dir: Path, tmp_path: Path) -> None:
    small = run_steps(dagm_dir, tmp_path / "small", tiny_dagm_config().to_dict())  # 32 px images
    assert small["alias"] == "champion"
    champion_files = sorted(p.relative_to(tmp_path) for p in (tmp_path / "mlartifacts").rglob("*"))

    # The real DAGM samples are 512 px: the champion's export takes any height and width.
    samples = run_steps(DAGM_SAMPLES, tmp_path / "samples", tiny_dagm_config("train.crop=64").to_dict())

    assert samples["gate"]["champion_score"] is not None, samples["reason"]
    assert "champion" in samples["reason"]
    after = {p.relative_to(tmp_path) for p in (tmp_path / "mlartifacts").rglob("*")}
    assert set(champion_files) <= after
    assert not [p for p in after if p.name == "registered_model_meta"]  # nothing written into versions
