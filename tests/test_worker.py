"""The local step worker: a call runs in a fork of the warm worker, with the caller's streams, environment
and folder; without a worker it runs in the caller."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from inspectflow.runner.worker import WORKER_ENV, call_step, serving

#: A step subprocess as kfp starts one: a fresh interpreter that hands its calls (standard-library
#: functions here, which the worker can import) to the worker and prints what they returned.
CALLER = """
import json, sys
from inspectflow.runner.worker import call_step
print("caller", json.dumps([call_step("os:getpid"), call_step("os:getenv", "FACT"), call_step("os:getcwd")]))
call_step("builtins:print", "printed by the step")
call_step("sys:exit", int(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One worker for the module (its imports take seconds); yields its address."""
    with serving(tmp_path_factory.mktemp("worker")) as environment:
        yield environment[WORKER_ENV]


def test_without_a_worker_the_call_runs_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKER_ENV, raising=False)
    assert call_step("os:getpid") == os.getpid()


@pytest.mark.parametrize("status", [0, 3])
def test_calls_run_in_forks_with_the_callers_streams_environment_and_folder(
    worker: str, tmp_path: Path, status: int
) -> None:
    log = tmp_path / "step.log"
    with log.open("w") as out:
        caller = subprocess.Popen(
            [sys.executable, "-c", CALLER, str(status)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={**os.environ, WORKER_ENV: worker, "FACT": "set by the caller"},
        )
        assert caller.wait(timeout=120) == status  # a failing step's status is the caller's
    lines = log.read_text().splitlines()
    pid, fact, cwd = json.loads(next(line for line in lines if line.startswith("caller "))[7:])
    assert pid != caller.pid and (fact, cwd) == ("set by the caller", str(tmp_path))
    assert "printed by the step" in lines  # the fork wrote into the caller's stdout
