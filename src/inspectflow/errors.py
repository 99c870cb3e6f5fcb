"""User-facing errors.

Every problem with a user's input is raised as :class:`InspectflowError` with a message that names the file
and the problem; the CLI prints the message (no traceback) and exits non-zero.
"""

from __future__ import annotations

import functools
import os
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
                path = os.environ.get(ERROR_FILE_ENV)
                if path:
                    with open(path, "a", encoding="utf-8") as handle:
                        handle.write(f"{name}: {error}\n")
                raise

        return wrapper

    return decorate
