"""Remote tracking, for real: the CLI against an MLflow server on PostgreSQL with artifacts in S3, and DVC.

The servers (see ``conftest.py``) are real processes on loopback; only S3 is moto's. The pipeline runs
through the CLI in a subprocess, as a user would run it with ``MLFLOW_TRACKING_URI`` set.
"""

from __future__ import annotations

import filecmp
import itertools
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from .conftest import (
    BIN,
    BUCKET,
    S3,
    MlflowServer,
    Postgres,
    child_env,
    log_tail,
    start_mlflow_server,
    stop_process_group,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL = "textile-classifier"
CLI = [sys.executable, "-m", "inspectflow"]
RUN_TIMEOUT_S = 600


def tracking_env(server: MlflowServer, s3: S3) -> dict[str, str]:
    """The CLI's environment: the server's URI, dummy AWS credentials, short MLflow HTTP timeouts."""
    return child_env({**s3.env, "MLFLOW_TRACKING_URI": server.url})


def run_textile(
    data: Path, workdir: Path, env: dict[str, str], *sets: str
) -> subprocess.CompletedProcess[str]:
    overrides = [arg for item in sets for arg in ("--set", item)]
    command = [*CLI, "run", "textile", "--data", str(data), "--workdir", str(workdir), *overrides]
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT_S, check=False
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def textile_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 synthetic 64 px textile patches in the Kaggle layout, written by the CLI."""
    out = tmp_path_factory.mktemp("textile") / "data"
    result = subprocess.run(
        [*CLI, "synth", "textile", "--out", str(out), "--n", "120"],
        capture_output=True, text=True, env=child_env(), timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, output(result)
    return out


@pytest.fixture
def tracking_uri() -> Iterator[None]:
    """Restores this process's MLflow tracking URI after a test sets it."""
    import mlflow

    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.usefixtures("tracking_uri")
def test_the_pipeline_tracks_to_postgres_and_s3_through_a_server(
    mlflow_server: MlflowServer,
    postgres: Postgres,
    s3: S3,
    textile_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow
    import torch

    env = tracking_env(mlflow_server, s3)
    # One epoch on 120 patches: about the remote path, not the gate's floors.
    result = run_textile(
        textile_data,
        tmp_path / "work",
        env,
        "train.epochs=1",
        "register.min_score=0",
        "register.baseline_margin=null",
    )
    assert result.returncode == 0, output(result) + f"\nserver log:\n{log_tail(mlflow_server.log)}"
    assert f"{MODEL} version 1 -> @champion" in result.stdout
    assert mlflow_server.url in result.stdout  # "MLflow run: <id>  (<tracking URI>)"
    assert not (tmp_path / "work" / "mlflow.db").exists()

    # Artifacts went through the server's proxy into the bucket, the run and registry into PostgreSQL.
    keys = s3.keys("mlartifacts/")
    assert any(key.endswith("/MLmodel") for key in keys), keys
    assert any("/checkpoints/" in key for key in keys), keys
    assert postgres.query("mlflow", "select count(*) from runs")[0][0] >= 1
    assert postgres.query("mlflow", "select name from registered_models") == [(MODEL,)]
    aliases = postgres.query("mlflow", "select name, alias, version from registered_model_aliases")
    assert (MODEL, "champion", 1) in aliases
    run_id = MlflowClient(mlflow_server.url).get_model_version_by_alias(MODEL, "champion").run_id
    assert postgres.query("mlflow", "select status from runs where run_uuid = %s", (run_id,)) == [
        ("FINISHED",)
    ]

    # The champion loads through the server, with no S3 credentials in this process: by default MLflow 3
    # downloads from S3 URLs the server presigns (so the client must reach the S3 endpoint); with
    # MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD=false every byte comes through the server itself.
    mlflow.set_tracking_uri(mlflow_server.url)
    batches = [
        torch.from_numpy(np.random.default_rng(seed).random((2, 1, 64, 64), np.float32)) for seed in (0, 1)
    ]
    outputs = []
    for proxied in (False, True):
        if proxied:
            monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
        model = mlflow.pytorch.load_model(f"models:/{MODEL}@champion")
        with torch.no_grad():
            logits = [model(batch) for batch in batches]
        assert all(tuple(x.shape) == (2, 6) and torch.isfinite(x).all() for x in logits)
        outputs.append(torch.cat(logits))
    assert torch.equal(outputs[0], outputs[1])


def dvc(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"dvc {' '.join(args)}: " + output(result)
    return result


def test_dvc_pushes_and_pulls_the_dataset_through_s3(s3: S3, textile_data: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = child_env({**s3.env, "DVC_NO_ANALYTICS": "1"})
    init = subprocess.run(["git", "init", "-q"], cwd=repo, capture_output=True, text=True, check=False)
    assert init.returncode == 0, init.stderr
    dvc(repo, env, "init", "-q")
    shutil.copytree(textile_data, repo / "data" / "textile")
    dvc(repo, env, "add", "-q", "data")
    dvc(repo, env, "remote", "add", "-d", "storage", f"s3://{BUCKET}/dvc")
    dvc(repo, env, "remote", "modify", "storage", "endpointurl", s3.endpoint)
    dvc(repo, env, "push", "-q")
    assert s3.keys("dvc/"), "dvc push wrote nothing to the bucket"

    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    dvc(repo, env, "pull", "-q")
    names = sorted(p.name for p in textile_data.iterdir())
    assert sorted(p.name for p in (repo / "data" / "textile").iterdir()) == names
    match, mismatch, errors = filecmp.cmpfiles(textile_data, repo / "data" / "textile", names, shallow=False)
    assert (mismatch, errors) == ([], []) and match == names


def wait_for_training(client: MlflowClient, cli: subprocess.Popen[bytes], timeout_s: float = 300) -> str:
    """Waits until the train step logs its first epoch's ``train_loss`` to the server; returns the run id."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and cli.poll() is None:
        experiment = client.get_experiment_by_name("textile")
        if experiment is not None:
            for run in client.search_runs([experiment.experiment_id]):
                if "train/loss" in run.data.metrics:
                    return str(run.info.run_id)
        time.sleep(0.25)
    raise AssertionError(f"training never showed up in the server (CLI exit code {cli.poll()})")


def test_a_tracking_server_that_dies_mid_run_fails_the_run_and_registers_nothing(
    postgres: Postgres, s3: S3, textile_data: Path, tmp_path: Path
) -> None:
    postgres.create_database("mlflow_dies")
    backend, artifacts = postgres.url("mlflow_dies"), f"s3://{BUCKET}/mlartifacts-dies"
    server = start_mlflow_server(backend, artifacts, s3, tmp_path / "server.log")
    stdout, stderr = tmp_path / "cli.out", tmp_path / "cli.err"
    command = [*CLI, "run", "textile", "--data", str(textile_data), "--workdir", str(tmp_path / "work"),
               "--set", "train.epochs=100"]  # fmt: skip
    cli: subprocess.Popen[bytes] | None = None
    try:
        with stdout.open("wb") as out, stderr.open("wb") as err:
            cli = subprocess.Popen(
                command, stdout=out, stderr=err, env=tracking_env(server, s3), start_new_session=True
            )
        run_id = wait_for_training(MlflowClient(server.url), cli)
        started = time.monotonic()
        server.stop()
        cli.wait(timeout=RUN_TIMEOUT_S)
        failed_after_s = time.monotonic() - started
    finally:
        if cli is not None:
            stop_process_group(cli, first=signal.SIGTERM)
        server.stop()
    err_text = stderr.read_text(errors="replace")
    report = f"exit {cli.returncode} after {failed_after_s:.0f} s\nstderr:\n{err_text[-4000:]}"
    assert cli.returncode != 0, report
    assert failed_after_s < 60, report  # seconds, thanks to MLFLOW_HTTP_REQUEST_MAX_RETRIES/TIMEOUT
    assert "version 1 -> @" not in stdout.read_text(errors="replace")

    restarted = start_mlflow_server(backend, artifacts, s3, tmp_path / "server-restarted.log")
    try:
        client = MlflowClient(restarted.url)
        assert client.search_model_versions(f"name = '{MODEL}'") == []
        with pytest.raises(MlflowException):
            client.get_registered_model(MODEL)
        epochs_logged = len(client.get_metric_history(run_id, "train/loss"))
        assert 1 <= epochs_logged < 100, f"{epochs_logged} epochs logged: the server did not die mid-training"
    finally:
        restarted.stop()
    assert postgres.query("mlflow_dies", "select count(*) from model_versions")[0][0] == 0

    # The last line says what went wrong in words: the tracking server (its address) is unreachable. The
    # cause must not be left to the step's traceback in the kfp log on stdout.
    last_line = err_text.strip().splitlines()[-1]
    cause = [line.strip() for line in stdout.read_text(errors="replace").splitlines() if "Exception:" in line]
    report += f"\nlast stderr line: {last_line}\ncause in the step log on stdout: {cause[-1:]}"
    assert last_line.startswith("inspectflow: error:"), report
    assert server.url.removeprefix("http://") in last_line or "tracking server" in last_line, report


def test_runs_racing_to_the_gate_on_postgres_end_with_the_better_champion(
    mlflow_server: MlflowServer, s3: S3, textile_data: Path, tmp_path: Path
) -> None:
    from inspectflow.lifecycle.audit import audit_entries

    env = tracking_env(mlflow_server, s3)
    name = "race-classifier"
    common = ["register.min_score=0", "register.baseline_margin=null", "register.max_class_drop=1.0"]
    common.append(f"register.model_name={name}")

    def start(*sets: str) -> subprocess.Popen[str]:
        overrides = [arg for item in [*common, *sets] for arg in ("--set", item)]
        command = [
            *CLI,
            "run",
            "textile",
            "--data",
            str(textile_data),
            "--workdir",
            str(tmp_path),
            *overrides,
        ]
        return subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    # Whichever reaches the gate first is judged first; the other is judged against its outcome.
    racing = [start("train.epochs=1", "train.lr=1e-6"), start("train.epochs=3")]  # weak, strong
    for run in racing:
        out, _ = run.communicate(timeout=RUN_TIMEOUT_S)
        assert run.returncode == 0, out[-3000:]

    client = MlflowClient(mlflow_server.url)
    versions = client.search_model_versions(f"name = '{name}'")
    scores = {str(v.version): float(v.tags["gate.new_score"]) for v in versions}
    strong = next(
        str(v.version) for v in versions if client.get_run(v.run_id).data.params["train.epochs"] == "3"
    )
    assert len(scores) == 2 and scores[strong] == max(scores.values())
    assert str(client.get_model_version_by_alias(name, "champion").version) == strong
    entries = [e for e in audit_entries(client.get_registered_model(name)) if e.alias == "champion"]
    for previous, entry in itertools.pairwise(entries):
        assert entry.from_version == previous.to_version, entries
    with pytest.raises(MlflowException):
        client.get_registered_model(f"{name}.lock")  # released
