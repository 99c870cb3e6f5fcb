"""DVC metrics and plots of a finished pipeline run, read back from its MLflow run.

``dvc.yaml`` declares ``metrics/<workload>.json`` as metrics and ``plots/<workload>/`` as plots, so that
``dvc metrics diff``, ``dvc exp show`` and ``dvc plots diff`` compare runs without opening MLflow.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from inspectflow.metrics.operating_point import PRECISION_RECALL_FILE, ROC_FILE
from inspectflow.names import (
    CV_METRICS,
    EVALUATION_ARTIFACTS,
    HISTORY_ARTIFACT,
    SCORES_ARTIFACT,
    TRAINING_ARTIFACTS,
)
from inspectflow.tasks import load_scores
from inspectflow.tasks.base import Scores

TRAINING_PLOT = "training.csv"
CONFUSION_PLOT = "confusion.csv"


def write_metrics(summary: dict[str, Any], run_metrics: dict[str, float], path: Path) -> dict[str, Any]:
    """Writes the DVC metrics file: the test metrics and any cross-validation estimate (``cv/``), scores only.

    The model version and the gate's decision are the registry's (``inspectflow models list``): in a
    metrics file, ``dvc metrics diff`` would report them as changed scores.

    Args:
        summary: The register step's summary (test metrics, model version, gate decision).
        run_metrics: The MLflow run's metrics (for the ``cv/<metric>_mean`` and ``cv/<metric>_std`` of a
            method that cross-validates on the training split, under those names).
        path: The JSON file to write.

    Returns:
        What was written.
    """
    metrics: dict[str, Any] = {name: round(value, 6) for name, value in summary["metrics"].items()}
    metrics.update(
        {
            k: round(v, 6)
            for k, v in run_metrics.items()
            if k.startswith(CV_METRICS) and "/" not in k.removeprefix(CV_METRICS)  # not per class
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def write_plots(run_id: str, out_dir: Path) -> list[Path]:
    """Writes the training curves, the confusion matrix and the ROC and PR curves of a run as DVC plot files.

    ``training.csv`` has one row per epoch (absent for ``features+svm``, which has no epochs);
    ``confusion.csv`` one ``actual,predicted`` row per test image: classes for a classifier, ``clean`` or
    ``defective`` (image-level detection) for a segmenter; ``roc.csv`` and ``precision_recall.csv`` the
    curves of the image-level defect score, where the evaluation drew them.

    Returns:
        The files written.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    available = {item.path for item in client.list_artifacts(run_id, TRAINING_ARTIFACTS)}
    with tempfile.TemporaryDirectory() as scratch:
        if HISTORY_ARTIFACT in available:
            history = json.loads(
                Path(client.download_artifacts(run_id, HISTORY_ARTIFACT, scratch)).read_text()
            )
            written.append(_write_rows(out_dir / TRAINING_PLOT, _history_rows(history["epochs"])))
        scores = load_scores(Path(client.download_artifacts(run_id, SCORES_ARTIFACT, scratch)))
        evaluated = {item.path for item in client.list_artifacts(run_id, EVALUATION_ARTIFACTS)}
        for name in (ROC_FILE, PRECISION_RECALL_FILE):
            if f"{EVALUATION_ARTIFACTS}/{name}" in evaluated:
                table = client.download_artifacts(run_id, f"{EVALUATION_ARTIFACTS}/{name}", scratch)
                written.append(Path(shutil.copyfile(table, out_dir / name)))
    written.append(_write_rows(out_dir / CONFUSION_PLOT, confusion_rows(scores)))
    return written


def confusion_rows(scores: Scores) -> list[dict[str, Any]]:
    """One ``{"actual", "predicted"}`` row per test image, as DVC's confusion template reads them."""
    return [
        {"actual": actual, "predicted": predicted}
        for (actual, predicted), count in scores.confusion_counts().items()
        for _ in range(count)
    ]


def _history_rows(epochs: list[dict[str, float]]) -> list[dict[str, Any]]:
    return [{"epoch": number, **metrics} for number, metrics in enumerate(epochs, 1)]


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    columns = list(rows[0]) if rows else ["actual", "predicted"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path
