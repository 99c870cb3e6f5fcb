"""Validate: the data-quality gate; nothing is trained on data that fails it."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from inspectflow import console
from inspectflow.config import PipelineConfig
from inspectflow.errors import DataError, pipeline_step
from inspectflow.names import VALIDATION_ARTIFACTS, VALIDATION_SUCCESS_TAG
from inspectflow.tasks import task_for

log = logging.getLogger(__name__)


@pipeline_step("validate")
def validate_step(dataset_dir: Path, raw_config: dict[str, object], run_id: str, report_path: Path) -> None:
    """Validates the ingested dataset, logs the JSON and HTML reports to MLflow, and fails on any violation.

    Args:
        dataset_dir: The ingested dataset.
        raw_config: The pipeline configuration as a dict.
        run_id: The pipeline's MLflow run.
        report_path: Where the HTML report goes (the kfp HTML artifact).

    Raises:
        DataError: An expectation failed; the message names the offending files.
    """
    import mlflow

    from inspectflow.config import validate_config
    from inspectflow.data.dataset import load_dataset
    from inspectflow.tracking import resume_run
    from inspectflow.validation import validate_dataset, write_report

    config: PipelineConfig = validate_config(raw_config)
    dataset = load_dataset(dataset_dir)
    with resume_run(run_id, "validate"), tempfile.TemporaryDirectory() as tmp:
        rules = task_for(config).data_rules
        report = validate_dataset(dataset, dataset.info.classes, config.validate_, rules)
        json_path, html_path = write_report(report, Path(tmp))
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(html_path.read_text())
        mlflow.log_artifact(str(json_path), artifact_path=VALIDATION_ARTIFACTS)
        mlflow.log_artifact(str(html_path), artifact_path=VALIDATION_ARTIFACTS)
        mlflow.set_tag(VALIDATION_SUCCESS_TAG, str(report.success).lower())
        mlflow.log_metric("validate/failed_checks", len(report.failures))
        if not report.success:
            raise DataError(f"{dataset.info.source}: {report.summary()}")
    log.info("validation passed: %d checks", report.checks)
    console.note(f"{report.checks} checks passed")
