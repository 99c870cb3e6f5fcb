"""``inspectflow synth``: deterministic synthetic datasets in each workload's real on-disk format."""

from __future__ import annotations

from pathlib import Path

import click

from inspectflow.data.versioning import DEMO_SEED


@click.group()
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


#: The commands this module adds to the root group.
COMMANDS: list[click.Command] = [synth]
