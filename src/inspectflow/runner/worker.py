"""A warm process that runs the local pipeline's steps, forked with their libraries already imported.

kfp's local runner starts a fresh interpreter for each step, and importing torch, MLflow and Great
Expectations there cost ~5 s a step: more than the steps' own work on a small set. ``run_local`` starts
one worker (:func:`serving`) that imports them once. Each step's subprocess is still kfp's (its log, its
outputs, its exit status), but it hands the call to the worker (:func:`call_step`), which forks a child
that has everything imported and runs the step there with the subprocess's stdout, stderr, working
directory and environment. Where no worker is set (on a cluster, or when it cannot be reached) the step
runs in its own process, as before.

This module imports only the standard library: it is what every step's subprocess imports first.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

#: The worker's socket, set for the step subprocesses by :func:`serving`.
WORKER_ENV = "INSPECTFLOW_STEP_WORKER"
#: What the worker imports before it serves: every step, and what the steps import when they run.
PRELOAD = (
    "inspectflow.steps.ingest",
    "inspectflow.steps.validate",
    "inspectflow.steps.train",
    "inspectflow.steps.evaluate",
    "inspectflow.steps.register",
    "inspectflow.steps.monitor",
    "inspectflow.models.backbones",
    "inspectflow.models.feature_svm",
    "inspectflow.validation",
    "inspectflow.tasks",
    "great_expectations",
    "mlflow",
    "mlflow.pytorch",
    "mlflow.pyfunc",
    "sklearn.metrics",
    "torch",
    "inspectflow.models.torchvision_compat",
    "inspectflow.models.onnx",
    "onnxscript",
    "torch.onnx._internal.exporter._core",  # the exporter's own imports: ~3 s at the first export
    "onnxruntime",
    "PIL.Image",
)
#: A socket path longer than this does not fit ``sockaddr_un`` (108 bytes on Linux).
_MAX_SOCKET_PATH = 100
_LENGTH = struct.Struct("!Q")
#: How long :func:`serving` waits for the worker's socket before the steps go without it.
_BIND_TIMEOUT_S = 10.0


def call_step(target: str, *args: Any) -> Any:
    """Runs ``target`` (``module:function``) with ``args``: in the worker when there is one, else here.

    Returns:
        What the function returned.

    Raises:
        SystemExit: The step failed in the worker, with its exit status (the step has printed why).
    """
    address = os.environ.get(WORKER_ENV)
    if address:
        try:
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            connection.connect(address)
        except OSError:
            connection.close()  # the worker is gone: run the step here
        else:
            with connection:
                return _call_in_worker(connection, target, args)
    return _resolve(target)(*args)


@contextlib.contextmanager
def serving(folder: Path, log: IO[str] | None = None) -> Iterator[dict[str, str]]:
    """Starts a worker in ``folder`` for the duration; yields the environment that points steps to it.

    The worker's own output (its imports' warnings) goes to ``log`` if given; each step's goes to the step.

    The worker is a child of this process in its process group, so a kill of the group (Ctrl-C, or a
    scheduler stopping the run) reaches it and the steps it runs.
    """
    address = str(folder / "worker.sock")
    if len(address) > _MAX_SOCKET_PATH:
        yield {}  # no worker: each step imports what it needs itself
        return
    process = subprocess.Popen(
        [sys.executable, "-m", __name__, address],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT if log else None,
    )
    try:
        # The socket exists before the imports start (a fraction of a second): steps that came sooner would
        # run on their own.
        deadline = time.monotonic() + _BIND_TIMEOUT_S
        while not os.path.exists(address) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        yield {WORKER_ENV: address} if os.path.exists(address) else {}
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _resolve(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    function: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return function


def _call_in_worker(connection: socket.socket, target: str, args: tuple[Any, ...]) -> Any:
    """Sends the call with this process's stdout, stderr, directory and environment; waits for its end."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    request = pickle.dumps((target, args, os.getcwd(), dict(os.environ)))
    socket.send_fds(connection, [_LENGTH.pack(len(request))], [sys.stdout.fileno(), sys.stderr.fileno()])
    connection.sendall(request)
    try:
        reply = _receive(connection)
    except OSError:
        reply = None
    if reply is None:
        print(f"the step worker stopped while running {target}", file=sys.stderr)
        raise SystemExit(1)
    status, value = pickle.loads(reply)
    if status == "exit":
        raise SystemExit(value)
    return value


def _receive(connection: socket.socket) -> bytes | None:
    """One length-prefixed message; None when the other side closed first."""
    header = _read_exactly(connection, _LENGTH.size)
    if header is None:
        return None
    return _read_exactly(connection, _LENGTH.unpack(header)[0])


def _read_exactly(connection: socket.socket, size: int) -> bytes | None:
    chunks, remaining = [], size
    while remaining:
        chunk = connection.recv(min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _send(connection: socket.socket, message: bytes) -> None:
    connection.sendall(_LENGTH.pack(len(message)) + message)


def _serve(address: str) -> None:
    """Imports :data:`PRELOAD`, then forks a child per call until terminated."""
    for stop in (signal.SIGTERM, signal.SIGINT):  # the run ended or was interrupted: leave quietly
        signal.signal(stop, lambda *_: os._exit(0))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(8)  # steps that connect while the imports run wait in the backlog
    for module in PRELOAD:
        # A module that fails here fails again in the step that needs it, with the step's own message.
        with contextlib.suppress(Exception):
            importlib.import_module(module)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # finished children are reaped by the kernel
    while True:
        connection, _ = listener.accept()
        if os.fork() == 0:
            try:
                listener.close()
                _run_child(connection)
            finally:
                os._exit(1)
        connection.close()


def _run_child(connection: socket.socket) -> None:
    """Runs one call with the caller's streams, directory and environment; never returns."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # steps run subprocesses (git, DVC) and wait for them
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        header, fds, _, _ = socket.recv_fds(connection, _LENGTH.size, 2)
        request = _read_exactly(connection, _LENGTH.unpack(header)[0])
        if request is None or len(fds) != 2:
            os._exit(1)
        for fd, target_fd in zip(fds, (1, 2), strict=True):
            os.dup2(fd, target_fd)
            os.close(fd)
        target, args, cwd, environment = pickle.loads(request)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environment)
        tempfile.tempdir = None  # follow the caller's TMPDIR
        threading.Thread(target=_stop_when_caller_leaves, args=(connection,), daemon=True).start()
        try:
            reply: tuple[str, Any] = ("ok", _resolve(target)(*args))
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
            reply = ("exit", code)
        except KeyboardInterrupt:  # the run was stopped; the step has marked its MLflow run
            code = 130
            reply = ("exit", code)
        except BaseException:
            traceback.print_exc()
            reply = ("exit", 1)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # done: the caller leaving now interrupts nothing
        _flush()  # the step's last lines reach the caller's log before the caller goes on
        _send(connection, pickle.dumps(reply))
    finally:
        _flush()
        os._exit(code)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _stop_when_caller_leaves(connection: socket.socket) -> None:
    """Interrupts the step when its subprocess dies (a stopped run), as Ctrl-C would."""
    with contextlib.suppress(OSError):
        while connection.recv(1):
            pass
    os.kill(os.getpid(), signal.SIGINT)


if __name__ == "__main__":
    _serve(sys.argv[1])
