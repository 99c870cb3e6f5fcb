"""The ``inspectflow`` command line: thin doors onto the library's functions."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from inspectflow.config import WORKLOAD_DEFAULTS
from inspectflow.errors import InspectflowError

HEADLINE_METRICS = ("test_accuracy", "test_macro_f1", "test_iou", "test_dice", "test_detection_tpr")
DEMO_SEED = 0


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """Kubeflow-style MLOps pipelines for industrial visual inspection."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


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


@cli.command("run")
@click.argument("workload", type=click.Choice(sorted(WORKLOAD_DEFAULTS)))
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    help="Data root; without it the demo set is synthesized into WORKDIR/data/<workload>-demo.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a setting, such as train.epochs=3 (repeatable).",
)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    default=Path("."),
    show_default=True,
    help="Holds the MLflow sqlite store (unless MLFLOW_TRACKING_URI is set) and kfp outputs.",
)
def run(workload: str, data_dir: Path | None, overrides: tuple[str, ...], workdir: Path) -> None:
    """Run the pipeline (ingest, validate, train, evaluate, register) locally with kfp."""
    from inspectflow.config import build_config
    from inspectflow.local import run_local
    from inspectflow.models.weights import check_weights

    config = build_config(workload, list(overrides))
    check_weights(config.train)  # fail in seconds, not after ingest and validation
    if data_dir is None:
        data_dir = _demo_data(workload, workdir)
    result = run_local(data_dir, config, workdir)
    summary = result.summary
    click.echo("")
    click.echo(f"{'MLflow run:':<20}{summary['mlflow_run_id']}  ({result.tracking_uri})")
    for name, value in summary["metrics"].items():
        if name in HEADLINE_METRICS:
            click.echo(f"{name + ':':<20}{value:.4f}")
    click.echo(f"{'model:':<20}{summary['model_name']} version {summary['version']} -> @{summary['alias']}")
    click.echo(f"{'gate:':<20}{summary['decision']}: {summary['reason']}")


def _demo_data(workload: str, workdir: Path) -> Path:
    """Synthesizes the workload's demo set once; later runs reuse it."""
    from inspectflow.synth.dagm import synthesize_dagm
    from inspectflow.synth.inserts import synthesize_inserts
    from inspectflow.synth.textile import synthesize_textile

    out = workdir / "data" / f"{workload}-demo"
    if not out.exists():
        if workload == "dagm":
            synthesize_dagm(out, classes=2, n=200, size=256, seed=DEMO_SEED)
        elif workload == "inserts":
            synthesize_inserts(out, n=300, seed=DEMO_SEED)
        else:
            synthesize_textile(out, n=600, seed=DEMO_SEED)
        click.echo(f"synthesized the {workload} demo set into {out}")
    return out


def main() -> None:
    """Entry point: runs the CLI, turning user-facing errors into a message and exit code 1."""
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except InspectflowError as exc:
        click.echo(f"inspectflow: error: {exc}", err=True)
        sys.exit(1)
