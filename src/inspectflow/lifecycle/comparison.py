"""The last finished pipeline runs of an experiment side by side: differing params, key metrics, champion."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from inspectflow.errors import InspectflowError
from inspectflow.lineage import tagged_data_version
from inspectflow.names import (
    CHAMPION,
    GATE_DECISION_TAG,
    PARENT_RUN_TAG,
    REGISTERED_MODEL_NAME_TAG,
    REGISTERED_MODEL_VERSION_TAG,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

log = logging.getLogger(__name__)

#: Test metrics shown by ``compare``, in this order, with their column headers.
KEY_METRICS: dict[str, str] = {
    "test/accuracy": "acc",
    "test/macro_f1": "f1",
    "test/iou": "iou",
    "test/dice": "dice",
    "cv/accuracy_mean": "cv_acc",  # features+svm's estimate on the training split (not the gate's)
}
_PAGE = 1000


@dataclass(frozen=True)
class RunRow:
    """One finished pipeline run in a :class:`Comparison`.

    Attributes:
        run_id: MLflow run id.
        run_name: MLflow run name (the kfp pipeline run's name).
        start_time: When it started (UTC).
        params: The run's values of the params that differ between the compared runs (absent: not logged).
        metrics: Its key test metrics (:data:`KEY_METRICS`) that it logged.
        data_version: Run tag ``data.dvc_md5``, else ``data.digest``.
        model_name: The registered model it registered (run tag ``registered_model.name``).
        version: The version it registered (run tag ``registered_model.version``).
        decision: The gate's decision on it (run tag ``gate.decision``).
        champion: Whether its version is the champion now.
    """

    run_id: str
    run_name: str
    start_time: datetime
    params: dict[str, str]
    metrics: dict[str, float]
    data_version: str | None
    model_name: str | None
    version: str | None
    decision: str | None
    champion: bool


@dataclass(frozen=True)
class Comparison:
    """The last finished pipeline runs of an experiment, side by side.

    Attributes:
        experiment: Experiment name.
        runs: The runs, newest first.
        differing_params: Params whose values differ between the runs, sorted (equal in all: omitted).
        metric_names: The key metrics that at least one run logged, in :data:`KEY_METRICS` order.
        champions: ``model name -> champion version`` for the models these runs registered.
    """

    experiment: str
    runs: list[RunRow]
    differing_params: list[str]
    metric_names: list[str]
    champions: dict[str, str] = field(default_factory=dict)

    @property
    def champion_run(self) -> RunRow | None:
        """The compared run that produced a champion, if any."""
        return next((run for run in self.runs if run.champion), None)


def _finished_pipeline_runs(client: MlflowClient, experiment_id: str, last_n: int) -> list[Run]:
    runs: list[Run] = []
    token = None
    while len(runs) < last_n:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"attributes.status = 'FINISHED' AND tags.{PARENT_RUN_TAG} IS NULL",
            order_by=["attributes.start_time DESC"],
            max_results=min(max(last_n, 1), _PAGE),
            page_token=token,
        )
        # The filter already excludes child runs (the splits of features+svm); checked again for stores
        # that ignore it.
        runs.extend(run for run in page if PARENT_RUN_TAG not in run.data.tags)
        token = page.token
        if not token:
            break
    return runs[:last_n]


def _champion_runs(client: MlflowClient, names: Iterable[str]) -> tuple[dict[str, str], set[str]]:
    from mlflow.exceptions import MlflowException

    champions, run_ids = {}, set()
    for name in sorted(set(names)):
        try:
            version = client.get_registered_model(name).aliases.get(CHAMPION)
            if version is None:
                continue
            champions[name] = str(version)
            run_id = client.get_model_version(name, str(version)).run_id
        except MlflowException as error:
            log.debug("no champion of %s: %s", name, error)
            continue
        if run_id:
            run_ids.add(run_id)
    return champions, run_ids


def compare_runs(client: MlflowClient, experiment_name: str, last_n: int = 5) -> Comparison:
    """Compares the last ``last_n`` finished pipeline runs of an experiment.

    Only top-level runs count: the child runs of a pipeline run (tag ``mlflow.parentRunId``) do not.

    Args:
        client: MLflow client of the tracking store.
        experiment_name: The workload's experiment, such as ``textile``.
        last_n: How many runs, newest first.

    Raises:
        InspectflowError: ``last_n`` below 1, no such experiment, or no finished run in it.
    """
    if last_n < 1:
        raise InspectflowError(f"the number of runs to compare must be at least 1, not {last_n}")
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        from inspectflow.config import WORKLOAD_DEFAULTS

        workload = experiment_name if experiment_name in WORKLOAD_DEFAULTS else "WORKLOAD"
        raise InspectflowError(
            f"no MLflow experiment named {experiment_name!r} at {client.tracking_uri}; a pipeline run "
            f"creates it: run `inspectflow run {workload}`"
        )
    runs = _finished_pipeline_runs(client, experiment.experiment_id, last_n)
    if not runs:
        raise InspectflowError(
            f"experiment {experiment_name!r} has no finished pipeline runs to compare yet (failed and "
            "running ones are left out)"
        )
    keys = sorted({key for run in runs for key in run.data.params})
    differing = [key for key in keys if len({run.data.params.get(key) for run in runs}) > 1]
    metric_names = [name for name in KEY_METRICS if any(name in run.data.metrics for run in runs)]
    champions, champion_run_ids = _champion_runs(
        client, (name for run in runs if (name := run.data.tags.get(REGISTERED_MODEL_NAME_TAG)))
    )
    rows = []
    for run in runs:
        tags = run.data.tags
        name, version = (
            tags.get(REGISTERED_MODEL_NAME_TAG) or None,
            tags.get(REGISTERED_MODEL_VERSION_TAG) or None,
        )
        is_champion = run.info.run_id in champion_run_ids or (
            name is not None and version is not None and champions.get(name) == version
        )
        rows.append(
            RunRow(
                run_id=run.info.run_id,
                run_name=run.info.run_name or "",
                start_time=datetime.fromtimestamp((run.info.start_time or 0) / 1000, UTC),
                params={key: run.data.params[key] for key in differing if key in run.data.params},
                metrics={key: run.data.metrics[key] for key in metric_names if key in run.data.metrics},
                data_version=tagged_data_version(tags),
                model_name=name,
                version=version,
                decision=tags.get(GATE_DECISION_TAG) or None,
                champion=is_champion,
            )
        )
    return Comparison(experiment_name, rows, differing, metric_names, champions)
