"""The registry of tasks a workload can be (classification, segmentation), chosen once by name.

See :mod:`inspectflow.tasks.base` for what a task owns. A new task is one module here defining a subclass of
:class:`~inspectflow.tasks.base.Task` and ``TASK = <Subclass>()``; the registry, configuration, ``--task``
and the steps pick it up from there.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from inspectflow.tasks.base import Scores, Task

if TYPE_CHECKING:
    from inspectflow.types import RunSettings


def _discover() -> dict[str, Task]:
    """Every module of this package that defines ``TASK``, by name (the order ``--task`` lists them)."""
    found = []
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            task = getattr(importlib.import_module(f"{__name__}.{module.name}"), "TASK", None)
            if isinstance(task, Task):
                found.append(task)
    return {task.name: task for task in sorted(found, key=lambda task: task.name)}


#: The registered tasks by name.
TASKS: dict[str, Task] = _discover()


def get_task(name: str) -> Task:
    """Returns the task called ``name``.

    Raises:
        ValueError: No task has that name.
    """
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)}") from None


def task_for(config: RunSettings) -> Task:
    """Returns the task of a run's workload: the one place a run's task is chosen."""
    return get_task(config.task)


def save_scores(scores: Scores, path: Path) -> None:
    """Writes scores as JSON (with their task, so that :func:`load_scores` knows the type)."""
    path.write_text(json.dumps(asdict(scores), indent=2))  # type: ignore[call-overload]


def load_scores(path: Path) -> Scores:
    """Reads scores written by :func:`save_scores`."""
    data = json.loads(path.read_text())
    return get_task(data.get("task", "classification")).scores_from_dict(data)
