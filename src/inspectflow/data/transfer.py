"""Copying datasets in: from a local folder or an S3 prefix (any S3 endpoint)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from inspectflow.errors import DataError

log = logging.getLogger(__name__)

S3_SCHEME = "s3://"


def is_s3_uri(source: str) -> bool:
    """Tells whether ``source`` names an S3 prefix (``s3://bucket/prefix``)."""
    return source.startswith(S3_SCHEME)


def fetch(source: str, dest: Path, endpoint_url: str | None = None) -> int:
    """Copies a dataset folder or S3 prefix into ``dest`` (which must not exist), keeping relative paths.

    S3 credentials come from boto3's usual chain (environment, profile, instance role); the endpoint from
    ``endpoint_url``, else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, else AWS.

    Returns:
        The number of files copied.

    Raises:
        DataError: The source does not exist, is empty, or cannot be read.
    """
    if is_s3_uri(source):
        return _download_prefix(source, dest, endpoint_url)
    root = Path(source)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    shutil.copytree(root, dest)
    count = sum(1 for p in dest.rglob("*") if p.is_file())
    if not count:
        raise DataError(f"{root}: no files")
    return count


@contextmanager
def local_copy(source: str) -> Iterator[Path]:
    """Yields ``source`` as a local folder: itself, or an S3 prefix downloaded into a temporary one.

    Raises:
        DataError: The folder does not exist, or the S3 prefix cannot be read or is empty.
    """
    if not is_s3_uri(source):
        if not Path(source).is_dir():
            raise DataError(f"{source}: no such data folder")
        yield Path(source)
        return
    with tempfile.TemporaryDirectory(prefix="inspectflow-source-") as scratch:
        local = Path(scratch) / "data"
        log.info("downloaded %d files from %s", fetch(source, local), source)
        yield local


def _download_prefix(uri: str, dest: Path, endpoint_url: str | None) -> int:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, prefix = uri.removeprefix(S3_SCHEME).partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
    client = boto3.client("s3", endpoint_url=endpoint_url)
    count = 0
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                relative = key[len(prefix) :]
                if not relative or key.endswith("/"):
                    continue  # the prefix itself, or a folder marker
                target = dest / relative
                if dest.resolve() not in target.resolve().parents:
                    raise DataError(f"{uri}: object key {key!r} escapes the destination folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, key, str(target))
                count += 1
    except (BotoCoreError, ClientError) as exc:
        raise DataError(f"{uri}: cannot read from S3: {exc}") from None
    if not count:
        raise DataError(f"{uri}: no objects under this prefix")
    return count


def put_file(destination: str, relative: str, content: bytes) -> None:
    """Writes ``content`` as ``relative`` under a folder or an S3 prefix (the endpoint as :func:`fetch`'s).

    A file is written under a temporary name and renamed: a reader listing the folder never sees half of it.
    """
    if is_s3_uri(destination):
        import boto3

        bucket, _, prefix = destination.removeprefix(S3_SCHEME).partition("/")
        key = f"{prefix.strip('/')}/{relative}" if prefix.strip("/") else relative
        boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=content)
        return
    target = Path(destination) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(content)
    partial.replace(target)
