"""``inspectflow serve``: the champion (or any model URI) as an inference service following the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from inspectflow.cli.common import open_client, registered_name
from inspectflow.cli.options import WORKDIR, WORKLOAD
from inspectflow.config import ServeConfig


def _default(setting: str) -> Any:
    """``ServeConfig``'s default for ``setting``: an option shows and passes the setting's own."""
    return ServeConfig.model_fields[setting].default


@click.command("serve")
@WORKLOAD
@click.option("--model", "model_uri", help="A fixed MLflow model URI to serve; default: follow the alias.")
@click.option("--alias", default=_default("alias"), show_default=True, help="The alias served and followed.")
@click.option("--host", default=_default("host"), show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=_default("port"), show_default=True)
@click.option(
    "--engine",
    type=click.Choice(["auto", "torch", "onnx", "int8"]),
    default=_default("engine"),
    show_default=True,
    help="auto: the version's int8 engine where it kept one, else its ONNX export, else PyTorch.",
)
@click.option(
    "--poll-seconds",
    type=float,
    default=_default("poll_seconds"),
    show_default=True,
    help="How often the alias is read.",
)
@click.option(
    "--max-images",
    type=click.IntRange(min=1),
    default=_default("max_images"),
    show_default=True,
    help="Per request.",
)
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    default=_default("max_batch"),
    show_default=True,
    help="Most images per forward pass from requests waiting together.",
)
@click.option("--max-request-mb", type=float, default=_default("max_request_mb"), show_default=True)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=_default("max_pixels"),
    show_default=True,
    help="Per image.",
)
@click.option(
    "--sample-to",
    default=_default("sample_to"),
    help="Folder or s3://bucket/prefix that a sample of served images goes to.",
)
@click.option(
    "--sample-rate", type=click.FloatRange(0.0, 1.0), default=_default("sample_rate"), show_default=True
)
@click.option(
    "--grace-seconds", type=click.IntRange(min=0), default=_default("grace_seconds"), show_default=True
)
@WORKDIR
def serve_command(
    workload: str,
    model_uri: str | None,
    alias: str,
    workdir: Path,
    **bounds: object,
) -> None:
    """Serve the model at an alias over the Open Inference Protocol (KServe's model server).

    The service follows the alias: when a gate, promotion or rollback moves it, the new version is loaded
    beside the old one and takes over; a version that fails to load leaves the old one serving. POST images
    to /v2/models/<name>/infer (base64 in JSON) or /v2/models/<name>/images (multipart files); probes at
    /v2/health/live and /v2/models/<name>/ready; metrics at /metrics. Stops on SIGTERM, finishing the
    requests in flight.
    """
    from inspectflow.errors import InspectflowError
    from inspectflow.serving.service import serve

    client = open_client(workdir)
    if model_uri and model_uri.startswith("models:/"):
        name = model_uri.removeprefix("models:/").split("/")[0].split("@")[0]
    else:
        name = registered_name(workload, client)
    config = ServeConfig(model=name, alias=alias, uri=model_uri or "", **bounds)
    try:
        serve(config)
    except InspectflowError:
        raise
    except Exception as exc:
        raise InspectflowError(
            f"{config.served_uri}: cannot be served: {' '.join(str(exc).split())}"
        ) from None


#: The commands this module adds to the root group.
COMMANDS: list[click.Command] = [serve_command]
