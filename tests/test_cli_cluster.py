"""The cluster doors of the CLI against a fake KFP API: run --host, schedule, compile."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from fake_kfp import API, CREATE_RECURRING_RUN, CREATE_RUN, FakeKFP

from inspectflow.cli import cli, main
from inspectflow.config import WORKLOAD_DEFAULTS, build_config
from inspectflow.errors import ConfigError
from inspectflow.pipelines.inspection import S3_SECRET, S3_SECRET_KEYS
from inspectflow.runner import remote
from inspectflow.runner.remote import RemoteRunFailed

pytestmark = pytest.mark.usefixtures("isolated_kfp")


@pytest.fixture
def kfp_server() -> Iterator[FakeKFP]:
    with FakeKFP(states=["PENDING", "RUNNING", "SUCCEEDED"]) as server:
        yield server


@pytest.fixture
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Makes the CLI's follow_run poll every 10 ms (it has no option for it; the default is 10 s a poll).

    Returns:
        The keyword arguments of every follow_run call, as the CLI made it.
    """
    real = remote.follow_run
    calls: list[dict[str, Any]] = []

    def follow_run(*args: Any, **kwargs: Any) -> str:
        calls.append(dict(kwargs))
        return real(*args, **{**kwargs, "poll_s": 0.01})

    monkeypatch.setattr(remote, "follow_run", follow_run)
    return calls


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple:
    """Runs the console script's entry point; returns ``(exit code, stdout, stderr)``."""
    monkeypatch.setattr(sys, "argv", ["inspectflow", *args])
    try:
        main()
        code = 0
    except SystemExit as exited:
        code = exited.code if isinstance(exited.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def sent_pipeline_spec(body: dict[str, Any]) -> dict[str, Any]:
    """The PipelineSpec of a create-run body (kfp nests it when the package has a platform spec)."""
    spec = body["pipeline_spec"]
    return dict(spec["pipeline_spec"]) if "platform_spec" in spec else dict(spec)


# -- run --host ----------------------------------------------------------------------------------------------


def test_run_on_a_host_submits_one_run_with_source_and_config_and_follows_it(
    kfp_server: FakeKFP, quick_polls: list[dict[str, Any]]
) -> None:
    result = invoke(
        "run", "textile", "--host", kfp_server.url, "--data", "s3://b/textile", "--set", "train.epochs=2"
    )

    assert result.exit_code == 0, result.output
    assert not kfp_server.unexpected()
    assert kfp_server.calls().count(CREATE_RUN) == 1
    [body] = kfp_server.bodies("POST", f"{API}/runs")
    [run_id] = kfp_server.runs
    parameters = body["runtime_config"]["parameters"]
    assert set(parameters) == {"source", "config"}
    assert parameters["source"] == "s3://b/textile"
    config = json.loads(parameters["config"])
    assert config["train"]["epochs"] == 2
    assert config == build_config("textile", ["train.epochs=2"]).to_dict()
    assert body["display_name"].startswith("inspectflow-textile-")
    assert sent_pipeline_spec(body)["pipelineInfo"]["name"] == "inspectflow-textile"
    [experiment] = kfp_server.experiments.values()
    assert experiment["display_name"] == build_config("textile").tracking.experiment

    assert f"{kfp_server.url}/#/runs/details/{run_id}" in result.output
    states = [line.split()[-1] for line in result.output.splitlines() if line.startswith("state:")]
    assert states == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert result.output.splitlines()[-1].split() == ["finished:", "SUCCEEDED"]
    assert kfp_server.calls().count(f"GET {API}/runs/{run_id}") == 3
    [follow] = quick_polls
    assert follow["timeout_s"] == 24 * 3600  # the --timeout default


def test_run_on_a_host_with_the_default_poll_is_quick_when_the_first_poll_ends_it() -> None:
    # No quick_polls here: follow_run sleeps its 10 s default only between polls, never before the first.
    with FakeKFP(states=["SUCCEEDED"]) as server:
        started = time.monotonic()
        result = invoke("run", "textile", "--host", server.url, "--data", "s3://b/textile", "--timeout", "60")
        elapsed = time.monotonic() - started

    assert result.exit_code == 0, result.output
    assert "finished:" in result.output and "SUCCEEDED" in result.output
    assert elapsed < 9


def test_run_on_a_host_with_no_wait_returns_after_submission(kfp_server: FakeKFP) -> None:
    result = invoke("run", "textile", "--host", kfp_server.url, "--data", "s3://b/textile", "--no-wait")

    assert result.exit_code == 0, result.output
    [run_id] = kfp_server.runs
    assert f"GET {API}/runs/{run_id}" not in kfp_server.calls()
    assert kfp_server.calls()[-1] == CREATE_RUN
    assert "submitted:" in result.output and f"#/runs/details/{run_id}" in result.output
    assert "state:" not in result.output and "finished:" not in result.output


def test_run_on_a_host_that_fails_exits_1_with_the_run_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], quick_polls: list[dict[str, Any]]
) -> None:
    with FakeKFP(states=["RUNNING", "FAILED"], error_message="task 'train' failed: OOMKilled") as server:
        host = server.url
        code, out, err = run_main(
            monkeypatch, capsys, "run", "dagm", "--host", host, "--data", "s3://b/dagm", "--set", "epochs=1"
        )
        [run_id] = server.runs

    assert code == 1
    assert "state:" in out and "FAILED" in out
    assert err.startswith("inspectflow: error: ")
    assert f"KFP run {run_id} FAILED: task 'train' failed: OOMKilled" in err
    assert f"{host}/#/runs/details/{run_id}" in err
    assert "Traceback" not in err


def test_run_on_a_host_reports_a_failed_run_as_remote_run_failed(
    quick_polls: list[dict[str, Any]],
) -> None:
    with FakeKFP(states=["PENDING", "CANCELED"]) as server:
        result = invoke("run", "textile", "--host", server.url, "--data", "s3://b/textile")
    assert result.exit_code == 1
    assert isinstance(result.exception, RemoteRunFailed)
    assert result.exception.state == "CANCELED"


def test_host_without_data_is_a_usage_error(kfp_server: FakeKFP) -> None:
    result = invoke("run", "textile", "--host", kfp_server.url)

    assert result.exit_code == 2
    assert "--host needs --data" in result.output
    assert "s3://" in result.output
    assert kfp_server.calls() == []


def test_host_without_data_through_the_entry_point_exits_2(
    kfp_server: FakeKFP, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_main(monkeypatch, capsys, "run", "textile", "--host", kfp_server.url)

    assert code == 2
    assert "--host needs --data" in err
    assert kfp_server.calls() == []


def test_bad_settings_are_refused_before_anything_is_sent(kfp_server: FakeKFP) -> None:
    result = invoke(
        "run", "textile", "--host", kfp_server.url, "--data", "s3://b/t", "--set", "train.epochz=2"
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)
    assert "epochz" in str(result.exception)
    assert kfp_server.calls() == []


# -- schedule ------------------------------------------------------------------------------------------------


def test_schedule_sends_a_recurring_run_with_a_six_field_cron(kfp_server: FakeKFP) -> None:
    result = invoke(
        "schedule", "textile", "--cron", "0 3 * * 1", "--host", kfp_server.url, "--data", "s3://b/t"
    )

    assert result.exit_code == 0, result.output
    assert not kfp_server.unexpected()
    assert kfp_server.calls().count(CREATE_RECURRING_RUN) == 1
    assert CREATE_RUN not in kfp_server.calls()
    [body] = kfp_server.bodies("POST", f"{API}/recurringruns")
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 1"}}
    assert body["mode"] == "ENABLE"
    assert body["display_name"] == "inspectflow-textile-retrain"
    parameters = body["runtime_config"]["parameters"]
    assert parameters["source"] == "s3://b/t"
    assert json.loads(parameters["config"]) == build_config("textile").to_dict()
    assert sent_pipeline_spec(body)["pipelineInfo"]["name"] == "inspectflow-textile"
    [recurring_id] = kfp_server.recurring_runs
    assert f"recurring run {recurring_id}" in result.output
    assert "'0 0 3 * * 1'" in result.output


def test_schedule_takes_overrides(kfp_server: FakeKFP) -> None:
    result = invoke(
        "schedule", "dagm", "--cron", "0 0 3 * * 1", "--host", kfp_server.url, "--data", "s3://b/d",
        "--set", "train.epochs=4", "--experiment", "nightly",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    [body] = kfp_server.bodies("POST", f"{API}/recurringruns")
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert json.loads(body["runtime_config"]["parameters"]["config"])["train"]["epochs"] == 4
    [experiment] = kfp_server.experiments.values()
    assert experiment["display_name"] == "nightly"


@pytest.mark.parametrize(
    ("cron", "problem"),
    [("0 3 * *", "has 4 fields"), ("0 25 * * *", "hour field '25'"), ("0 3 * * 7", "7 is outside 0-6")],
)
def test_an_invalid_cron_exits_non_zero_with_the_explanation(
    cron: str,
    problem: str,
    kfp_server: FakeKFP,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run_main(
        monkeypatch,
        capsys,
        "schedule",
        "textile",
        "--cron",
        cron,
        "--host",
        kfp_server.url,
        "--data",
        "s3://b/t",
    )

    assert code == 1
    assert err.startswith("inspectflow: error: ")
    assert problem in err
    assert "six fields, seconds first" in err
    assert kfp_server.calls() == []


def test_an_invalid_cron_through_click_raises_a_config_error(kfp_server: FakeKFP) -> None:
    result = invoke("schedule", "textile", "--cron", "@daily", "--host", kfp_server.url, "--data", "s3://b/t")
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)
    assert kfp_server.calls() == []


# -- compile -------------------------------------------------------------------------------------------------


def leaves(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every key and scalar of a parsed YAML tree, with the path of keys leading to it."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, str(key)), key
            yield from leaves(value, (*path, str(key)))
    elif isinstance(node, list):
        for value in node:
            yield from leaves(value, path)
    else:
        yield path, node


def executor_of(spec: dict[str, Any], task: str) -> str:
    component = spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]
    return str(spec["components"][component]["executorLabel"])


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result, dict[str, str]]:
    """``inspectflow compile`` run once, with credential values in the environment it compiles in."""
    out = tmp_path_factory.mktemp("compiled") / "pipelines"
    secrets = {
        "AWS_ACCESS_KEY_ID": "AKIAINSPECTFLOWTEST7",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-not-a-real-secret-bPxRfiCY",
        "MLFLOW_TRACKING_URI": "postgresql://mlflow:hunter2-password@db.internal/mlflow",
        "MLFLOW_TRACKING_TOKEN": "tok-0123456789abcdef",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in secrets.items():
            patch.setenv(name, value)
        result = CliRunner().invoke(cli, ["compile", "--out", str(out)])
    return out, result, secrets


def test_compile_writes_one_pipeline_per_workload(compiled: tuple[Path, Result, dict[str, str]]) -> None:
    out, result, _ = compiled

    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"inspectflow-{w}.yaml" for w in sorted(WORKLOAD_DEFAULTS)]
    assert len(names) == 3
    assert result.output.splitlines() == [f"wrote {out / name}" for name in names]


@pytest.mark.parametrize("workload", sorted(WORKLOAD_DEFAULTS))
def test_each_compiled_pipeline_is_named_and_defaults_its_config(
    workload: str, compiled: tuple[Path, Result, dict[str, str]]
) -> None:
    text = (compiled[0] / f"inspectflow-{workload}.yaml").read_text()
    # A pipeline spec and, for the Kubernetes secrets and config maps, a platform spec: two YAML documents,
    # so yaml.safe_load (one document) refuses the file; KFP and kubectl read it as a stream.
    documents = list(yaml.safe_load_all(text))
    assert len(documents) == 2
    spec, platform = documents

    assert spec["pipelineInfo"]["name"] == f"inspectflow-{workload}"
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert "defaultValue" not in parameters["source"]  # the cluster's data is always named at submission
    assert json.loads(parameters["config"]["defaultValue"]) == build_config(workload).to_dict()
    assert set(platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]) == set(
        spec["deploymentSpec"]["executors"]
    )


@pytest.mark.parametrize("workload", sorted(WORKLOAD_DEFAULTS))
def test_only_the_train_task_asks_for_a_gpu_and_memory(
    workload: str, compiled: tuple[Path, Result, dict[str, str]]
) -> None:
    spec, _ = yaml.safe_load_all((compiled[0] / f"inspectflow-{workload}.yaml").read_text())
    executors = spec["deploymentSpec"]["executors"]
    train = executors[executor_of(spec, "train")]["container"]

    resources = train["resources"]
    accelerator = resources["accelerator"]
    assert accelerator.get("resourceType", accelerator.get("type")) == "nvidia.com/gpu"
    assert str(accelerator.get("resourceCount", accelerator.get("count"))) == "1"
    assert resources["resourceMemoryRequest"] == "16G"
    assert resources["resourceMemoryLimit"] == "32G"
    assert train["image"].endswith("-cuda")
    for task in ("ingest", "validate", "evaluate", "register"):
        container = executors[executor_of(spec, task)]["container"]
        assert "accelerator" not in container.get("resources", {}), task


@pytest.mark.parametrize("workload", sorted(WORKLOAD_DEFAULTS))
def test_no_credential_value_is_compiled_in(
    workload: str, compiled: tuple[Path, Result, dict[str, str]]
) -> None:
    out, _, secrets = compiled
    text = (out / f"inspectflow-{workload}.yaml").read_text()
    for name, value in secrets.items():
        assert value not in text, f"the value of {name} is in the compiled pipeline"
    assert "hunter2" not in text

    documents = list(yaml.safe_load_all(text))
    named = [path for document in documents for path, leaf in leaves(document) if leaf in S3_SECRET_KEYS]
    assert named, "the secret's keys are not referenced at all"
    # The secret's key names appear only as names: the keys and env vars of a secretAsEnv entry.
    assert all("secretAsEnv" in path and path[-1] in ("secretKey", "envVar") for path in named), named
    for executor in documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values():
        [secret] = executor["secretAsEnv"]
        assert secret["secretName"] == S3_SECRET
        assert {(k["secretKey"], k["envVar"]) for k in secret["keyToEnv"]} == {(k, k) for k in S3_SECRET_KEYS}


def test_image_without_the_container_runner_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("run", "textile", "--image", "localhost/inspectflow:dev", "--workdir", str(tmp_path))

    assert result.exit_code == 2
    assert "--image is for --runner container" in result.output
    assert list(tmp_path.iterdir()) == []


def test_the_container_runner_is_for_local_runs(kfp_server: FakeKFP) -> None:
    result = invoke("run", "textile", "--runner", "container", "--host", kfp_server.url, "--data", "s3://b/p")

    assert result.exit_code == 2
    assert "a cluster runs its own" in result.output
    assert kfp_server.calls() == []


def test_schedule_on_drift_sends_the_pipeline_that_monitors_first(kfp_server: FakeKFP) -> None:
    result = invoke(
        "schedule", "textile", "--cron", "0 * * * *", "--host", kfp_server.url, "--data", "s3://b/t",
        "--on-drift", "s3://line/new",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    [body] = kfp_server.bodies("POST", f"{API}/recurringruns")
    assert body["display_name"] == "inspectflow-textile-retrain-on-drift"
    parameters = body["runtime_config"]["parameters"]
    assert (parameters["images"], parameters["source"]) == ("s3://line/new", "s3://b/t")
    spec = sent_pipeline_spec(body)
    assert spec["pipelineInfo"]["name"] == "inspectflow-textile-on-drift"
    tasks = spec["root"]["dag"]["tasks"]
    [condition] = [task for name, task in tasks.items() if name.startswith("condition")]
    assert condition["triggerPolicy"]["condition"].endswith("== 'drift'")
    assert "monitor" in tasks and "inspectflow-textile-on-drift at '0 0 * * * *'" in result.output
