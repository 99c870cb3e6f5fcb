"""Runs the kfp pipeline on this machine: ``kfp.local.SubprocessRunner`` and the embedded MLflow store.

Each step runs as a subprocess of this interpreter (``use_venv=False``: nothing is installed per task), so
the environment inspectflow is installed in is the one the steps use. The subprocesses hand their work to
one warm worker (:mod:`inspectflow.steps.worker`) that has the steps' libraries imported already.
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
from inspectflow.data.transfer import is_s3_uri
from inspectflow.errors import ERROR_FILE_ENV, InspectflowError
from inspectflow.steps.worker import serving
from inspectflow.tracking import OWNER_PID_ENV, configure_tracking

LOCAL_OUTPUTS = "local_outputs"


@dataclass
class PipelineResult:
    """What a successful pipeline run reports."""

    tracking_uri: str
    summary: dict[str, Any]


class PipelineFailed(InspectflowError):
    """A pipeline step failed; the message names the step and its error."""


def run_log(workdir: Path, workload: str) -> Path:
    """A new file for the whole log of a local run: ``WORKDIR/local_outputs/logs/<workload>-<time>.log``."""
    folder = workdir / LOCAL_OUTPUTS / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{workload}-{datetime.now():%Y%m%d-%H%M%S-%f}.log"


def run_local(
    source: str, config: PipelineConfig, workdir: Path, resume_run_id: str = "", log: IO[str] | None = None
) -> PipelineResult:
    """Runs the inspection pipeline locally and returns the register step's summary.

    Args:
        source: Data root: a folder or an ``s3://bucket/prefix`` URI.
        config: Validated configuration.
        workdir: Holds the MLflow store (unless ``MLFLOW_TRACKING_URI`` is set) and the kfp task outputs.
        resume_run_id: A run that stopped, to continue (see ``inspectflow run --resume``); empty: a new one.
        log: Where the step worker writes (its own output, not the steps'); default this process's streams.

    Raises:
        PipelineFailed: A step failed.
    """
    from kfp import local

    from inspectflow.pipelines.inspection import inspection_pipeline

    workdir.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.NamedTemporaryFile("r", suffix=".log", encoding="utf-8") as errors,
        tempfile.TemporaryDirectory(prefix="inspectflow-steps-") as step_tmp,
        # Started first: the worker imports the steps' libraries while this process sets up the run.
        serving(Path(step_tmp), log) as worker,
        # kfp writes each step's program to `mktemp -d` and leaves it there: a folder of ours, removed.
        _environment(
            TMPDIR=step_tmp, **worker, **{ERROR_FILE_ENV: errors.name, OWNER_PID_ENV: str(os.getpid())}
        ),
        warnings.catch_warnings(),
    ):
        tracking_uri = configure_tracking(workdir)
        local.init(
            runner=local.SubprocessRunner(use_venv=False),
            pipeline_root=str((workdir / LOCAL_OUTPUTS).resolve()),
            raise_on_error=True,
        )
        # The component images, GPU and memory requests are for a cluster; running them here in this
        # interpreter, without them, is what the local runner is for, so kfp's warnings about it are noise.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message=".*(ignored|not used by the current local runner).*")
        try:
            pipeline = inspection_pipeline(config.workload)
            local_source = source if is_s3_uri(source) else str(Path(source).resolve())
            task = pipeline(source=local_source, config=config.to_json(), resume_run_id=resume_run_id)
        except RuntimeError as exc:
            step_errors = errors.read().strip()
            raise PipelineFailed(step_errors or str(exc)) from None
    return PipelineResult(tracking_uri=tracking_uri, summary=json.loads(task.output))


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
