"""The runs that did not finish: which are still going, which were abandoned, and why the others failed.

The query behind ``inspectflow runs``: :func:`unfinished_runs` lists them across every experiment of the
store, newest first, each with its status and the line's detail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from inspectflow.names import FAILURE_TAG
from inspectflow.tracking import abandoned_runs, mark_killed

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass(frozen=True)
class UnfinishedRun:
    """A run whose status is not FINISHED.

    Attributes:
        run_id: MLflow run id.
        status: RUNNING, FAILED, KILLED... as MLflow has it, or ABANDONED: RUNNING, its pipeline gone.
        name: ``<experiment>/<run name>``.
        detail: Why: an abandoned run's reason, a failed run's failure tag, ``still going`` for a live one.
    """

    run_id: str
    status: str
    name: str
    detail: str


def unfinished_runs(client: MlflowClient, last_n: int, clean: bool = False) -> list[UnfinishedRun]:
    """The newest runs of every experiment that are not FINISHED.

    Args:
        client: A client of the store.
        last_n: The most runs to list.
        clean: Whether to mark the abandoned runs KILLED first (their rows then say KILLED).

    Returns:
        The runs, newest first.
    """
    abandoned = {run.run_id: run for run in abandoned_runs(client)}
    if clean:
        mark_killed(client, list(abandoned.values()))
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    if not experiments:
        return []
    found = client.search_runs(
        list(experiments),
        "attributes.status != 'FINISHED'",
        max_results=last_n,
        order_by=["start_time DESC"],
    )
    rows = []
    for run in found:
        status = run.info.status
        if run.info.run_id in abandoned:
            why = abandoned[run.info.run_id].why
            status, detail = ("KILLED", why) if clean else ("ABANDONED", f"{why}; --clean marks it KILLED")
        else:
            detail = run.data.tags.get(FAILURE_TAG, "still going" if status == "RUNNING" else "")
        name = f"{experiments[run.info.experiment_id]}/{run.info.run_name}"
        rows.append(UnfinishedRun(run.info.run_id, status, name, detail))
    return rows
