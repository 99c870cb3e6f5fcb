"""User-facing errors.

Every problem with a user's input is raised as :class:`InspectflowError` with a message that names the file
and the problem; the CLI prints the message (no traceback) and exits non-zero.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from inspectflow import console
from inspectflow.names import FAILURE_TAG

P = ParamSpec("P")
R = TypeVar("R")


class InspectflowError(Exception):
    """A problem the user can fix: bad input data, bad configuration, missing weights."""


class DataError(InspectflowError):
    """The input data is unreadable or violates the dataset's expectations."""


class ConfigError(InspectflowError):
    """The configuration is invalid."""


#: Set by the local runner: steps append their user-facing error here, so the CLI can repeat it last.
ERROR_FILE_ENV = "INSPECTFLOW_ERROR_FILE"
#: Set by ``inspectflow -v``: a failing local step shows its traceback too.
VERBOSE_ENV = "INSPECTFLOW_VERBOSE"


def pipeline_step(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Marks a function as the body of pipeline step ``name``.

    Any error raised inside is turned into one line naming its cause (:func:`one_line`), appended to the
    file named by ``INSPECTFLOW_ERROR_FILE`` (when set) so the CLI can repeat it after the step's log, and
    written on the step's MLflow run (its ``run_id`` argument), which is marked FAILED: a run whose step
    failed never reads as finished. Under the local runner the step then exits without a traceback, unless
    ``inspectflow -v`` asked for one. The step's start and end are reported to the run's console.
    """

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            console.emit("start", step=name)
            try:
                result = function(*args, **kwargs)
            except BaseException as error:
                console.emit("failed", step=name)
                if not isinstance(error, Exception):
                    raise  # interrupted: nothing to report
                unreachable = _tracking_failure(error)
                cause = one_line(error)
                _report(name, cause)
                run_id = signature.bind_partial(*args, **kwargs).arguments.get("run_id")
                if isinstance(run_id, str) and unreachable is None:  # a server that is down takes nothing
                    _mark_failed(run_id, f"{name}: {cause}")
                if os.environ.get(ERROR_FILE_ENV) and not os.environ.get(VERBOSE_ENV):
                    print(f"{name} failed: {cause}", file=sys.stderr)
                    raise SystemExit(1) from None
                if unreachable is not None:
                    raise unreachable from error
                raise
            console.emit("done", step=name)
            return result

        return wrapper

    return decorate


def one_line(error: Exception) -> str:
    """The cause of an error in one line that names the path, setting or server involved."""
    if isinstance(error, InspectflowError):
        return str(error)
    unreachable = _tracking_failure(error)
    if unreachable is not None:
        return str(unreachable)
    if isinstance(error, OSError) and error.strerror:  # read-only folder, full disk, permissions
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    if "database is locked" in text:
        uri = os.environ.get("MLFLOW_TRACKING_URI", "the MLflow store")
        return f"{uri} is locked by another process (database is locked); retry when it has finished"
    return f"{type(error).__name__}: {text}"[:500]


def tracking_unreachable(error: Exception) -> bool:
    """Whether the error is the MLflow tracking server failing: then nothing can be written to it."""
    return _tracking_failure(error) is not None


def _mark_failed(run_id: str, reason: str) -> None:
    """Marks the MLflow run FAILED with its reason; best effort, as the store may be what failed."""
    try:
        from mlflow import MlflowClient

        client = MlflowClient()
        client.set_tag(run_id, FAILURE_TAG, reason[:5000])
        client.set_terminated(run_id, "FAILED")
    except Exception:  # the step's own error is what the user must see
        pass


class TrackingError(InspectflowError):
    """The MLflow tracking server could not be reached or refused a request."""


def _report(step: str, cause: str) -> None:
    path = os.environ.get(ERROR_FILE_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{step}: {cause}\n")


def _tracking_failure(error: Exception) -> TrackingError | None:
    """Turns a failed request to an MLflow server into a one-line error naming the server."""
    exceptions = sys.modules.get("mlflow.exceptions")  # loaded by then if MLflow raised it
    if exceptions is None or not isinstance(error, exceptions.MlflowException):
        return None
    text = str(error)
    if "API request to" not in text:
        return None  # not a transport failure: MLflow's own message says what is wrong
    uri = os.environ.get("MLFLOW_TRACKING_URI", "the configured tracking URI")
    cause = "connection refused" if "Connection refused" in text else text.splitlines()[0][:300]
    return TrackingError(f"the MLflow tracking server {uri} failed ({cause})")
