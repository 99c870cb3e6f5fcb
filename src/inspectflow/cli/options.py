"""Click arguments and options that several commands share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from inspectflow.config import WORKLOAD_DEFAULTS
from inspectflow.tasks import TASKS

_Command = TypeVar("_Command", bound=Callable[..., Any])

#: A built-in workload (with a demo set) or any line of the user's, named in lower case.
WORKLOAD = click.argument("workload", metavar=f"WORKLOAD ({'|'.join(WORKLOAD_DEFAULTS)}|your own)")
TASK = click.option(
    "--task",
    type=click.Choice(list(TASKS)),
    help="What a workload that is not built in learns (or task: in its params.yaml section).",
)
WORKDIR = click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    default=Path("."),
    show_default=True,
    help="Holds the MLflow sqlite store (unless MLFLOW_TRACKING_URI is set) and kfp outputs.",
)
JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")

DATA_HELP = (
    "Data root: a folder or an s3://bucket/prefix URI; default WORKDIR/data/<workload>, where the demo set "
    "is synthesized if it is missing."
)


def run_options(command: _Command) -> _Command:
    """The options ``run`` and ``retrain`` share.

    Args:
        command: The command function to decorate.

    Returns:
        The command with ``--data``, ``--task``, ``--params``, ``--set``, ``--workdir``, ``--metrics``,
        ``--plots``, ``--runner`` and ``--image``.
    """
    options = [
        click.option("--data", "data", help=DATA_HELP),
        TASK,
        click.option(
            "--params",
            "params_file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="A params.yaml: its <workload> section (grouped by step) is applied over the defaults.",
        ),
        click.option(
            "--set",
            "overrides",
            multiple=True,
            metavar="KEY=VALUE",
            help="Override a setting, such as train.epochs=3 (repeatable; applied last).",
        ),
        WORKDIR,
        click.option(
            "--metrics",
            "metrics_file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Write the test metrics here as JSON (a DVC metrics file).",
        ),
        click.option(
            "--plots",
            "plots_dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Write the training curves and confusion matrix here as CSV (DVC plots).",
        ),
        click.option(
            "--runner",
            type=click.Choice(["subprocess", "container"]),
            default="subprocess",
            show_default=True,
            help="Run each local step in a subprocess of this Python, or in a container of --image "
            "(Docker, or podman's Docker API).",
        ),
        click.option(
            "--image",
            metavar="IMAGE",
            help="With --runner container: the component image (built by infra/docker/build.sh); "
            "default: the one the compiled pipelines name.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command
