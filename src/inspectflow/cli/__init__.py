"""The ``inspectflow`` command line: thin doors onto the library's functions.

The root group is here; each command group lives in its own module and is added to it below:

- :mod:`~inspectflow.cli.synth`: ``synth`` (synthetic datasets).
- :mod:`~inspectflow.cli.run`: ``run`` and ``retrain`` (local runs and KFP submission).
- :mod:`~inspectflow.cli.monitor`: ``monitor`` (the drift watch).
- :mod:`~inspectflow.cli.cluster`: ``schedule`` and ``compile`` (Kubeflow Pipelines).
- :mod:`~inspectflow.cli.data`: ``data`` (demo sets, imports) and ``lineage``.
- :mod:`~inspectflow.cli.models`: ``models`` (the registry), ``compare`` and ``runs``.
- :mod:`~inspectflow.cli.predict`: ``predict``.
- :mod:`~inspectflow.cli.serve`: ``serve`` (the inference service).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings

import click

from inspectflow.cli import cluster, data, models, monitor, predict, run, serve, synth
from inspectflow.errors import VERBOSE_ENV, InspectflowError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-v",
    "--verbose",
    "verbosity",
    count=True,
    help="-v: the whole log (library messages, kfp, tracebacks); -vv: debug logs too. Anywhere on the line.",
)
@click.version_option(package_name="inspectflow", prog_name="inspectflow")
def cli(verbosity: int) -> None:
    """Kubeflow-style MLOps pipelines for industrial visual inspection."""
    logging.basicConfig(
        level={0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if verbosity:
        os.environ[VERBOSE_ENV] = "1"  # the pipeline's step subprocesses show tracebacks too
    else:
        # Library chatter is for the log: MLflow's own INFO lines, and warnings meant for developers.
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        warnings.filterwarnings("ignore")


for _module in (synth, run, monitor, cluster, data, models, predict, serve):
    for _command in _module.COMMANDS:
        cli.add_command(_command)
del _module, _command


def main() -> None:
    """Entry point: runs the CLI, turning user-facing errors into a message and exit code 1."""
    try:
        cli(args=hoist_verbosity(sys.argv[1:]), standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (InspectflowError, FileExistsError) as exc:  # FileExistsError: synth refuses to overwrite
        click.echo(f"inspectflow: error: {exc}", err=True)
        sys.exit(1)


def hoist_verbosity(args: list[str]) -> list[str]:
    """Moves ``-v``, ``-vv`` and ``--verbose`` from anywhere (before a lone ``--``) to the group's place."""
    end = args.index("--") if "--" in args else len(args)
    flags = [a for a in args[:end] if a == "--verbose" or re.fullmatch("-v+", a)]
    rest = [a for a in args[:end] if a not in flags]
    return [*flags, *rest, *args[end:]]
