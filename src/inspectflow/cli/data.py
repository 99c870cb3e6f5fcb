"""``inspectflow data`` (demo sets, imports into the DVC-tracked folder) and ``lineage``."""

from __future__ import annotations

from pathlib import Path

import click

from inspectflow.cli.common import open_client
from inspectflow.cli.options import JSON, WORKDIR, WORKLOAD
from inspectflow.config import WORKLOAD_DEFAULTS


@click.group()
def data() -> None:
    """The versioned data folder data/<workload>, tracked by DVC."""


@data.command("demo")
@click.argument("workloads", nargs=-1, type=click.Choice(sorted(WORKLOAD_DEFAULTS)))
@click.option(
    "--root", type=click.Path(file_okay=False, path_type=Path), default=Path("data"), show_default=True
)
@click.option("--no-dvc", is_flag=True, help="Do not record the folder with `dvc add`.")
def data_demo(workloads: tuple[str, ...], root: Path, no_dvc: bool) -> None:
    """Synthesize the demo sets (all workloads by default) into ROOT/<workload> and record them with DVC.

    The sets are deterministic: on a clean clone they are, byte for byte, the version data.dvc records.
    """
    from inspectflow.data.versioning import record, write_demo

    chosen = list(workloads) or sorted(WORKLOAD_DEFAULTS)
    for workload, written in write_demo(root, chosen).items():
        click.echo(f"{root / workload}: {'synthesized' if written else 'exists, kept'}")
    if not no_dvc:
        click.echo(record(root))


@data.command("import")
@WORKLOAD
@click.argument("source")
@click.option(
    "--root", type=click.Path(file_okay=False, path_type=Path), default=Path("data"), show_default=True
)
@click.option("--endpoint-url", help="S3 endpoint (MinIO, Ceph, ...); default AWS_ENDPOINT_URL or AWS.")
@click.option("--no-dvc", is_flag=True, help="Do not record the new version with `dvc add`.")
def data_import(workload: str, source: str, root: Path, endpoint_url: str | None, no_dvc: bool) -> None:
    """Copy a dataset (folder or s3://bucket/prefix) into ROOT/<workload> and record the new version."""
    from inspectflow.data.versioning import import_dataset, record
    from inspectflow.lineage import data_version

    result = import_dataset(workload, source, root, endpoint_url)
    click.echo(f"copied {result.files} files ({result.layout} layout) from {source} to {result.path}")
    if result.kept_previous is not None:
        click.echo(f"the previous folder was not in the DVC cache; kept as {result.kept_previous}")
    click.echo(f"data version: {data_version(result.path)}")
    if not no_dvc:
        click.echo(record(root))
        click.echo("next: git add data.dvc && git commit -m 'new data' && dvc push")


@click.command("lineage")
@click.argument("model_uri")
@WORKDIR
@JSON
def lineage(model_uri: str, workdir: Path, as_json: bool) -> None:
    """Print data version -> pipeline run -> MLflow run -> model version for MODEL_URI."""
    from inspectflow.lifecycle.render import to_json
    from inspectflow.lineage import describe, format_lineage

    open_client(workdir)
    found = describe(model_uri, workdir)
    click.echo(to_json(found) if as_json else format_lineage(found))


#: The commands this module adds to the root group.
COMMANDS: list[click.Command] = [data, lineage]
