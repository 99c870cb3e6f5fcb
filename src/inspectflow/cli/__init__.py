"""The ``inspectflow`` command line: thin doors onto the library's functions."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click

from inspectflow.config import WORKLOAD_DEFAULTS
from inspectflow.data.versioning import DEMO_SEED
from inspectflow.names import TEST_METRICS
from inspectflow.tasks import TASKS, task_for

if TYPE_CHECKING:
    from inspectflow.config import PipelineConfig
    from inspectflow.serving.registered import Engine
from inspectflow.errors import VERBOSE_ENV, InspectflowError

_Command = TypeVar("_Command", bound=Callable[..., Any])


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


@cli.group()
def synth() -> None:
    """Write deterministic synthetic datasets in each workload's real on-disk format."""


@synth.command("textile")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option(
    "--n", "count", type=click.IntRange(min=12), default=600, show_default=True, help="Images in all."
)
@click.option("--seed", type=int, default=DEMO_SEED, show_default=True)
def synth_textile(out_dir: Path, count: int, seed: int) -> None:
    """Textile patches in the Kaggle layout (train64/test64 .h5 + .csv)."""
    from inspectflow.synth.textile import synthesize_textile

    counts = synthesize_textile(out_dir, n=count, seed=seed)
    click.echo(f"wrote {sum(counts.values())} textile images to {out_dir} ({counts})")


@synth.command("dagm")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--classes", type=click.IntRange(1, 10), default=2, show_default=True, help="DAGM classes.")
@click.option(
    "--n",
    "count",
    type=click.IntRange(min=4),
    default=200,
    show_default=True,
    help="Images per class (train and test).",
)
@click.option("--size", type=int, default=512, show_default=True, help="Image side, a multiple of 16.")
@click.option("--seed", type=int, default=DEMO_SEED, show_default=True)
def synth_dagm(out_dir: Path, classes: int, count: int, size: int, seed: int) -> None:
    """Surface-defect images in the DAGM 2007 layout (ClassN/{Train,Test}, Label/, Labels.txt)."""
    from inspectflow.synth.dagm import synthesize_dagm

    try:
        counts = synthesize_dagm(out_dir, classes=classes, n=count, size=size, seed=seed)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(f"wrote {counts['train'] + counts['test']} DAGM images to {out_dir} ({counts})")


@synth.command("inserts")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option(
    "--n", "count", type=click.IntRange(min=4), default=300, show_default=True, help="Images in all."
)
@click.option("--seed", type=int, default=DEMO_SEED, show_default=True)
def synth_inserts(out_dir: Path, count: int, seed: int) -> None:
    """Cutting inserts on a tool holder, as class folders Intact/ and Damaged/."""
    from inspectflow.synth.inserts import synthesize_inserts

    counts = synthesize_inserts(out_dir, n=count, seed=seed)
    click.echo(f"wrote {sum(counts.values())} insert images to {out_dir} ({counts})")


# A built-in workload (with a demo set) or any line of the user's, named in lower case.
_WORKLOAD = click.argument("workload", metavar=f"WORKLOAD ({'|'.join(WORKLOAD_DEFAULTS)}|your own)")
_TASK = click.option(
    "--task",
    type=click.Choice(list(TASKS)),
    help="What a workload that is not built in learns (or task: in its params.yaml section).",
)
_WORKDIR = click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    default=Path("."),
    show_default=True,
    help="Holds the MLflow sqlite store (unless MLFLOW_TRACKING_URI is set) and kfp outputs.",
)


_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


_DATA_HELP = (
    "Data root: a folder or an s3://bucket/prefix URI; default WORKDIR/data/<workload>, where the demo set "
    "is synthesized if it is missing."
)


def _run_options(command: _Command) -> _Command:
    """The options ``run`` and ``retrain`` share."""
    options = [
        click.option("--data", "data", help=_DATA_HELP),
        _TASK,
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
        _WORKDIR,
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


@cli.command("run")
@_WORKLOAD
@_run_options
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
    config = _config(workload, params_file, overrides, task)
    container_image = _container_image(runner, image)
    if host is not None:
        if resume_run_id:
            raise click.UsageError("--resume continues a local run; on a cluster, retry the KFP run instead")
        if runner != "subprocess":
            raise click.UsageError("--runner chooses how local steps run; a cluster runs its own")
        _submit(config, data, host, namespace, experiment, no_wait, timeout)
        return
    source = _local_data(workload, data, workdir)
    _run_locally(config, source, workdir, metrics_file, plots_dir, container_image, resume_run_id or "")


@cli.command("retrain")
@_WORKLOAD
@_run_options
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
    from mlflow.exceptions import MlflowException

    from inspectflow.lineage import data_version
    from inspectflow.monitoring.watch import DRIFT_EXIT_CODE, monitor
    from inspectflow.names import CHAMPION, DATA_VERSION_TAG

    config = _config(workload, params_file, overrides, task)
    container_image = _container_image(runner, image)
    source = _local_data(workload, data, workdir)
    current = data_version(Path(source))
    name = config.register_.model_name
    try:
        champion = _client(workdir, create=True).get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    drift = False
    if drift_images is not None and champion is not None:
        check = monitor(config, drift_images, f"models:/{name}/{champion.version}")
        click.echo(check.line())
        if not check.comparison.drift:
            click.echo(f"{drift_images}: no drift from {name} version {champion.version}; nothing to retrain")
            return
        drift = True
    if champion is not None and champion.tags.get(DATA_VERSION_TAG) == current:
        if drift:
            click.echo(
                f"{source}: data version {current} is the one {name} version {champion.version} was trained "
                "on; add labelled images of the new conditions (inspectflow data import), then retrain",
                err=True,
            )
            raise SystemExit(DRIFT_EXIT_CODE)
        click.echo(
            f"{source}: data version {current} is the one {name} version {champion.version} (@champion) "
            "was trained on; nothing to retrain"
        )
        return
    trained_on = champion.tags.get(DATA_VERSION_TAG, "unknown") if champion else "no champion yet"
    click.echo(f"{source}: data version {current} (champion: {trained_on}); retraining")
    _run_locally(config, source, workdir, metrics_file, plots_dir, container_image)


def _config(
    workload: str, params_file: Path | None, overrides: tuple[str, ...], task: str | None
) -> PipelineConfig:
    from inspectflow.config import build_config, read_params
    from inspectflow.models.networks import check_weights

    params = read_params(params_file, workload) if params_file else None
    config = build_config(workload, list(overrides), params, task)
    check_weights(*config.train.network_weights())  # fail in seconds, not after ingest and validation
    return config


def _local_data(workload: str, data: str | None, workdir: Path) -> str:
    """The data to read; the demo set, synthesized once into WORKDIR/data/<workload>, by default."""
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


def _container_image(runner: str, image: str | None) -> str | None:
    """The image the steps run in: None for subprocesses."""
    from inspectflow.components import COMPONENT_IMAGE

    if runner == "subprocess":
        if image is not None:
            raise click.UsageError("--image is for --runner container")
        return None
    return image or COMPONENT_IMAGE


def _run_locally(
    config: PipelineConfig,
    source: str,
    workdir: Path,
    metrics_file: Path | None,
    plots_dir: Path | None,
    image: str | None,
    resume_run_id: str = "",
) -> None:
    from mlflow import MlflowClient

    from inspectflow.reports import write_metrics, write_plots
    from inspectflow.runner.local import run_local, run_log
    from inspectflow.steps.register import LOWER_IS_BETTER

    log_path = run_log(workdir, config.workload)
    try:
        with log_path.open("w", encoding="utf-8", buffering=1) as log, _console(log):
            result = run_local(source, config, workdir, resume_run_id, log, image)
    except InspectflowError:
        click.echo(f"{'log:':<24}{log_path}", err=True)
        raise
    summary = result.summary
    click.echo("")
    click.echo(f"{'MLflow run:':<24}{summary['mlflow_run_id']}  ({result.tracking_uri})")
    headline = [f"{TEST_METRICS}{name}" for name in task_for(config).headline_metrics]
    for name, value in summary["metrics"].items():
        if name in headline:
            click.echo(f"{name + ':':<24}{value:.4f}")
    metric = config.register_.primary_metric
    baseline = summary["baseline"]
    floor = f"test {metric} {baseline['metrics'][f'test/{metric}']:.4f}"
    if metric in LOWER_IS_BETTER:  # the trivial model passes every part: its escape rate is the floor's point
        floor += f", escape_rate {baseline['metrics']['test/escape_rate']:.4f}"
    click.echo(f"{'baseline:':<24}{floor} ({baseline['description']})")
    click.echo(f"{'model:':<24}{summary['model_name']} version {summary['version']} -> @{summary['alias']}")
    click.echo(f"{'gate:':<24}{summary['decision']}: {summary['reason']}")
    click.echo(f"{'log:':<24}{log_path}")
    if metrics_file is not None:
        run_metrics = MlflowClient().get_run(summary["mlflow_run_id"]).data.metrics
        write_metrics(summary, run_metrics, metrics_file)
    if plots_dir is not None:
        write_plots(summary["mlflow_run_id"], plots_dir)


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


def _submit(
    config: PipelineConfig,
    data: str | None,
    host: str,
    namespace: str | None,
    experiment: str | None,
    no_wait: bool,
    timeout: int,
) -> None:
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


@cli.command("monitor")
@_WORKLOAD
@click.argument("source")
@click.option("--model", "model_uri", help="MLflow model URI; default models:/<name>@champion.")
@click.option("--params", "params_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Such as monitor.alpha=0.001.")
@_WORKDIR
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

    client = _client(workdir)
    uri = model_uri or f"models:/{_model_name(workload, client)}@{CHAMPION}"
    _answering_version(uri)  # no such version: one line
    params = read_params(params_file, workload) if params_file else None
    config = build_config(workload, list(overrides), params, registered_spec(uri).task)
    check = monitor(config, source, uri)
    click.echo(check.line())
    if check.comparison.drift:
        raise SystemExit(DRIFT_EXIT_CODE)


@cli.command("schedule")
@_WORKLOAD
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
@_TASK
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

    config = _config(workload, params_file, overrides, task)
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


@cli.command("compile")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
def compile_command(out_dir: Path) -> None:
    """Write the compiled pipeline YAML of every workload (default settings) for Kubeflow Pipelines."""
    from inspectflow.pipelines.compile import compile_all

    for path in compile_all(out_dir):
        click.echo(f"wrote {path}")


@cli.group()
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
@_WORKLOAD
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


@cli.command("lineage")
@click.argument("model_uri")
@_WORKDIR
@_JSON
def lineage(model_uri: str, workdir: Path, as_json: bool) -> None:
    """Print data version -> pipeline run -> MLflow run -> model version for MODEL_URI."""
    from inspectflow.lifecycle.render import to_json
    from inspectflow.lineage import describe, format_lineage

    _client(workdir)
    found = describe(model_uri, workdir)
    click.echo(to_json(found) if as_json else format_lineage(found))


@cli.group()
def models() -> None:
    """Registered model versions: list, promote, roll back, audit history."""


def _model_name(workload: str, client: Any) -> str:
    """The registered model of a workload: a built-in one's default, else the one of its task that exists."""
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


def _client(workdir: Path, create: bool = False) -> Any:
    """A client of the store in force; one that is missing is created only when ``create`` (runs do)."""
    from mlflow import MlflowClient

    from inspectflow.tracking import configure_tracking

    configure_tracking(workdir, create)
    return MlflowClient()


@models.command("list")
@_WORKLOAD
@_WORKDIR
@_JSON
def models_list(workload: str, workdir: Path, as_json: bool) -> None:
    """Versions with their aliases, the test score the gate judged and its decision, newest first."""
    from inspectflow.lifecycle.aliases import list_versions
    from inspectflow.lifecycle.render import format_versions, to_json

    client = _client(workdir)
    name = _model_name(workload, client)
    rows = list_versions(client, name)
    click.echo(to_json({"model": name, "versions": rows}) if as_json else format_versions(name, rows))


@models.command("promote")
@_WORKLOAD
@click.argument("version")
@click.option("--reason", required=True, help="Why, for the audit trail.")
@_WORKDIR
def models_promote(workload: str, version: str, reason: str, workdir: Path) -> None:
    """Make VERSION the champion by hand (the gate's verdict on it is shown and recorded)."""
    from inspectflow.lifecycle.aliases import promote
    from inspectflow.lifecycle.render import format_promotion

    client = _client(workdir)
    click.echo(format_promotion(promote(client, _model_name(workload, client), version, reason)))


@models.command("rollback")
@_WORKLOAD
@click.option("--reason", default="", help="Why, for the audit trail.")
@_WORKDIR
def models_rollback(workload: str, reason: str, workdir: Path) -> None:
    """Move the champion back to the previous champion."""
    from inspectflow.lifecycle.aliases import rollback
    from inspectflow.lifecycle.render import format_rollback

    client = _client(workdir)
    click.echo(format_rollback(rollback(client, _model_name(workload, client), reason)))


@models.command("history")
@_WORKLOAD
@_WORKDIR
@_JSON
def models_history(workload: str, workdir: Path, as_json: bool) -> None:
    """The audit trail of alias moves: who, when, from, to, why; and moves made outside inspectflow."""
    from inspectflow.lifecycle.audit import audit_entries, moves_outside_the_trail, registered_model
    from inspectflow.lifecycle.render import format_history, to_json

    client = _client(workdir)
    name = _model_name(workload, client)
    model = registered_model(client, name)
    entries = audit_entries(model)
    outside = moves_outside_the_trail(model, entries)
    if as_json:
        click.echo(to_json({"model": name, "moves": entries, "outside_inspectflow": outside}))
    else:
        click.echo(format_history(name, entries, outside))


@cli.command("compare")
@_WORKLOAD
@click.option("--last", "last_n", type=click.IntRange(min=1), default=5, show_default=True)
@_WORKDIR
@_JSON
def compare(workload: str, last_n: int, workdir: Path, as_json: bool) -> None:
    """Recent runs side by side: differing parameters, metrics, data versions; champion marked *."""
    from inspectflow.lifecycle.comparison import compare_runs
    from inspectflow.lifecycle.render import format_table, to_json

    experiment = workload  # every workload's experiment is named after it unless configured otherwise
    comparison = compare_runs(_client(workdir), experiment, last_n)
    click.echo(to_json(comparison) if as_json else format_table(comparison))


@cli.command("runs")
@click.option("--clean", is_flag=True, help="Mark abandoned runs KILLED.")
@click.option("--last", "last_n", type=click.IntRange(min=1), default=10, show_default=True)
@_WORKDIR
def runs(clean: bool, last_n: int, workdir: Path) -> None:
    """Unfinished and failed runs: which are still going, which were abandoned, and why runs failed.

    A run whose ``inspectflow run`` process on this machine is gone is marked KILLED by any command that
    opens the store; one from elsewhere (a cluster) is abandoned when its heartbeat is an hour old, and
    ``--clean`` marks it KILLED.
    """
    from inspectflow.names import FAILURE_TAG
    from inspectflow.tracking import abandoned_runs, mark_killed

    client = _client(workdir)
    abandoned = {run.run_id: run for run in abandoned_runs(client)}
    if clean:
        mark_killed(client, list(abandoned.values()))
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    found = (
        client.search_runs(
            list(experiments),
            "attributes.status != 'FINISHED'",
            max_results=last_n,
            order_by=["start_time DESC"],
        )
        if experiments
        else []
    )
    if not found:
        click.echo("no unfinished or failed runs")
    for run in found:
        status = run.info.status
        if run.info.run_id in abandoned:
            why = abandoned[run.info.run_id].why
            status, detail = ("KILLED", why) if clean else ("ABANDONED", f"{why}; --clean marks it KILLED")
        else:
            detail = run.data.tags.get(FAILURE_TAG, "still going" if status == "RUNNING" else "")
        name = f"{experiments[run.info.experiment_id]}/{run.info.run_name}"
        click.echo(f"{run.info.run_id}  {status:<9}  {name}  {detail}")


@cli.command("predict")
@_WORKLOAD
@click.argument(
    "paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--model", "model_uri", help="MLflow model URI; default models:/<name>@champion.")
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="JSON lines file; default stdout."
)
@click.option(
    "--masks", "mask_dir", type=click.Path(file_okay=False, path_type=Path), help="Mask PNGs (dagm)."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--fail-fast", is_flag=True, help="Stop at the first image that cannot be read.")
@click.option(
    "--engine",
    type=click.Choice(["torch", "onnx"]),
    default="torch",
    show_default=True,
    help="Run the model in PyTorch, or its ONNX export in ONNX Runtime.",
)
@_WORKDIR
def predict(
    workload: str,
    paths: tuple[Path, ...],
    model_uri: str | None,
    output: Path | None,
    mask_dir: Path | None,
    batch_size: int,
    fail_fast: bool,
    engine: Engine,
    workdir: Path,
) -> None:
    """Predict images with the champion: a JSON line per image (dagm: also a mask PNG, the defect area).

    An image that cannot be read gets a line with its ``error`` and the rest are predicted; the command
    then exits non-zero naming it (``--fail-fast``: at once, writing no output file).
    """
    from inspectflow.errors import DataError
    from inspectflow.names import CHAMPION
    from inspectflow.serving.predict import predict_files
    from inspectflow.serving.registered import registered_spec
    from inspectflow.tasks import get_task

    client = _client(workdir)
    uri = model_uri or f"models:/{_model_name(workload, client)}@{CHAMPION}"
    answering = _answering_version(uri)
    if answering:
        click.echo(f"{uri}: {answering}", err=True)
    task_name = registered_spec(uri).task
    if get_task(task_name).writes_files and mask_dir is None:
        mask_dir = (output.parent if output else Path(".")) / "masks"
    errors: list[str] = []

    def noting_errors(records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for record in records:
            if "error" in record:
                errors.append(record["error"])
            yield {**record, "model": answering or uri}

    records = noting_errors(
        predict_files(uri, list(paths), task_name, batch_size, mask_dir, fail_fast, engine)
    )
    if output is None:
        for record in records:
            click.echo(json.dumps(record))
    else:
        partial = output.with_name(output.name + ".partial")  # never a half-written file under the name
        try:
            with partial.open("w") as handle:
                for record in records:
                    handle.write(json.dumps(record) + "\n")
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(output)
        click.echo(f"wrote {len(paths)} predictions to {output}", err=True)
    if errors:
        raise DataError(f"{len(errors)} of {len(paths)} images could not be predicted; first: {errors[0]}")


def _answering_version(uri: str) -> str | None:
    """``<name> version <n>`` for a registry URI (``models:/<name>@<alias>``, ``models:/<name>/<n>``)."""
    from mlflow.exceptions import MlflowException

    from inspectflow.lineage import model_version

    if not uri.startswith("models:/"):
        return None  # a run's or a folder's model: the URI itself names it
    try:
        version = model_version(uri)
    except MlflowException as exc:
        raise InspectflowError(f"{uri}: {exc.message}") from None
    return f"{version.name} version {version.version}"


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


def _verbosity() -> int:
    """The ``-v`` count of this invocation."""
    return int(click.get_current_context().find_root().params.get("verbosity", 0))
