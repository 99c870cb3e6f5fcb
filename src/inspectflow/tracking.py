"""MLflow tracking: where runs go, and how the pipeline's steps share one run.

The ingest step opens the run; every later step reopens it by id, so one pipeline run is one MLflow run
holding every parameter, metric and artifact, and runs compare side by side in the MLflow UI. A step that
fails marks the run FAILED.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_RUN_NOTE

from inspectflow.errors import InspectflowError, one_line, tracking_unreachable
from inspectflow.names import (
    DATA_SOURCE_TAG,
    DATA_VERSION_TAG,
    DVC_EXPERIMENT_TAG,
    FAILURE_TAG,
    GIT_COMMIT_TAG,
    GIT_DIRTY_TAG,
    HEARTBEAT_TAG,
    PIPELINE_RUN_NAME_TAG,
    RUN_HOST_TAG,
    RUN_PID_TAG,
    STEP_IMAGE_TAG_PREFIX,
)

if TYPE_CHECKING:
    from inspectflow.config import PipelineConfig

#: The MLflow UI's experiment kind (no constant in MLflow's Python API): model training, not GenAI.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"

log = logging.getLogger(__name__)

#: Set by the local runner: the ``inspectflow run`` process that owns the pipeline's run.
OWNER_PID_ENV = "INSPECTFLOW_OWNER_PID"
#: The image the step runs in (name and ID), set by the container runner
#: (:mod:`inspectflow.runner.containers`).
IMAGE_ENV = "INSPECTFLOW_IMAGE"
#: A run from another host whose heartbeat is older than this is taken to be abandoned: steps beat at
#: their start and after every training epoch, and no epoch should take an hour.
STALE_HEARTBEAT_S = 3600.0
RUNNING = "RUNNING"
LOCAL_STORE = "mlflow.db"
LOCAL_ARTIFACTS = "mlartifacts"
#: MLflow client settings for a tracking server, unless the environment sets them.
HTTP_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def tracking_uri(workdir: Path) -> str:
    """``MLFLOW_TRACKING_URI``, or the embedded sqlite store in ``workdir`` when it is unset."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(workdir / LOCAL_STORE).resolve()}"


def configure_tracking(workdir: Path, create: bool = True) -> str:
    """Points MLflow at ``MLFLOW_TRACKING_URI``, or at a sqlite store in ``workdir`` when it is unset.

    The URI is exported so the pipeline's step subprocesses use the same store.

    Args:
        workdir: Where the embedded store is.
        create: Create the embedded store if it is missing; False (commands that only read) refuses.

    Returns:
        The tracking URI in force.

    Raises:
        InspectflowError: ``create`` is False and there is no embedded store in ``workdir``.
    """
    local = (workdir / LOCAL_STORE).resolve()
    uri = tracking_uri(workdir)
    if not create and uri == f"sqlite:///{local}" and not local.is_file():
        raise InspectflowError(
            f"{local}: no MLflow store here; run a pipeline first, or give --workdir or MLFLOW_TRACKING_URI"
        )
    os.environ["MLFLOW_TRACKING_URI"] = uri
    # MLflow's defaults (7 retries with exponential backoff, 120 s per request) take many minutes to report
    # a server that is down; these fail within about a minute and still ride out a short hiccup.
    for name, value in HTTP_CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:///"):
        create_store_once(Path(uri.removeprefix("sqlite:///")))
    _mark_runs_of_dead_processes()
    return uri


def _mark_runs_of_dead_processes() -> None:
    """Marks KILLED the runs of this host whose ``inspectflow run`` process is gone (``kill -9``, a crash).

    Best effort: a store that cannot be read here fails the command's own first request, more clearly.
    """
    client = mlflow.MlflowClient()
    try:
        dead = abandoned_runs(client, stale_after_s=None)
        mark_killed(client, dead)
    except Exception as error:
        log.debug("could not check for abandoned runs: %s", error)
        return
    for run in dead:
        log.warning("run %s (%s) marked KILLED: %s", run.run_id, run.name, run.why)


def create_store_once(database: Path) -> None:
    """Creates (or upgrades) a sqlite store's schema under a file lock beside it.

    MLflow creates its tables on first use; two first runs at once would both migrate the same empty
    database and one would fail ("table ... already exists"). Later uses find the schema and do nothing.
    """
    from filelock import FileLock

    database.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{database}.lock"):
        mlflow.MlflowClient(f"sqlite:///{database}").search_experiments(max_results=1)


def ensure_experiment(name: str, description: str = "") -> str:
    """Returns the id of experiment ``name``, creating it (artifacts beside a sqlite store) if needed.

    A new experiment is described by ``description`` and marked as one of model training, so that the
    MLflow UI opens it on runs, charts and models rather than on GenAI traces.
    """
    from mlflow.exceptions import MlflowException

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    artifact_location = None
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        # A server decides its own artifact root; an embedded store keeps artifacts beside the database
        # rather than in whatever directory the first step happened to run in.
        artifact_location = (Path(uri.removeprefix("sqlite:///")).parent / LOCAL_ARTIFACTS).as_uri()
    try:
        tags = {EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}
        if description:
            tags[MLFLOW_RUN_NOTE] = description  # an experiment's description is the same tag
        return str(mlflow.create_experiment(name, artifact_location=artifact_location, tags=tags))
    except MlflowException:
        created = mlflow.get_experiment_by_name(name)  # by a run started at the same moment
        if created is None:
            raise
        return str(created.experiment_id)


def experiment_description(config: PipelineConfig) -> str:
    """A new experiment's description (Markdown): what its runs are and where to look."""
    return (
        f"Pipeline runs of the **{config.workload}** workload ({config.task}): ingest, validate, train, "
        f"evaluate, register. Each run registers a version of `{config.register_.model_name}`; the gate "
        "makes it `@champion` only when it beats the champion and the trivial baseline. Metrics: `test/` "
        "holds the test split's scores (and `test/baseline_*` the trivial model's), `val/` and `train/` the "
        "training curves; images: the confusion matrix or overlays."
    )


def run_description(config: PipelineConfig, tags: dict[str, str]) -> str:
    """A pipeline run's description (Markdown): what differs, which data and code (register adds results)."""
    changed = ", ".join(f"`{k}={v}`" for k, v in config.differences().items()) or "none (the defaults)"
    experiment = tags.get(DVC_EXPERIMENT_TAG)
    code = f"git `{tags.get(GIT_COMMIT_TAG, 'unknown')[:12]}`"
    if experiment:
        code += f", DVC experiment `{experiment}`"
    elif tags.get(GIT_DIRTY_TAG) == "true":
        code += " with uncommitted changes"
    return "\n".join(
        [
            f"**{config.workload}** pipeline run ({config.task}, `{config.title()}`)",
            "",
            f"- settings that differ from the workload's: {changed}",
            f"- data: `{tags.get(DATA_SOURCE_TAG, '?')}`, version `{tags.get(DATA_VERSION_TAG, '?')[:12]}`",
            f"- code: {code}",
            f"- kfp pipeline run: `{tags.get(PIPELINE_RUN_NAME_TAG, '?')}`",
        ]
    )


def start_pipeline_run(
    experiment_id: str, title: str, params: dict[str, Any], tags: dict[str, str], description: str = ""
) -> str:
    """Creates the pipeline's MLflow run, logs every parameter and tag, and returns its id.

    The experiment comes from :func:`ensure_experiment`, which also describes a new one.

    The run is named ``<title> <short id>`` (see :func:`name_run`) and described by ``description``
    (Markdown, the run page's description). It is tagged with the host and the process that owns the
    pipeline (``inspectflow run``, or this process), so that a later command can tell a run that is still
    going from one that was killed.
    """
    tags = {**tags, **_owner_tags(), **({MLFLOW_RUN_NOTE: description} if description else {})}
    with mlflow.start_run(experiment_id=experiment_id, run_name=title, tags=tags) as run:
        name_run(run.info.run_id, title)
        mlflow.log_params({key: _param_value(value) for key, value in params.items()})
        heartbeat()
        mlflow.end_run(RUNNING)  # until the register step finishes it
        return str(run.info.run_id)


def name_run(run_id: str, title: str) -> None:
    """Names a run ``<title> <first 6 characters of its id>``: readable, and unique among similar runs."""
    mlflow.MlflowClient().set_tag(run_id, MLFLOW_RUN_NAME, f"{title} {run_id[:6]}")


def _owner_tags() -> dict[str, str]:
    """The host and the process that own the pipeline's run (see :func:`abandoned_runs`)."""
    return {RUN_HOST_TAG: socket.gethostname(), RUN_PID_TAG: os.environ.get(OWNER_PID_ENV, str(os.getpid()))}


def reopen_pipeline_run(run_id: str, params: dict[str, Any], tags: dict[str, str]) -> str:
    """Takes over a pipeline run that stopped before it finished (killed or failed), to continue it.

    Raises:
        InspectflowError: No such run, it finished, or the settings differ from those it was started with.
    """
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise InspectflowError(
            f"--resume {run_id}: no such MLflow run in {mlflow.get_tracking_uri()}"
        ) from None
    if run.info.status == "FINISHED":
        raise InspectflowError(f"--resume {run_id}: the run finished; start a new one instead")
    logged = run.data.params
    changed = sorted(
        key for key, value in params.items() if key in logged and logged[key] != _param_value(value)
    )
    if changed:
        raise InspectflowError(
            f"--resume {run_id}: settings differ from the run's ({', '.join(changed)}); use the same ones"
        )
    with mlflow.start_run(run_id=run_id, tags={**tags, **_owner_tags()}):
        if FAILURE_TAG in run.data.tags:
            mlflow.delete_tag(FAILURE_TAG)
        heartbeat()
        mlflow.end_run(RUNNING)
    return run_id


@contextmanager
def resume_run(run_id: str, step: str, final: bool = False) -> Iterator[mlflow.ActiveRun]:
    """Reopens the pipeline's run for ``step``.

    A step running in a container records its image (``inspectflow.image.<step>``). The run stays RUNNING
    after the step unless it is the ``final`` one: a pipeline that stopped between steps must not read as
    finished. An exception inside marks it FAILED, tagged with why; an interrupt (Ctrl-C) marks it KILLED.
    """
    run = mlflow.start_run(run_id=run_id)
    try:
        heartbeat()
        if os.environ.get(IMAGE_ENV):
            mlflow.set_tag(STEP_IMAGE_TAG_PREFIX + step, os.environ[IMAGE_ENV])
        yield run
    except Exception as error:
        if not tracking_unreachable(error):  # a server that is down takes no tags, only retries
            mlflow.set_tag(FAILURE_TAG, one_line(error))
            mlflow.end_run("FAILED")
        raise
    except BaseException:
        mlflow.end_run("KILLED")
        raise
    mlflow.end_run("FINISHED" if final else RUNNING)


def heartbeat() -> None:
    """Records on the active run that its pipeline is alive (see :func:`abandoned_runs`)."""
    mlflow.set_tag(HEARTBEAT_TAG, str(int(time.time())))


@dataclass
class AbandonedRun:
    """A run left RUNNING by a pipeline that is gone, and how that is known."""

    run_id: str
    experiment_id: str
    name: str
    why: str


def abandoned_runs(
    client: mlflow.MlflowClient, stale_after_s: float | None = STALE_HEARTBEAT_S
) -> list[AbandonedRun]:
    """Runs marked RUNNING whose pipeline is gone.

    On this host a run is gone when the process that owned it no longer exists; a run from elsewhere (a
    cluster pod, another machine) when its heartbeat is older than ``stale_after_s`` (``None``: only the
    certain case, this host's).
    """
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    found = []
    host = socket.gethostname()
    for run in client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=1000):
        tags = run.data.tags
        beat = float(tags.get(HEARTBEAT_TAG, run.info.start_time / 1000))
        if tags.get(RUN_HOST_TAG) == host and RUN_PID_TAG in tags:
            if _process_exists(int(tags[RUN_PID_TAG])):
                continue
            why = f"its process {tags[RUN_PID_TAG]} on {host} is gone"
        elif stale_after_s is not None and time.time() - beat > stale_after_s:
            why = f"no heartbeat for {(time.time() - beat) / 60:.0f} minutes"
        else:
            continue
        found.append(AbandonedRun(run.info.run_id, run.info.experiment_id, run.info.run_name or "", why))
    return found


def mark_killed(client: mlflow.MlflowClient, runs: list[AbandonedRun]) -> None:
    """Marks abandoned runs KILLED, with why as their failure tag."""
    for run in runs:
        client.set_tag(run.run_id, FAILURE_TAG, f"killed: {run.why}")
        client.set_terminated(run.run_id, "KILLED")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _param_value(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)
