"""One writer at a time per registered model: the lock the gate, promote and rollback hold.

The gate reads the champion, scores it and moves the alias; two runs doing that at once would both compare
against the old champion and the later one would win, better or not. The lock is a registered model of its
own (``<name>.lock``): the registry's unique names make creating it atomic on every store MLflow has
(sqlite, PostgreSQL, a tracking server in front of either), where a file lock would not span machines.
A holder that died leaves it behind; one older than the stale limit is taken over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from inspectflow.errors import InspectflowError
from inspectflow.lifecycle.audit import error_code

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
#: A lock held longer than this is taken to belong to a process that died (scoring a champion on a large
#: test split takes minutes, not an hour).
STALE_AFTER_S = 3600.0


def lock_name(name: str) -> str:
    """The registered model that serves as ``name``'s lock."""
    return f"{name}{LOCK_SUFFIX}"


@contextmanager
def registry_lock(
    client: MlflowClient, name: str, timeout_s: float = 1800.0, poll_s: float = 1.0
) -> Iterator[None]:
    """Holds registered model ``name``'s lock for the block.

    Args:
        client: MLflow client of the registry.
        name: The registered model whose aliases the block moves.
        timeout_s: How long to wait for another holder before giving up.
        poll_s: Seconds between attempts.

    Raises:
        InspectflowError: The lock was not free within ``timeout_s``; the message names the holder.
    """
    from mlflow.exceptions import MlflowException

    lock = lock_name(name)
    holder = f"{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.create_registered_model(lock, description=f"inspectflow lock held by {holder}")
            break
        except MlflowException as error:
            if error_code(error) != "RESOURCE_ALREADY_EXISTS":
                raise
        _take_over_if_stale(client, lock)
        if time.monotonic() > deadline:
            current = _holder(client, lock)
            raise InspectflowError(
                f"registered model {name!r} is locked by {current} for more than {timeout_s:.0f} s; if that "
                f"process is gone, delete the registered model {lock!r}"
            )
        time.sleep(poll_s)
    try:
        yield
    finally:
        client.delete_registered_model(lock)


def _holder(client: MlflowClient, lock: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_registered_model(lock).description).removeprefix("inspectflow lock held by ")
    except MlflowException:
        return "another process"


def _take_over_if_stale(client: MlflowClient, lock: str) -> None:
    """Deletes a lock older than :data:`STALE_AFTER_S`, left by a holder that died."""
    from mlflow.exceptions import MlflowException

    try:
        created_ms = client.get_registered_model(lock).creation_timestamp
    except MlflowException:
        return  # released meanwhile
    age_s = time.time() - created_ms / 1000
    if age_s > STALE_AFTER_S:
        log.warning("taking over %s, held for %.0f s by a process that is gone", lock, age_s)
        with contextlib.suppress(MlflowException):  # another waiter took it over first
            client.delete_registered_model(lock)
