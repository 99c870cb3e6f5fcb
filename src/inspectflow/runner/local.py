"""Runs the kfp pipeline on this machine, with kfp's local runner and the embedded MLflow store.

By default each step runs as a subprocess of this interpreter (``use_venv=False``: nothing is installed
per task), so the environment inspectflow is installed in is the one the steps use. The subprocesses hand
their work to one warm worker (:mod:`inspectflow.runner.worker`) that has the steps' libraries imported
already. Given an image, each step runs in a container of it instead (:mod:`inspectflow.runner.containers`).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from inspectflow.config import PipelineConfig
from inspectflow.console import CONSOLE_ENV
from inspectflow.data.transfer import is_s3_uri
from inspectflow.errors import ERROR_FILE_ENV, VERBOSE_ENV, InspectflowError
from inspectflow.runner.worker import serving
from inspectflow.tracking import OWNER_PID_ENV, configure_tracking, tracking_uri

LOCAL_OUTPUTS = "local_outputs"


@dataclass
class PipelineResult:
    """What a successful pipeline run reports."""

    tracking_uri: str
    summary: dict[str, Any]
    #: What the run's kfp outputs (dataset, model, evaluation) weigh on disk, in bytes.
    outputs_bytes: int = 0


class PipelineFailed(InspectflowError):
    """A pipeline step failed; the message names the step and its error."""


def run_log(workdir: Path, workload: str) -> Path:
    """A new file for the whole log of a local run: ``WORKDIR/local_outputs/logs/<workload>-<time>.log``."""
    folder = workdir / LOCAL_OUTPUTS / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{workload}-{datetime.now():%Y%m%d-%H%M%S-%f}.log"


def run_local(
    source: str,
    config: PipelineConfig,
    workdir: Path,
    resume_run_id: str = "",
    log: IO[str] | None = None,
    image: str | None = None,
) -> PipelineResult:
    """Runs the inspection pipeline locally and returns the register step's summary.

    Args:
        source: Data root: a folder or an ``s3://bucket/prefix`` URI.
        config: Validated configuration.
        workdir: Holds the MLflow store (unless ``MLFLOW_TRACKING_URI`` is set) and the kfp task outputs.
        resume_run_id: A run that stopped, to continue (see ``inspectflow run --resume``); empty: a new one.
        log: Where the step worker writes (its own output, not the steps'); default this process's streams.
        image: Run each step in a container of this image (:mod:`inspectflow.runner.containers`) instead of a
            subprocess of this interpreter.

    Raises:
        PipelineFailed: A step failed.
        InspectflowError: ``image`` is not there, or no container engine answers.
    """
    from kfp import local

    from inspectflow.pipelines.inspection import inspection_pipeline

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    local_source = source if is_s3_uri(source) else str(Path(source).resolve())
    with (
        tempfile.NamedTemporaryFile("r", suffix=".log", encoding="utf-8") as errors,
        _steps_runner(image, workdir, local_source, Path(errors.name), log) as (runner, environment),
        _environment(**environment, **{ERROR_FILE_ENV: errors.name, OWNER_PID_ENV: str(os.getpid())}),
        warnings.catch_warnings(),
    ):
        tracking_uri = configure_tracking(workdir)
        outputs = workdir / LOCAL_OUTPUTS
        earlier = set(outputs.iterdir()) if outputs.is_dir() else set()
        local.init(runner=runner, pipeline_root=str(workdir / LOCAL_OUTPUTS), raise_on_error=True)
        # The GPU and memory requests are for a cluster; running without them here is what the local runner
        # is for, so kfp's warnings about them (and about images, under the subprocess runner) are noise.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message=".*(ignored|not used by the current local runner).*")
        try:
            pipeline = inspection_pipeline(config.workload, image)
            task = pipeline(source=local_source, config=config.to_json(), resume_run_id=resume_run_id)
        except RuntimeError as exc:
            step_errors = errors.read().strip()
            raise PipelineFailed(step_errors or str(exc)) from None
    this_run = [path for path in outputs.iterdir() if path not in earlier and path.is_dir()]
    written = sum(file.stat().st_size for path in this_run for file in path.rglob("*") if file.is_file())
    return PipelineResult(tracking_uri=tracking_uri, summary=json.loads(task.output), outputs_bytes=written)


@contextmanager
def _steps_runner(
    image: str | None, workdir: Path, source: str, error_file: Path, log: IO[str] | None
) -> Iterator[tuple[Any, dict[str, str]]]:
    """The steps' kfp runner and the environment this process sets for them.

    Without an image: subprocesses of this interpreter that hand their work to one warm worker, started
    first so that it imports the steps' libraries while this process sets up the run. With one: containers
    of that image, which get the tracking store's URI and the error file through the runner.
    """
    from kfp import local

    if image is None:
        with (
            tempfile.TemporaryDirectory(prefix="inspectflow-steps-") as step_tmp,
            serving(Path(step_tmp), log) as worker,
        ):
            # kfp writes each step's program to `mktemp -d` and leaves it there: a folder of ours, removed.
            yield local.SubprocessRunner(use_venv=False), {"TMPDIR": step_tmp, **worker}
        return
    from inspectflow.runner import containers

    with containers.docker_api() as api_url:
        resolved = containers.resolve_image(api_url, image)
        runner = containers.step_runner(
            resolved,
            workdir,
            read_only=[] if is_s3_uri(source) else [Path(source)],
            writable=[error_file],
            environment={
                "MLFLOW_TRACKING_URI": tracking_uri(workdir),
                ERROR_FILE_ENV: str(error_file),
                OWNER_PID_ENV: str(os.getpid()),
                **{name: os.environ[name] for name in (CONSOLE_ENV, VERBOSE_ENV) if os.environ.get(name)},
            },
        )
        yield runner, {"DOCKER_HOST": api_url}


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Sets environment variables for the step subprocesses, restoring the previous values after."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
