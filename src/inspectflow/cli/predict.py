"""``inspectflow predict``: a JSON line per image from the champion (or any model URI)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from inspectflow.cli.common import answering_version, open_client, registered_name
from inspectflow.cli.options import WORKDIR, WORKLOAD

if TYPE_CHECKING:
    from inspectflow.serving.registered import Engine


@click.command("predict")
@WORKLOAD
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
    type=click.Choice(["torch", "onnx", "int8"]),
    default="torch",
    show_default=True,
    help="Run the model in PyTorch, its ONNX export in ONNX Runtime, or the int8 engine it kept.",
)
@WORKDIR
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

    client = open_client(workdir)
    uri = model_uri or f"models:/{registered_name(workload, client)}@{CHAMPION}"
    answering = answering_version(uri)
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

    records = noting_errors(predict_files(uri, list(paths), batch_size, mask_dir, fail_fast, engine))
    if output is None:
        for record in records:
            click.echo(json.dumps(record))
    else:
        _write_lines(records, output)
        click.echo(f"wrote {len(paths)} predictions to {output}", err=True)
    if errors:
        raise DataError(f"{len(errors)} of {len(paths)} images could not be predicted; first: {errors[0]}")


def _write_lines(records: Iterable[dict[str, Any]], output: Path) -> None:
    """Writes the records as JSON lines to ``output``: all of them, or (on any error) no file at all."""
    partial = output.with_name(output.name + ".partial")  # never a half-written file under the name
    try:
        with partial.open("w") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(output)


#: The commands this module adds to the root group.
COMMANDS: list[click.Command] = [predict]
