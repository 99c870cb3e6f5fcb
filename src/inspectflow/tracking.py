"""MLflow tracking: where runs go, and how the pipeline's steps share one run.

The ingest step opens the run; every later step reopens it by id, so one pipeline run is one MLflow run
holding every parameter, metric and artifact, and runs compare side by side in the MLflow UI. A step that
fails marks the run FAILED.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow

LOCAL_STORE = "mlflow.db"
LOCAL_ARTIFACTS = "mlartifacts"
#: MLflow client settings for a tracking server, unless the environment sets them.
HTTP_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def configure_tracking(workdir: Path) -> str:
    """Points MLflow at ``MLFLOW_TRACKING_URI``, or at a sqlite store in ``workdir`` when it is unset.

    The URI is exported so the pipeline's step subprocesses use the same store.

    Returns:
        The tracking URI in force.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(workdir / LOCAL_STORE).resolve()}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    # MLflow's defaults (7 retries with exponential backoff, 120 s per request) take many minutes to report
    # a server that is down; these fail within about a minute and still ride out a short hiccup.
    for name, value in HTTP_CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    mlflow.set_tracking_uri(uri)
    return uri


def ensure_experiment(name: str) -> str:
    """Returns the id of experiment ``name``, creating it (artifacts beside a sqlite store) if needed."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    artifact_location = None
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        # A server decides its own artifact root; an embedded store keeps artifacts beside the database
        # rather than in whatever directory the first step happened to run in.
        artifact_location = (Path(uri.removeprefix("sqlite:///")).parent / LOCAL_ARTIFACTS).as_uri()
    return str(mlflow.create_experiment(name, artifact_location=artifact_location))


def start_pipeline_run(experiment: str, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
    """Creates the pipeline's MLflow run, logs every parameter and tag, and returns its id."""
    experiment_id = ensure_experiment(experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        mlflow.log_params({key: _param_value(value) for key, value in params.items()})
        return str(run.info.run_id)


@contextmanager
def resume_run(run_id: str) -> Iterator[mlflow.ActiveRun]:
    """Reopens the pipeline's run for one step; an exception inside marks the run FAILED."""
    with mlflow.start_run(run_id=run_id) as run:
        yield run


def _param_value(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)
