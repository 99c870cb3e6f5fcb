"""The container runner's choices that need no engine (``tests/integration/test_containers.py`` runs one)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inspectflow.errors import InspectflowError
from inspectflow.runner import containers
from inspectflow.runner.containers import Image, docker_api, step_runner


def test_no_engine_and_no_podman_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(containers, "DOCKER_SOCKET", tmp_path / "docker.sock")
    monkeypatch.setattr(containers.shutil, "which", lambda name: None)

    with (
        pytest.raises(InspectflowError, match=r"no Docker engine answers .* and podman is not installed"),
        docker_api(),
    ):
        pass


def test_docker_host_is_used_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")

    with docker_api() as url:
        assert url == "tcp://127.0.0.1:2375"


def test_steps_see_the_same_paths_run_as_this_user_and_know_their_image(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    image = Image("localhost/inspectflow:dev", "sha256:" + "0" * 64)
    data, errors = tmp_path / "data", tmp_path / "errors.log"

    runner = step_runner(image, tmp_path / "work", [data], [errors], environment={"A": "1"})

    arguments = runner.container_run_args
    assert [(m["Source"], m["Target"], m["ReadOnly"]) for m in arguments["mounts"]] == [
        (str(tmp_path / "work"), str(tmp_path / "work"), False),
        (str(data), str(data), True),
        (str(errors), str(errors), False),
    ]
    assert arguments["network_mode"] == "host"
    assert arguments["user"] == f"{os.getuid()}:{os.getgid()}"
    environment = arguments["environment"]
    assert environment["INSPECTFLOW_IMAGE"] == f"localhost/inspectflow:dev sha256:{'0' * 64}"
    assert environment["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert "AWS_SECRET_ACCESS_KEY" not in environment
    assert environment["A"] == "1"
