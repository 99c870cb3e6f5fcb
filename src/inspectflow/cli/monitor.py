"""``inspectflow monitor``: check new images for drift from the champion's training images."""

from __future__ import annotations

from pathlib import Path

import click

from inspectflow.cli.common import answering_version, open_client, registered_name
from inspectflow.cli.options import WORKDIR, WORKLOAD


@click.command("monitor")
@WORKLOAD
@click.argument("source")
@click.option("--model", "model_uri", help="MLflow model URI; default models:/<name>@champion.")
@click.option("--params", "params_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Such as monitor.alpha=0.001.")
@WORKDIR
def monitor_command(
    workload: str,
    source: str,
    model_uri: str | None,
    params_file: Path | None,
    overrides: tuple[str, ...],
    workdir: Path,
) -> None:
    """Check new images (a folder or s3://bucket/prefix) for drift from the champion's training images.

    Prints one verdict line and exits 0 (no drift) or 3 (drift). Each check is a run of the workload's
    monitoring experiment in MLflow (<experiment>-monitoring): the verdict, every test's statistic and
    p-value, the prediction mix, and an HTML report.
    """
    from inspectflow.config import build_config, read_params
    from inspectflow.monitoring.watch import DRIFT_EXIT_CODE, monitor
    from inspectflow.names import CHAMPION
    from inspectflow.serving.registered import registered_spec

    client = open_client(workdir)
    uri = model_uri or f"models:/{registered_name(workload, client)}@{CHAMPION}"
    answering_version(uri)  # no such version: one line
    params = read_params(params_file, workload) if params_file else None
    config = build_config(workload, list(overrides), params, registered_spec(uri).task)
    check = monitor(config, source, uri)
    click.echo(check.line())
    if check.comparison.drift:
        raise SystemExit(DRIFT_EXIT_CODE)


#: The commands this module adds to the root group.
COMMANDS: list[click.Command] = [monitor_command]
