"""The component image as a cluster runs it, and the local pipeline in it (``--runner container``).

Needs the image built by ``infra/docker/build.sh`` (``.ci/run`` builds it) and Docker or podman; without
them these tests skip, except under CI, where they fail. Everything runs for real: the image's own
``mlflow server`` on PostgreSQL with artifacts in S3 (moto), the compiled pipeline's own step commands, and
kfp's ``DockerRunner``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from PIL import Image as PILImage

from inspectflow.components import COMPONENT_IMAGE
from inspectflow.config import build_config
from inspectflow.errors import InspectflowError
from inspectflow.names import CHAMPION, GIT_COMMIT_TAG, STEP_IMAGE_TAG_PREFIX, VALIDATION_SUCCESS_TAG
from inspectflow.runner.containers import Image, docker_api, resolve_image
from inspectflow.synth.textile import synthesize_textile

from .conftest import BUCKET, S3, Postgres, free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.container]

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s" / "base"
SERVING = ROOT / "infra" / "k8s" / "serving"
COMPILED = ROOT / "infra" / "pipelines" / "inspectflow-textile.yaml"
#: The image's user, as the Kubernetes manifests run it.
IMAGE_USER = "10001:10001"
STEPS = ("ingest", "validate", "train", "evaluate", "register")


@pytest.fixture(scope="module")
def engine() -> Iterator[tuple[str, Image]]:
    """A Docker API (Docker's, or podman's for the module) and the component image it holds."""
    try:
        with docker_api() as url:
            yield url, resolve_image(url, COMPONENT_IMAGE)
    except InspectflowError as missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} (.ci/run builds it with infra/docker/build.sh)")
        pytest.skip(str(missing))


@pytest.fixture(scope="module")
def docker(engine: tuple[str, Image]) -> Iterator[Any]:
    import docker as docker_sdk

    client = docker_sdk.DockerClient(base_url=engine[0])
    yield client
    client.close()


def hardened(docker: Any, image: Image, command: list[str], **options: Any) -> Any:
    """Starts ``command`` as the Kubernetes manifests run the image: UID 10001, read-only, /tmp writable."""
    return docker.containers.run(
        image.image_id,
        command,
        user=IMAGE_USER,
        read_only=True,
        tmpfs={"/tmp": "rw,size=1g"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        network_mode="host",
        detach=True,
        **options,
    )


def finished(container: Any, timeout: float = 600) -> tuple[int, str]:
    """Waits for ``container`` and returns its exit status and output, removing it."""
    try:
        status = container.wait(timeout=timeout)["StatusCode"]
        return status, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def writable_by_image_user(prefix: str) -> Path:
    """A folder on this machine that UID 10001 can write, as a volume would be on a cluster."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    os.chown(folder, 10001, 10001)
    return folder


@pytest.fixture(scope="module")
def k8s_mlflow(docker: Any, engine: tuple[str, Image], postgres: Postgres, s3: S3) -> Iterator[str]:
    """The MLflow server of ``infra/k8s``, from the image, with the manifest's command, arguments and env.

    The cluster's values are swapped for this machine's: the PostgreSQL and S3 endpoints, and a free port
    on loopback (the host's network is shared) instead of 0.0.0.0:5000.
    """
    deployment = yaml.safe_load((K8S / "mlflow-deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    settings = yaml.safe_load((K8S / "mlflow-configmap.yaml").read_text())["data"]
    settings["MLFLOW_ARTIFACTS_DESTINATION"] = f"s3://{BUCKET}/k8s-artifacts"
    environment = {
        **{key: " ".join(str(value).split()) for key, value in settings.items()},
        **{item["name"]: item["value"] for item in container["env"] if "value" in item},
        **s3.env,
    }
    postgres.create_database("k8s")
    environment["MLFLOW_BACKEND_STORE_URI"] = postgres.url("k8s")
    port = free_port()
    arguments = [environment[a[2:-1]] if a.startswith("$(") else a for a in container["args"]]
    arguments[arguments.index("--host") + 1] = "127.0.0.1"
    arguments[arguments.index("--port") + 1] = str(port)
    probe = container["readinessProbe"]["httpGet"]["path"]
    server = hardened(docker, engine[1], [*container["command"], *arguments], environment=environment)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(server, url + probe, seconds=120)
        yield url
    finally:
        server.remove(force=True)


def test_the_k8s_mlflow_server_starts_from_the_image_and_answers_its_probe(k8s_mlflow: str) -> None:
    with urllib.request.urlopen(f"{k8s_mlflow}/health", timeout=10) as answer:
        assert answer.status == 200
    experiments = MlflowClient(k8s_mlflow).search_experiments()
    assert [e.name for e in experiments] == ["Default"]


def test_the_image_serves_as_its_manifest_runs_it(
    docker: Any, engine: tuple[str, Image], k8s_mlflow: str, tmp_path: Path
) -> None:
    """``inspectflow serve`` from the image with the manifest's command: UID 10001, read-only root, probes."""
    from conftest import run_steps, tiny_config

    npy = tmp_path / "npy"
    npy.mkdir()
    rng = np.random.default_rng(0)
    np.save(npy / "X.npy", rng.integers(0, 256, size=(48, 16, 16, 1), dtype=np.uint8))
    np.save(npy / "Y.npy", np.repeat(np.arange(6), 8))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", k8s_mlflow)
        mlflow.set_tracking_uri(k8s_mlflow)
        try:
            assert run_steps(npy, tmp_path / "run", tiny_config().to_dict())["alias"] == CHAMPION
        finally:
            mlflow.set_tracking_uri(None)
    deployment = yaml.safe_load((SERVING / "serve-deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port = free_port()
    arguments = list(container["args"])
    arguments[arguments.index("--host") + 1] = "127.0.0.1"
    arguments[arguments.index("--port") + 1] = str(port)
    environment = {"MLFLOW_TRACKING_URI": k8s_mlflow, "HOME": "/tmp"}
    server = hardened(docker, engine[1], [*container["command"], *arguments], environment=environment)
    url = f"http://127.0.0.1:{port}"
    try:
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            _wait_for(server, url + container[probe]["httpGet"]["path"])
        image = io.BytesIO()
        PILImage.fromarray(np.full((16, 16), 128, dtype=np.uint8)).save(image, format="PNG")
        tensor = {"name": "images", "shape": [1], "datatype": "BYTES"}
        body = {"inputs": [{**tensor, "data": [base64.b64encode(image.getvalue()).decode()]}]}
        request = urllib.request.Request(
            f"{url}/v2/models/textile-classifier/infer",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            assert answer.status == 200
            assert json.loads(answer.read())["model_version"] == "1"
        server.stop(timeout=30)  # SIGTERM: a clean shutdown
        assert server.wait(timeout=60)["StatusCode"] == 0, server.logs().decode()[-3000:]
    finally:
        server.remove(force=True)


def _wait_for(server: Any, url: str, seconds: float = 180) -> None:
    """Waits until the container ``server`` answers ``url`` with 200; fails with its log if it never does."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        server.reload()
        if server.status == "exited" or time.monotonic() > deadline:
            pytest.fail(f"the image's server did not answer {url}:\n{server.logs().decode()[-3000:]}")
        time.sleep(1)


def step_command(step: str, executor_input: dict[str, Any]) -> list[str]:
    """The compiled pipeline's command for ``step``, with the executor input the KFP launcher would give."""
    executors = next(yaml.safe_load_all(COMPILED.read_text()))["deploymentSpec"]["executors"]
    container = executors[f"exec-{step}"]["container"]
    arguments = [json.dumps(executor_input) if a == "{{$}}" else a for a in container["args"]]
    return [*container["command"], *arguments]


def test_steps_run_as_the_image_user_on_a_read_only_root(
    docker: Any, engine: tuple[str, Image], k8s_mlflow: str, s3: S3, tmp_path: Path
) -> None:
    """Ingest and validate, as a cluster runs them: UID 10001, read-only root, only /tmp and /s3 writable."""
    data = tmp_path / "textile"
    synthesize_textile(data, n=60, seed=0)
    for folder in (tmp_path, data):  # pytest's folders are private to this user; 10001 reads the data
        folder.chmod(0o755)
    artifacts = writable_by_image_user("inspectflow-s3-")  # where kfp's executor maps s3:// artifacts
    try:
        config = build_config("textile", []).to_json()
        root = f"s3://{BUCKET}/pipeline/run-1"
        mounts = {
            str(artifacts): {"bind": "/s3", "mode": "rw"},
            str(data): {"bind": "/data/textile", "mode": "ro"},
        }
        environment = {**s3.env, "MLFLOW_TRACKING_URI": k8s_mlflow}
        dataset = {
            "type": {"schemaTitle": "system.Dataset", "schemaVersion": "0.0.1"},
            "uri": f"{root}/dataset",
        }
        ingest = {
            "inputs": {
                "parameterValues": {
                    "source": "/data/textile",
                    "config": config,
                    "resume_run_id": "",
                    "pipeline_name": "inspectflow-textile",
                    "kfp_run_name": "read-only",
                    "kfp_run_id": "run-1",
                }
            },
            "outputs": {
                "artifacts": {"dataset": {"artifacts": [{"name": "dataset", **dataset}]}},
                "outputFile": f"/s3/{BUCKET}/pipeline/run-1/ingest.json",
            },
        }
        status, output = finished(
            hardened(
                docker, engine[1], step_command("ingest", ingest), environment=environment, volumes=mounts
            )
        )
        assert status == 0, output[-3000:]
        outputs = json.loads((artifacts / BUCKET / "pipeline" / "run-1" / "ingest.json").read_text())
        run_id = outputs["parameterValues"]["mlflow_run_id"]
        version = outputs["parameterValues"]["data_version"]

        validate = {
            "inputs": {
                "parameterValues": {"config": config, "mlflow_run_id": run_id, "data_version": version},
                "artifacts": {"dataset": {"artifacts": [{"name": "dataset", **dataset}]}},
            },
            "outputs": {
                "artifacts": {
                    "report": {
                        "artifacts": [
                            {
                                "name": "report",
                                "type": {"schemaTitle": "system.HTML", "schemaVersion": "0.0.1"},
                                "uri": f"{root}/report",
                            }
                        ]
                    }
                },
                "outputFile": f"/s3/{BUCKET}/pipeline/run-1/validate.json",
            },
        }
        status, output = finished(
            hardened(
                docker, engine[1], step_command("validate", validate), environment=environment, volumes=mounts
            )
        )
        assert status == 0, output[-3000:]
        run = MlflowClient(k8s_mlflow).get_run(run_id)
        assert run.data.tags[VALIDATION_SUCCESS_TAG] == "true"
        assert re.fullmatch("[0-9a-f]{40}", run.data.tags[GIT_COMMIT_TAG])  # baked into the image by build.sh
        assert (artifacts / BUCKET / "pipeline" / "run-1" / "report").stat().st_size > 0
    finally:
        shutil.rmtree(artifacts, ignore_errors=True)


def inspectflow(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the embedded default
    command = [sys.executable, "-m", "inspectflow", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, check=False)


def test_the_pipeline_runs_in_the_image_like_in_subprocesses(
    engine: tuple[str, Image], tmp_path: Path
) -> None:
    """``--runner container`` registers a champion, each step tagged with the image, as subprocesses do."""
    data = tmp_path / "textile"
    synthesize_textile(data, n=120, seed=0)
    settings = ["--set", "train.epochs=2", "--data", str(data)]
    results = {}
    for runner in ("subprocess", "container"):
        work = tmp_path / runner
        result = inspectflow("run", "textile", "--runner", runner, "--workdir", str(work), *settings)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        assert len(result.stdout.splitlines()) < 25, result.stdout  # the quiet terminal, in both
        client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
        version = client.get_model_version_by_alias("textile-classifier", CHAMPION)
        results[runner] = client.get_run(version.run_id).data
    tags = results["container"].tags
    assert {step: tags.get(STEP_IMAGE_TAG_PREFIX + step) for step in STEPS} == {
        step: str(engine[1]) for step in STEPS
    }
    assert not any(key.startswith(STEP_IMAGE_TAG_PREFIX) for key in results["subprocess"].tags)
    # The same code, libraries and seed on the same CPU: the same model.
    for name, value in results["subprocess"].metrics.items():
        if name.startswith("test/"):
            assert results["container"].metrics[name] == pytest.approx(value, abs=1e-6), name


def test_a_missing_image_is_one_line_and_nothing_runs(engine: tuple[str, Image], tmp_path: Path) -> None:
    result = inspectflow(
        "run",
        "textile",
        "--runner",
        "container",
        "--image",
        "localhost/no-such-image:0",
        "--workdir",
        str(tmp_path),
    )
    assert result.returncode != 0
    assert (
        "--image localhost/no-such-image:0: no such image here; build it with infra/docker/build.sh"
        in result.stderr
    )
    assert not (tmp_path / "mlflow.db").exists()
