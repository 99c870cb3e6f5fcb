"""``inspectflow schedule`` and ``compile``: the pipelines on Kubeflow Pipelines."""

from __future__ import annotations

from pathlib import Path

import click

from inspectflow.cli.common import pipeline_config
from inspectflow.cli.options import TASK, WORKLOAD


@click.command("schedule")
@WORKLOAD
@click.option("--cron", required=True, help="When: five cron fields, or KFP's six (seconds first).")
@click.option("--host", required=True, help="The Kubeflow Pipelines API URL.")
@click.option("--data", required=True, help="Data URI the cluster reads, such as s3://bucket/textile.")
@click.option(
    "--on-drift",
    "drift_images",
    metavar="IMAGES",
    help="Retrain only when these new images (s3://bucket/prefix) drift from the champion's training "
    "images: schedules the inspectflow-<workload>-on-drift pipeline (monitor, then the steps if drift).",
)
@TASK
@click.option("--params", "params_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--namespace", help="KFP namespace (multi-user deployments).")
@click.option("--experiment", help="KFP experiment; default: the workload's MLflow experiment name.")
def schedule(
    workload: str,
    cron: str,
    host: str,
    data: str,
    drift_images: str | None,
    task: str | None,
    params_file: Path | None,
    overrides: tuple[str, ...],
    namespace: str | None,
    experiment: str | None,
) -> None:
    """Create a Kubeflow recurring run of the compiled pipeline."""
    import tempfile

    from inspectflow.pipelines.compile import compile_pipeline
    from inspectflow.runner.remote import kfp_cron, schedule_run

    config = pipeline_config(workload, params_file, overrides, task)
    expression = kfp_cron(cron)
    on_drift = drift_images is not None
    arguments = {"source": data, "config": config.to_json()}
    if drift_images is not None:
        arguments["images"] = drift_images
    with tempfile.TemporaryDirectory() as scratch:
        package = compile_pipeline(config, Path(scratch) / "pipeline.yaml", on_drift)
        job_id = schedule_run(
            host,
            package,
            arguments,
            job_name=f"inspectflow-{workload}-retrain{'-on-drift' if on_drift else ''}",
            experiment=experiment or config.tracking.experiment,
            cron=expression,
            namespace=namespace,
        )
    pipeline = f"inspectflow-{workload}{'-on-drift' if on_drift else ''}"
    click.echo(f"recurring run {job_id}: {pipeline} at '{expression}' (KFP cron, seconds first)")


@click.command("compile")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
def compile_command(out_dir: Path) -> None:
    """Write the compiled pipeline YAML of every workload (default settings) for Kubeflow Pipelines."""
    from inspectflow.pipelines.compile import compile_all

    for path in compile_all(out_dir):
        click.echo(f"wrote {path}")


#: The commands this module adds to the root group.
COMMANDS: list[click.Command] = [schedule, compile_command]
