"""The local pipeline's steps in the component image: kfp's ``DockerRunner`` over Docker or podman.

``inspectflow run W --runner container`` runs each step in a container of the image a cluster would run
(``infra/docker``, built by ``infra/docker/build.sh``), so a missing file, a wrong entry point or a
permission is found here rather than on a user's cluster. kfp talks to a Docker engine's API; where there
is none, podman serves the same API (``podman system service``) for the length of the run.

The containers see the same paths as this machine: the work folder (MLflow's embedded store, its
artifacts and kfp's outputs) and the data are mounted where they are here, and the host's network is
shared, so a tracking server or S3 endpoint on localhost answers from inside too. Steps run as the
calling user, so what they write stays the user's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from inspectflow.errors import InspectflowError

if TYPE_CHECKING:
    from kfp.local import DockerRunner

#: Docker's own socket, used when ``DOCKER_HOST`` is unset and it answers.
DOCKER_SOCKET = Path("/var/run/docker.sock")
#: podman settings for hosts where crun cannot set the default ulimits (see the file); ``CONTAINERS_CONF``
#: in the environment takes precedence. ``infra/docker/build.sh`` builds with the same file.
PODMAN_CONF = Path(__file__).with_name("containers.conf")
#: Settings a step needs from this process's environment when they are set: tracking and S3.
PASSED_ENVIRONMENT = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
_SERVICE_START_S = 30.0


@dataclass(frozen=True)
class Image:
    """An image the engine holds: the name it was asked for and the ID it resolved to."""

    reference: str
    image_id: str

    def __str__(self) -> str:
        return f"{self.reference} {self.image_id}"


@contextmanager
def docker_api() -> Iterator[str]:
    """The URL of a Docker-compatible API for the block: ``DOCKER_HOST``, Docker's socket, or podman's.

    Raises:
        InspectflowError: No engine answers and podman is not installed, or its service did not start.
    """
    if os.environ.get("DOCKER_HOST"):
        yield os.environ["DOCKER_HOST"]
        return
    docker_url = f"unix://{DOCKER_SOCKET}"
    if DOCKER_SOCKET.exists() and _answers(docker_url):
        yield docker_url
        return
    podman = shutil.which("podman")
    if podman is None:
        raise InspectflowError(
            "--runner container: no Docker engine answers (DOCKER_HOST, /var/run/docker.sock) "
            "and podman is not installed"
        )
    with tempfile.TemporaryDirectory(prefix="inspectflow-podman-") as folder:
        url = f"unix://{folder}/podman.sock"
        environment = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(PODMAN_CONF))}
        log = Path(folder) / "service.log"
        with log.open("w") as output:
            service = subprocess.Popen(
                [podman, "system", "service", "--time=0", url],
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + _SERVICE_START_S
            while not _answers(url):
                if service.poll() is not None or time.monotonic() > deadline:
                    why = log.read_text().strip().splitlines()[-1:] or ["no answer"]
                    raise InspectflowError(
                        f"--runner container: podman's API service did not start: {why[0]}"
                    )
                time.sleep(0.2)
            yield url
        finally:
            service.terminate()
            try:
                service.wait(timeout=10)
            except subprocess.TimeoutExpired:
                service.kill()


def resolve_image(api_url: str, reference: str) -> Image:
    """The image ``reference`` as the engine at ``api_url`` holds it.

    Raises:
        InspectflowError: The engine does not hold it (nothing is pulled: build it, or name another).
    """
    import docker
    from docker.errors import ImageNotFound

    client = docker.DockerClient(base_url=api_url)
    try:
        return Image(reference, str(client.images.get(reference).id))
    except ImageNotFound:
        raise InspectflowError(
            f"--image {reference}: no such image here; build it with infra/docker/build.sh, or name another"
        ) from None
    finally:
        client.close()


def step_runner(
    image: Image, workdir: Path, read_only: list[Path], writable: list[Path], environment: dict[str, str]
) -> DockerRunner:
    """The steps' runner, kfp's ``DockerRunner``: this user, the host's network, the same paths as here.

    Args:
        image: The steps' image; its name and ID reach the steps as ``INSPECTFLOW_IMAGE``.
        workdir: Mounted read-write (MLflow's embedded store, its artifacts, kfp's outputs).
        read_only: Further paths mounted read-only (the data).
        writable: Further paths mounted read-write (files the steps report into).
        environment: Variables for the steps, on top of :data:`PASSED_ENVIRONMENT` from this process.
    """
    from docker.types import Mount
    from kfp import local

    from inspectflow.tracking import IMAGE_ENV

    mounts = [Mount(str(workdir), str(workdir), type="bind")]
    mounts += [Mount(str(path), str(path), type="bind", read_only=True) for path in read_only]
    mounts += [Mount(str(path), str(path), type="bind") for path in writable]
    passed = {name: os.environ[name] for name in PASSED_ENVIRONMENT if os.environ.get(name)}
    return local.DockerRunner(
        user=f"{os.getuid()}:{os.getgid()}",
        network_mode="host",
        # The image's HOME belongs to its own user; the calling user's steps keep their caches in /tmp.
        environment={**passed, **environment, "HOME": "/tmp", IMAGE_ENV: str(image)},
        mounts=mounts,
    )


def _answers(url: str) -> bool:
    import docker
    from docker.errors import DockerException

    try:
        client = docker.DockerClient(base_url=url, timeout=5)
    except DockerException:
        return False
    try:
        return bool(client.ping())
    except (DockerException, OSError):
        return False
    finally:
        client.close()
