"""``inspectflow run`` and ``retrain``: the pipeline run locally (step lines, summary) or on a cluster."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from inspectflow.cli.common import container_image, local_data, open_client, pipeline_config
from inspectflow.cli.options import WORKLOAD, run_options
from inspectflow.errors import InspectflowError
from inspectflow.names import DATA_DECODED_BYTES_TAG, DATA_WORKING_SIZE_TAG, TEST_METRICS
from inspectflow.tasks import task_for

if TYPE_CHECKING:
    from inspectflow.config import PipelineConfig
    from inspectflow.runner.local import PipelineResult


@click.command("run")
@WORKLOAD
@run_options
@click.option("--host", help="Submit to the Kubeflow Pipelines API at this URL instead of running locally.")
@click.option("--namespace", help="KFP namespace (multi-user deployments).")
@click.option("--experiment", help="KFP experiment; default: the workload's MLflow experiment name.")
@click.option("--no-wait", is_flag=True, help="With --host: submit and return without following the run.")
@click.option(
    "--timeout", type=int, default=24 * 3600, show_default=True, help="With --host: seconds to follow."
)
@click.option(
    "--resume",
    "resume_run_id",
    metavar="RUN_ID",
    help="Continue a killed or failed run (same settings): same MLflow run, training from its last epoch.",
)
def run(
    workload: str,
    data: str | None,
    task: str | None,
    params_file: Path | None,
    overrides: tuple[str, ...],
    workdir: Path,
    metrics_file: Path | None,
    plots_dir: Path | None,
    runner: str,
    image: str | None,
    host: str | None,
    namespace: str | None,
    experiment: str | None,
    no_wait: bool,
    timeout: int,
    resume_run_id: str | None,
) -> None:
    """Run the pipeline (ingest, validate, train, evaluate, register), locally with kfp or on a cluster."""
    config = pipeline_config(workload, params_file, overrides, task)
    step_image = container_image(runner, image)
    if host is not None:
        if resume_run_id:
            raise click.UsageError("--resume continues a local run; on a cluster, retry the KFP run instead")
        if runner != "subprocess":
            raise click.UsageError("--runner chooses how local steps run; a cluster runs its own")
        _submit(config, data, host, namespace, experiment, no_wait, timeout)
        return
    source = local_data(workload, data, workdir)
    _run_locally(config, source, workdir, metrics_file, plots_dir, step_image, resume_run_id or "")


@click.command("retrain")
@WORKLOAD
@run_options
@click.option(
    "--on-drift",
    "drift_images",
    metavar="IMAGES",
    help="Retrain only when these new images (a folder or s3://bucket/prefix) drift from the champion's "
    "training images (see `inspectflow monitor`), and the data is a new version.",
)
def retrain(
    workload: str,
    data: str | None,
    task: str | None,
    params_file: Path | None,
    overrides: tuple[str, ...],
    workdir: Path,
    metrics_file: Path | None,
    plots_dir: Path | None,
    runner: str,
    image: str | None,
    drift_images: str | None,
) -> None:
    """Run the pipeline only if the data version differs from the one the champion was trained on.

    With --on-drift, only if the new images also drift from the champion's training images; drift on data
    the champion was trained on exits 3: the data needs labelled images of the new conditions first.
    """
    from inspectflow.lifecycle.retrain import Verdict, champion_of, decide_retrain
    from inspectflow.lineage import data_version
    from inspectflow.monitoring.watch import DRIFT_EXIT_CODE, monitor

    config = pipeline_config(workload, params_file, overrides, task)
    step_image = container_image(runner, image)
    source = local_data(workload, data, workdir)
    current = data_version(Path(source))
    name = config.register_.model_name
    champion = champion_of(open_client(workdir, create=True), name)
    drifted: bool | None = None
    if drift_images is not None and champion is not None:
        check = monitor(config, drift_images, f"models:/{name}/{champion.version}")
        click.echo(check.line())
        drifted = bool(check.comparison.drift)
    decision = decide_retrain(name, source, current, champion, drift_images, drifted)
    if decision.verdict is Verdict.NEEDS_NEW_DATA:
        click.echo(decision.reason, err=True)
        raise SystemExit(DRIFT_EXIT_CODE)
    click.echo(decision.reason)
    if decision.retrain:
        _run_locally(config, source, workdir, metrics_file, plots_dir, step_image)


def _run_locally(
    config: PipelineConfig,
    source: str,
    workdir: Path,
    metrics_file: Path | None,
    plots_dir: Path | None,
    image: str | None,
    resume_run_id: str = "",
) -> None:
    """Runs the pipeline here, then prints its summary and writes the DVC metrics and plots asked for."""
    from mlflow import MlflowClient

    from inspectflow.reports import write_metrics, write_plots
    from inspectflow.runner.local import run_local, run_log

    log_path = run_log(workdir, config.workload)
    try:
        with log_path.open("w", encoding="utf-8", buffering=1) as log, _console(log):
            result = run_local(source, config, workdir, resume_run_id, log, image)
    except InspectflowError:
        click.echo(f"{'log:':<24}{log_path}", err=True)
        raise
    summary = result.summary
    run = MlflowClient().get_run(summary["mlflow_run_id"])
    _print_summary(config, summary, result.tracking_uri, log_path, _outputs_line(result, run.data.tags))
    if metrics_file is not None:
        write_metrics(summary, run.data.metrics, metrics_file)
    if plots_dir is not None:
        write_plots(summary["mlflow_run_id"], plots_dir)


def _outputs_line(result: PipelineResult, tags: dict[str, str]) -> str | None:
    """What the run's kfp outputs weigh, beside the images and masks decoded at the working size."""
    decoded = int(tags.get(DATA_DECODED_BYTES_TAG, 0))
    if not (result.outputs_bytes and decoded):
        return None
    return (
        f"{result.outputs_bytes / 2**20:.3g} MB of kfp outputs for {decoded / 2**20:.3g} MB of images and "
        f"masks decoded at {tags.get(DATA_WORKING_SIZE_TAG, '')} ({result.outputs_bytes / decoded:.2f}x)"
    )


def _print_summary(
    config: PipelineConfig, summary: dict[str, Any], tracking_uri: str, log_path: Path, outputs: str | None
) -> None:
    """The lines after a local run: its MLflow run, headline metrics, the baseline, the model, the gate."""
    from inspectflow.steps.register import LOWER_IS_BETTER

    click.echo("")
    click.echo(f"{'MLflow run:':<24}{summary['mlflow_run_id']}  ({tracking_uri})")
    headline = [f"{TEST_METRICS}{name}" for name in task_for(config).headline_metrics]
    intervals = summary.get("intervals", {})
    for name in headline:  # in the task's order: a segmenter's escape rate beside its IoU
        if (value := summary["metrics"].get(name)) is not None:
            low_high = intervals.get(name.removeprefix(TEST_METRICS))
            beside = "" if low_high is None else f"  (95% interval {low_high[0]:.4f} to {low_high[1]:.4f})"
            click.echo(f"{name + ':':<24}{value:.4f}{beside}")
    metric = config.register_.primary_metric
    baseline = summary["baseline"]
    floor = f"test {metric} {baseline['metrics'][f'test/{metric}']:.4f}"
    if metric in LOWER_IS_BETTER:  # the trivial model passes every part: its escape rate is the floor's point
        floor += f", escape_rate {baseline['metrics']['test/escape_rate']:.4f}"
    click.echo(f"{'baseline:':<24}{floor} ({baseline['description']})")
    click.echo(f"{'model:':<24}{summary['model_name']} version {summary['version']} -> @{summary['alias']}")
    click.echo(f"{'gate:':<24}{summary['decision']}: {summary['reason']}")
    if outputs:
        click.echo(f"{'outputs:':<24}{outputs}")
    click.echo(f"{'log:':<24}{log_path}")


@contextmanager
def _console(log: TextIO) -> Iterator[None]:
    """Shows the run as step lines and a progress bar; the rest goes to ``log`` (-v: the terminal too)."""
    from inspectflow.console import CONSOLE_ENV, RunConsole

    out, err = sys.stdout, sys.stderr
    console = RunConsole(log, out, err, _verbosity())
    os.environ[CONSOLE_ENV] = "1"
    sys.stdout = sys.stderr = console
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
        os.environ.pop(CONSOLE_ENV, None)
        console.write("\n")  # a last line without its newline
        console.close_bar()


def _verbosity() -> int:
    """The ``-v`` count of this invocation."""
    return int(click.get_current_context().find_root().params.get("verbosity", 0))


def _submit(
    config: PipelineConfig,
    data: str | None,
    host: str,
    namespace: str | None,
    experiment: str | None,
    no_wait: bool,
    timeout: int,
) -> None:
    """Submits the compiled pipeline to the KFP API at ``host`` and, unless ``no_wait``, follows the run."""
    import tempfile
    from datetime import UTC, datetime

    from inspectflow.pipelines.compile import compile_pipeline
    from inspectflow.runner.remote import follow_run, run_url, submit_run

    if data is None:
        raise click.UsageError("--host needs --data: a URI the cluster can read, such as s3://bucket/textile")
    with tempfile.TemporaryDirectory() as scratch:
        package = compile_pipeline(config, Path(scratch) / "pipeline.yaml")
        run_name = f"inspectflow-{config.workload}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
        run_id = submit_run(
            host,
            package,
            {"source": data, "config": config.to_json()},
            run_name=run_name,
            experiment=experiment or config.tracking.experiment,
            namespace=namespace,
        )
    click.echo(f"{'submitted:':<20}{run_name} ({run_id})  {run_url(host, run_id)}")
    if no_wait:
        return
    state = follow_run(host, run_id, timeout_s=timeout, on_state=lambda s: click.echo(f"{'state:':<20}{s}"))
    click.echo(f"{'finished:':<20}{state}")


#: The commands this module adds to the root group.
COMMANDS: list[click.Command] = [run, retrain]
