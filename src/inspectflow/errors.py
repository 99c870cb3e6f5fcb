"""User-facing errors.

Every problem with a user's input is raised as :class:`InspectflowError` with a message that names the file
and the problem; the CLI prints the message (no traceback) and exits non-zero.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

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


def pipeline_step(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Marks a function as the body of pipeline step ``name``.

    A user-facing error raised inside is appended to the file named by ``INSPECTFLOW_ERROR_FILE`` (when set)
    before it propagates, so the CLI can repeat it after the step's log.
    """

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return function(*args, **kwargs)
            except InspectflowError as error:
                _report(name, error)
                raise
            except Exception as error:
                unreachable = _tracking_failure(error)
                if unreachable is None:
                    raise
                _report(name, unreachable)
                raise unreachable from error

        return wrapper

    return decorate


class TrackingError(InspectflowError):
    """The MLflow tracking server could not be reached or refused a request."""


def _report(step: str, error: InspectflowError) -> None:
    path = os.environ.get(ERROR_FILE_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{step}: {error}\n")


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
