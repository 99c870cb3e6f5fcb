"""Real servers on loopback for the integration tests: PostgreSQL, a moto S3 endpoint, an MLflow server.

Each server starts once per session on a free port and is always stopped at the end, whatever happens:
the PostgreSQL and MLflow servers run in their own process group, which is signalled as a whole. A server
that does not come up fails the test with the tail of its log.

PostgreSQL refuses to run as root: when the tests run as root, ``initdb`` and ``postgres`` run as
``nobody`` (or a dedicated system user, created with ``useradd`` when there is no ``nobody``), in a data
directory under the system temp folder that this user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

BUCKET = "inspectflow"
#: Dummy credentials: moto accepts any; set for every child process so nothing looks for real ones.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: A dead tracking server must fail a run in seconds: MLflow's defaults (7 retries with exponential
#: backoff, 120 s per request) take minutes.
MLFLOW_CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
}
PG_USER = "inspectflow"
PG_PASSWORD = "inspectflow-test-pw"
PG_SUPERUSER = "postgres"
PG_SYSTEM_USER = "inspectflow-pg"
MISSING_POSTGRES = (
    "PostgreSQL server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin or on PATH; "
    ".ci/run installs them (apt-get install -y --no-install-recommends postgresql)"
)
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
BIN = Path(sys.executable).parent


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 40) -> str:
    """Returns the last ``lines`` lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def stop_process_group(process: subprocess.Popen[Any], first: int = signal.SIGTERM) -> None:
    """Signals a process started with ``start_new_session=True`` and its whole group; SIGKILL if needed."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, first)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT_S)
    # The leader may be gone while workers or backends of its group linger.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_TIMEOUT_S)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with the dummy AWS credentials, the MLflow client limits and ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(AWS_ENV)
    env.update(MLFLOW_CLIENT_ENV)
    env.update(extra or {})
    return env


# --- PostgreSQL -------------------------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin folder (Debian layout), else the one on PATH."""
    folders = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    folders.sort(key=lambda folder: int(folder.parent.name) if folder.parent.name.isdigit() else 0)
    if folders:
        return folders[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and (Path(initdb).parent / "postgres").exists() else None


@dataclass(frozen=True)
class Account:
    """The unprivileged account the PostgreSQL server runs as (None fields: this process's own)."""

    uid: int | None = None
    gid: int | None = None
    name: str = ""

    def popen_kwargs(self) -> dict[str, Any]:
        """``subprocess`` arguments that run a child as this account, dropping root's groups."""
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def server_account() -> Account:
    """This process's account, or, as root, ``nobody`` or a dedicated system user created for it."""
    if os.geteuid() != 0:
        return Account()
    for name in ("nobody", PG_SYSTEM_USER):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return Account(entry.pw_uid, entry.pw_gid, name)
    useradd = shutil.which("useradd")
    if useradd is None:
        pytest.fail("running as root, PostgreSQL needs an unprivileged user: no 'nobody' and no useradd")
    created = subprocess.run(
        [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            PG_SYSTEM_USER,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if created.returncode != 0:
        pytest.fail(f"useradd {PG_SYSTEM_USER} failed: {created.stderr.strip()}")
    entry = pwd.getpwnam(PG_SYSTEM_USER)
    return Account(entry.pw_uid, entry.pw_gid, PG_SYSTEM_USER)


@dataclass
class Postgres:
    """A running PostgreSQL server: TCP on 127.0.0.1 with a password user, a Unix socket for the superuser."""

    port: int
    socket_dir: Path
    log: Path
    host: str = "127.0.0.1"
    user: str = PG_USER
    password: str = PG_PASSWORD

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` as the password user.

        The driver is explicit: SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, which is not
        installed (the stack pins psycopg2-binary).
        """
        return f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def connect(self, database: str) -> Any:
        """A psycopg2 connection to ``database`` as the password user, over TCP."""
        import psycopg2

        return psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=database
        )

    def superuser(self) -> Any:
        """An autocommit psycopg2 connection as the superuser, over the Unix socket (trusted)."""
        import psycopg2

        connection = psycopg2.connect(
            host=str(self.socket_dir), port=self.port, user=PG_SUPERUSER, dbname="postgres"
        )
        connection.autocommit = True
        return connection

    def create_database(self, name: str) -> None:
        """Creates database ``name`` owned by the password user."""
        with contextlib.closing(self.superuser()) as connection, connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}" OWNER "{self.user}"')

    def query(self, database: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Runs one query as the password user and returns its rows."""
        with contextlib.closing(self.connect(database)) as connection, connection.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """A throwaway PostgreSQL server with database ``mlflow`` owned by a password user."""
    import psycopg2

    binaries = postgres_bin()
    if binaries is None:
        pytest.fail(MISSING_POSTGRES)
    account = server_account()
    logs = tmp_path_factory.mktemp("postgres-logs")
    # pytest's temp folders are private to root; the server's account needs a folder of its own.
    base = Path(tempfile.mkdtemp(prefix="inspectflow-pg-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        if account.uid is not None:
            os.chown(base, account.uid, account.gid if account.gid is not None else -1)
        data = base / "data"
        initdb = subprocess.run(
            [str(binaries / "initdb"), "-D", str(data), "-U", PG_SUPERUSER, "-E", "UTF8", "--locale=C",
             "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"],
            capture_output=True, text=True, check=False, timeout=180, cwd=base, **account.popen_kwargs(),
        )  # fmt: skip
        if initdb.returncode != 0:
            pytest.fail(
                f"initdb failed (as {account.name or 'this user'}):\n{initdb.stdout}\n{initdb.stderr}"
            )
        server = Postgres(port=free_port(), socket_dir=base, log=logs / "postgres.log")
        with server.log.open("wb") as log:
            process = subprocess.Popen(
                [str(binaries / "postgres"), "-D", str(data), "-p", str(server.port), "-k", str(base),
                 "-c", f"listen_addresses={server.host}", "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=base,
                start_new_session=True, **account.popen_kwargs(),
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                connection = server.superuser()
                break
            except psycopg2.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    state = f"exited with {process.returncode}" if process.poll() is not None else "timed out"
                    pytest.fail(f"PostgreSQL did not start ({state}); log tail:\n{log_tail(server.log)}")
                time.sleep(0.2)
        with contextlib.closing(connection), connection.cursor() as cursor:
            cursor.execute(f"CREATE ROLE \"{PG_USER}\" LOGIN PASSWORD '{PG_PASSWORD}'")
        server.create_database("mlflow")
        yield server
    finally:
        if process is not None:
            stop_process_group(process, first=signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
        shutil.rmtree(base, ignore_errors=True)


# --- S3 (moto) --------------------------------------------------------------------------------------------


@dataclass
class S3:
    """A moto S3 endpoint on loopback, with bucket :data:`BUCKET`."""

    endpoint: str
    bucket: str = BUCKET
    env: dict[str, str] = field(default_factory=dict)

    def client(self) -> Any:
        """A boto3 S3 client of this endpoint."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=AWS_ENV["AWS_DEFAULT_REGION"],
        )

    def keys(self, prefix: str) -> list[str]:
        """Every object key under ``prefix`` in the bucket."""
        paginator = self.client().get_paginator("list_objects_v2")
        return [
            item["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    """A real HTTP S3 endpoint (moto's threaded server) with bucket ``inspectflow``."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        store = S3(endpoint=endpoint, env={**AWS_ENV, "MLFLOW_S3_ENDPOINT_URL": endpoint})
        store.client().create_bucket(Bucket=BUCKET)
        yield store
    finally:
        server.stop()


# --- MLflow tracking server -------------------------------------------------------------------------------


@dataclass
class MlflowServer:
    """An ``mlflow server`` subprocess (PostgreSQL backend, artifacts proxied to S3)."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """Stops the server and its workers."""
        stop_process_group(self.process)


def start_mlflow_server(backend_uri: str, artifacts: str, s3: S3, log: Path) -> MlflowServer:
    """Starts ``mlflow server`` on a free loopback port and waits for ``GET /health``.

    Args:
        backend_uri: The backend (and registry) store, a PostgreSQL URL.
        artifacts: ``--artifacts-destination``, such as ``s3://inspectflow/mlartifacts``.
        s3: The S3 endpoint the server writes artifacts to.
        log: The server's stdout and stderr.

    Returns:
        The running server; the caller stops it.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(BIN / "mlflow"), "server", "--backend-store-uri", backend_uri,
        "--artifacts-destination", artifacts, "--serve-artifacts",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with log.open("ab") as handle:
        process = subprocess.Popen(
            command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # No job runner: it forks seven huey consumers, which the pipeline never uses.
            env=child_env({**s3.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}),
            cwd=log.parent,
            start_new_session=True,
        )
    server = MlflowServer(url=url, process=process, log=log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                if answer.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            state = f"exited with {process.returncode}" if process.poll() is not None else "timed out"
            server.stop()
            pytest.fail(f"mlflow server did not start ({state}); log tail:\n{log_tail(log)}")
        time.sleep(0.5)


@pytest.fixture(scope="session")
def mlflow_server(
    postgres: Postgres, s3: S3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """``mlflow server`` on database ``mlflow``, artifacts under ``s3://inspectflow/mlartifacts``."""
    log = tmp_path_factory.mktemp("mlflow-server") / "server.log"
    server = start_mlflow_server(postgres.url("mlflow"), f"s3://{BUCKET}/mlartifacts", s3, log)
    try:
        yield server
    finally:
        server.stop()
