"""What several commands do before calling the library: settings, data, the store, the model's name."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from inspectflow.config import WORKLOAD_DEFAULTS
from inspectflow.errors import InspectflowError
from inspectflow.tasks import TASKS

if TYPE_CHECKING:
    from inspectflow.config import PipelineConfig


def pipeline_config(
    workload: str, params_file: Path | None, overrides: tuple[str, ...], task: str | None
) -> PipelineConfig:
    """The settings of a run: defaults, then the params.yaml section, then ``--set``.

    Args:
        workload: The workload named on the command line.
        params_file: A params.yaml, if given.
        overrides: ``KEY=VALUE`` settings, applied last.
        task: The task of a workload that is not built in.

    Returns:
        The configuration, its network's pretrained weights checked to be at hand.
    """
    from inspectflow.config import build_config, read_params
    from inspectflow.models.networks import check_weights

    params = read_params(params_file, workload) if params_file else None
    config = build_config(workload, list(overrides), params, task)
    check_weights(*config.train.network_weights())  # fail in seconds, not after ingest and validation
    return config


def local_data(workload: str, data: str | None, workdir: Path) -> str:
    """The data to read; the demo set, synthesized once into WORKDIR/data/<workload>, by default.

    Args:
        workload: The workload named on the command line.
        data: ``--data``, if given.
        workdir: ``--workdir``.

    Returns:
        A folder or an s3:// URI.

    Raises:
        click.UsageError: No ``--data`` for a workload without a demo set.
    """
    from inspectflow.data.versioning import write_demo

    if data is not None:
        return data
    if workload not in WORKLOAD_DEFAULTS:
        raise click.UsageError(
            f"--data is needed: only the built-in workloads ({', '.join(WORKLOAD_DEFAULTS)}) have demo sets"
        )
    if write_demo(workdir / "data", [workload])[workload]:
        click.echo(f"synthesized the {workload} demo set into {workdir / 'data' / workload}")
    return str(workdir / "data" / workload)


def container_image(runner: str, image: str | None) -> str | None:
    """The image the steps run in: None for subprocesses.

    Args:
        runner: ``--runner``: ``subprocess`` or ``container``.
        image: ``--image``, if given.

    Returns:
        The image, or None when the steps run as subprocesses.

    Raises:
        click.UsageError: ``--image`` without ``--runner container``.
    """
    from inspectflow.components import COMPONENT_IMAGE

    if runner == "subprocess":
        if image is not None:
            raise click.UsageError("--image is for --runner container")
        return None
    return image or COMPONENT_IMAGE


def open_client(workdir: Path, create: bool = False) -> Any:
    """A client of the store in force; one that is missing is created only when ``create`` (runs do).

    Args:
        workdir: ``--workdir``, which holds the sqlite store unless MLFLOW_TRACKING_URI is set.
        create: Whether to create a missing store.

    Returns:
        An ``mlflow.MlflowClient``.
    """
    from mlflow import MlflowClient

    from inspectflow.tracking import configure_tracking

    configure_tracking(workdir, create)
    return MlflowClient()


def registered_name(workload: str, client: Any) -> str:
    """The registered model of a workload: a built-in one's default, else the one of its task that exists.

    Args:
        workload: The workload named on the command line.
        client: An ``mlflow.MlflowClient`` of the store.

    Returns:
        The registered model's name.

    Raises:
        InspectflowError: A workload that is not built in has no registered model yet.
    """
    from mlflow.exceptions import MlflowException

    from inspectflow.config import build_config

    if workload in WORKLOAD_DEFAULTS:
        return build_config(workload).register_.model_name
    names = [build_config(workload, task=task).register_.model_name for task in TASKS]
    for name in names:
        try:
            client.get_registered_model(name)
        except MlflowException:
            continue
        return name
    raise InspectflowError(f"no registered model {' or '.join(names)} yet: a pipeline run registers it")


def answering_version(uri: str) -> str | None:
    """``<name> version <n>`` for a registry URI (``models:/<name>@<alias>``, ``models:/<name>/<n>``).

    Args:
        uri: An MLflow model URI.

    Returns:
        The version that answers, or None for a URI outside the registry (a run's or a folder's model).

    Raises:
        InspectflowError: The registry has no such version.
    """
    from mlflow.exceptions import MlflowException

    from inspectflow.lineage import model_version

    if not uri.startswith("models:/"):
        return None  # a run's or a folder's model: the URI itself names it
    try:
        version = model_version(uri)
    except MlflowException as exc:
        raise InspectflowError(f"{uri}: {exc.message}") from None
    return f"{version.name} version {version.version}"
