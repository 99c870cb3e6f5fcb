"""A classifier with a good class decides per image: its threshold is set for a target recall on validation,
reported on test, kept with the registered model and applied by predict and the pyfunc; the gate can judge
false rejects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import TINY_SIDE, run_steps
from inspectflow.config import PipelineConfig, build_config
from inspectflow.serving.predict import predict_files

MODEL = "parts-classifier"


def parts_config(*overrides: str) -> PipelineConfig:
    """A line's own two-class workload: dark good parts, bright defective ones, 16 px, a few quick epochs."""
    return build_config(
        "parts",
        [
            "data.classes=[good, defect]",
            "data.good_class=good",
            f"data.image_side={TINY_SIDE}",
            "train.model=residual_cnn",
            "train.epochs=3",
            "train.batch_size=8",
            "evaluate.target_recall=0.95",
            "register.primary_metric=false_reject_rate",
            "register.flavor=pyfunc",
            "register.onnx=false",
            *overrides,
        ],
        task="classification",
    )


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict]]:
    """Registers the parts classifier in a sqlite store; yields the source folder and register's summary."""
    root = tmp_path_factory.mktemp("parts")
    rng = np.random.default_rng(0)
    source = root / "source"
    for label, (low, high) in {"good": (0, 110), "defect": (140, 256)}.items():
        (source / label).mkdir(parents=True)
        for number in range(30):
            pixels = rng.integers(low, high, size=(TINY_SIDE, TINY_SIDE), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(source / label / f"{number:03d}.png")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        try:
            yield source, run_steps(source, root / "work", parts_config().to_dict())
        finally:
            mlflow.set_tracking_uri(None)


def test_the_threshold_set_for_the_target_recall_is_reported_and_kept(parts: tuple[Path, dict]) -> None:
    _, summary = parts
    client = mlflow.MlflowClient()
    run = client.get_run(summary["mlflow_run_id"])
    version = client.get_model_version(MODEL, summary["version"])

    assert summary["alias"] == "champion", summary["reason"]
    # What `inspectflow run` prints after the run: the rates beside the trivial model's.
    assert {"test/escape_rate", "test/false_reject_rate"} <= set(summary["metrics"])
    assert {"test/escape_rate", "test/false_reject_rate"} <= set(summary["baseline"]["metrics"])
    threshold = run.data.metrics["val/detection_threshold"]
    metrics = run.data.metrics
    for name in ("escape_rate", "false_reject_rate"):
        assert metrics[f"test/{name}_ci_low"] <= metrics[f"test/{name}"] <= metrics[f"test/{name}_ci_high"]
    assert "test/roc_auc" in metrics
    assert "false-reject rate" in version.description and "defect recall 0.95" in version.description
    assert version.tags["gate.primary_metric"] == "false_reject_rate"
    point = json.loads(
        Path(client.download_artifacts(run.info.run_id, "evaluation/operating_point.json")).read_text()
    )
    assert point["threshold"] == pytest.approx(threshold)
    table = pd.read_csv(client.download_artifacts(run.info.run_id, "evaluation/per_image.csv"))
    assert {"defective", "defect_score", "detected"} <= set(table.columns)
    clear = (table["defect_score"] - threshold).abs() > 1e-6  # the CSV keeps float32 scores to ~7 digits
    assert (table["detected"] == (table["defect_score"] > threshold))[clear].all()
    assert table["detected"][table["defective"]].mean() >= 0.9


def test_predict_and_the_pyfunc_decide_with_the_stored_threshold(parts: tuple[Path, dict]) -> None:
    source, summary = parts
    threshold = (
        mlflow.MlflowClient().get_run(summary["mlflow_run_id"]).data.metrics["val/detection_threshold"]
    )
    paths = [source / "good" / "000.png", source / "defect" / "000.png"]
    uri = f"models:/{MODEL}/{summary['version']}"

    records = list(predict_files(uri, paths, batch_size=2))
    frame = mlflow.pyfunc.load_model(uri).predict([str(p) for p in paths])

    assert [record["threshold"] for record in records] == [pytest.approx(threshold, abs=1e-6)] * 2
    assert [record["defective"] for record in records] == [False, True]
    assert all(r["defect_score"] == pytest.approx(1 - r["probabilities"]["good"], abs=1e-5) for r in records)
    assert frame["defective"].tolist() == [False, True]
    assert frame["threshold"].tolist() == [pytest.approx(threshold)] * 2
    assert frame["defect_score"].to_numpy() == pytest.approx([r["defect_score"] for r in records], abs=1e-5)


def test_the_gate_compares_false_rejects_with_the_champion(parts: tuple[Path, dict], tmp_path: Path) -> None:
    source, first = parts

    second = run_steps(source, tmp_path / "again", parts_config().to_dict())

    assert second["alias"] == "challenger"  # the same model: no fewer false rejects
    assert f"vs champion {first['gate']['new_score']:.4f}" in second["reason"]
