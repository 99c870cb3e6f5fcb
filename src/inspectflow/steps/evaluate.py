"""Evaluate: score a trained model on the test split with its task's scores and artifacts.

Classifiers get accuracy, macro-F1, per-class precision/recall/F1 and a confusion matrix; segmenters get
foreground Dice and IoU, per-image IoU and image-level detection rates, per image group, and overlays of
their best and worst test images (see :mod:`inspectflow.tasks`).
"""

from __future__ import annotations

from pathlib import Path

from inspectflow import console
from inspectflow.config import EvaluateConfig, PipelineConfig
from inspectflow.data.dataset import Dataset, load_dataset
from inspectflow.errors import pipeline_step
from inspectflow.metrics import operating_point
from inspectflow.metrics.intervals import Interval, save_intervals, score_intervals
from inspectflow.models.artifact import Predictor, load_trained_model
from inspectflow.names import (
    BASELINE_FILE,
    BASELINE_METRICS,
    EVALUATION_ARTIFACTS,
    GOOD_QUANTILE_THRESHOLD,
    INTERVALS_FILE,
    SCORES_FILE,
    TEST_INTERVALS,
    VISUALS,
)
from inspectflow.tasks import save_scores, task_for
from inspectflow.tasks.base import PER_IMAGE_FILE, Scores, Task, describe_scores


def interval_metrics(intervals: dict[str, Interval]) -> dict[str, float]:
    """The intervals' ends as MLflow metrics: ``test_ci95/macro_f1_low``, ``test_ci95/macro_f1_high``."""
    ends: dict[str, float] = {}
    for metric, interval in intervals.items():
        ends |= {
            f"{TEST_INTERVALS}{metric}_low": interval.low,
            f"{TEST_INTERVALS}{metric}_high": interval.high,
        }
    return ends


def evaluate(
    task: Task, predictor: Predictor, dataset: Dataset, config: EvaluateConfig, out_dir: Path | None = None
) -> Scores:
    """Scores a model on the dataset's test split, writing the task's artifacts into ``out_dir`` if given."""
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    return task.evaluate(predictor, dataset, config, out_dir)


@pipeline_step("evaluate")
def evaluate_step(
    dataset_dir: Path, model_dir: Path, raw_config: dict[str, object], run_id: str, out_dir: Path
) -> Scores:
    """Runs evaluation as a pipeline step, logging metrics, scores and plots to MLflow.

    The model's own thresholds (see :meth:`Task.thresholds`) override the configured ones. Writes
    ``scores.json``, ``baseline.json`` (the trivial model's scores, which the gate's floor uses) and
    the task's artifacts (the confusion matrix, or overlays) into ``out_dir`` and logs them under the
    run's ``evaluation/`` artifacts; the baseline's metrics are logged as ``baseline_*``. A task that
    decides per image (defective or not) also gets its operating point: the escape and false-reject
    rates at the model's threshold with confidence intervals, and the ROC and precision-recall curves
    (:func:`inspectflow.metrics.operating_point.report`). The primary metric and the task's headline
    metrics are logged with their 95% bootstrap intervals over the test images (``test_ci95/``,
    ``intervals.json``; the decision rates' come with the operating point).
    """
    import mlflow
    import pandas as pd
    from PIL import Image

    from inspectflow.config import validate_config
    from inspectflow.tracking import resume_run

    config: PipelineConfig = validate_config(raw_config)
    model, spec = load_trained_model(model_dir)
    evaluate_config = config.evaluate.applying(spec.thresholds)
    dataset = load_dataset(dataset_dir)
    with resume_run(run_id, "evaluate"):
        task = task_for(config)
        scores = evaluate(task, model, dataset, evaluate_config, out_dir)
        baseline = task.baseline(dataset, evaluate_config)
        save_scores(scores, out_dir / SCORES_FILE)
        save_scores(baseline, out_dir / BASELINE_FILE)
        primary = config.register_.primary_metric
        # The decision rates have their intervals from the operating point (exact at 0 of n): not twice.
        reported = [m for m in dict.fromkeys([primary, *task.headline_metrics]) if m not in scores.rates()]
        intervals = score_intervals(scores, reported)
        save_intervals(intervals, out_dir / INTERVALS_FILE)
        # The baseline's headline scores beside the model's (its per-class ones say nothing new).
        headline = {k: v for k, v in baseline.metrics(prefix=BASELINE_METRICS).items() if k.count("/") == 1}
        table = pd.read_csv(out_dir / PER_IMAGE_FILE)  # every task's evaluation writes it
        threshold, target = evaluate_config.detection_threshold, evaluate_config.target_recall
        quantile = spec.thresholds.get(GOOD_QUANTILE_THRESHOLD)
        rates = operating_point.report(out_dir, table, scores.rates(), threshold, target, quantile)
        mlflow.log_metrics({**scores.metrics(), **interval_metrics(intervals), **headline, **rates})
        mlflow.log_artifacts(str(out_dir), artifact_path=EVALUATION_ARTIFACTS)
        # A table the UI can sort and filter.
        mlflow.log_table(table, artifact_file=f"{EVALUATION_ARTIFACTS}/per_image.json")
        # As MLflow images too: the chart view compares them across runs. It orders its sections by name,
        # so under "visuals/" they come after the metrics' test/, train/ and val/ sections.
        for figure in sorted(out_dir.rglob("*.png")):
            key = f"{VISUALS}{figure.relative_to(out_dir).with_suffix('').as_posix()}"
            mlflow.log_image(Image.open(figure), key=key, step=0)
    interval = intervals.get(primary)
    beside = "" if interval is None else f" (95% interval {interval.low:.4f} to {interval.high:.4f})"
    console.note(f"{scores.test_images} test images, {describe_scores(scores, primary)}{beside}")
    return scores
