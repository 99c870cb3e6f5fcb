"""The cluster path against a fake KFP API server: submit, follow, schedule, and how failures read."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_kfp import (
    API,
    CREATE_EXPERIMENT,
    CREATE_RECURRING_RUN,
    CREATE_RUN,
    HEALTHZ,
    LIST_EXPERIMENTS,
    FakeKFP,
)

from inspectflow.config import PipelineConfig
from inspectflow.errors import ConfigError, InspectflowError
from inspectflow.runner.remote import (
    MAX_POLL_ERRORS,
    RemoteError,
    RemoteRunFailed,
    RemoteRunTimeout,
    follow_run,
    kfp_cron,
    run_url,
    schedule_run,
    submit_run,
)

pytestmark = pytest.mark.usefixtures("isolated_kfp")


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The inspection pipeline (the textile one, where there is one per workload) compiled to YAML."""
    from kfp import compiler
    from kfp.dsl.base_component import BaseComponent

    from inspectflow.pipelines.inspection import inspection_pipeline

    pipeline = (
        inspection_pipeline
        if isinstance(inspection_pipeline, BaseComponent)
        else inspection_pipeline("textile")
    )
    path = tmp_path_factory.mktemp("package") / "p.yaml"
    compiler.Compiler().compile(pipeline, package_path=str(path))
    return path


def compiled_spec(package: Path) -> dict[str, Any]:
    """The package's PipelineSpec: its first YAML document (a second one is the platform spec)."""
    return dict(next(yaml.safe_load_all(package.read_text(encoding="utf-8"))))


@pytest.fixture
def kfp_server() -> Iterator[FakeKFP]:
    with FakeKFP() as server:
        yield server


@pytest.fixture
def arguments() -> dict[str, str]:
    return {"source": "s3://inspectflow/data/textile", "config": json.dumps(PipelineConfig().to_dict())}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sent_pipeline_spec(body: dict[str, Any]) -> dict[str, Any]:
    """The PipelineSpec of a create-run body (kfp nests it when the package has a platform spec)."""
    spec = body["pipeline_spec"]
    return dict(spec["pipeline_spec"]) if "platform_spec" in spec else dict(spec)


# -- submit_run ----------------------------------------------------------------------------------------------


def test_submit_run_sends_spec_parameters_experiment_and_name(
    kfp_server: FakeKFP, package: Path, arguments: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = submit_run(kfp_server.url, package, arguments, "textile nightly", "inspection")

    assert kfp_server.calls() == [HEALTHZ, LIST_EXPERIMENTS, CREATE_EXPERIMENT, CREATE_RUN]
    assert not kfp_server.unexpected()
    [experiment] = kfp_server.bodies("POST", f"{API}/experiments")
    assert experiment["display_name"] == "inspection"
    [experiment_id] = kfp_server.experiments
    [body] = kfp_server.bodies("POST", f"{API}/runs")
    assert body["display_name"] == "textile nightly"
    assert body["experiment_id"] == experiment_id
    assert body["runtime_config"]["parameters"] == arguments
    assert json.loads(body["runtime_config"]["parameters"]["config"]) == PipelineConfig().to_dict()
    compiled = compiled_spec(package)
    spec = sent_pipeline_spec(body)
    assert spec["pipelineInfo"]["name"] == compiled["pipelineInfo"]["name"]
    assert compiled["pipelineInfo"]["name"].startswith("inspectflow-")
    assert spec == compiled
    assert set(spec["root"]["inputDefinitions"]["parameters"]) >= {"source", "config"}
    assert run_id in kfp_server.runs
    assert capsys.readouterr().out == ""  # kfp's "Experiment details:/Run details:" lines are swallowed


def test_submit_run_reuses_an_existing_experiment(
    kfp_server: FakeKFP, package: Path, arguments: dict[str, str]
) -> None:
    experiment_id = kfp_server.add_experiment("inspection")
    kfp_server.add_experiment("other")

    submit_run(kfp_server.url, package, arguments, "run", "inspection")

    assert kfp_server.calls() == [HEALTHZ, LIST_EXPERIMENTS, CREATE_RUN]
    lookup = next(r for r in kfp_server.requests if r.call == LIST_EXPERIMENTS)
    [predicate] = json.loads(lookup.query["filter"][0])["predicates"]
    assert (predicate["key"], predicate["stringValue"]) == ("display_name", "inspection")
    assert kfp_server.bodies("POST", f"{API}/runs")[0]["experiment_id"] == experiment_id


def test_multi_user_deployment_needs_a_namespace_and_uses_it(
    package: Path, arguments: dict[str, str]
) -> None:
    with FakeKFP(multi_user=True) as server:
        with pytest.raises(ConfigError, match="multi-user"):
            submit_run(server.url, package, arguments, "run", "inspection")
        assert server.calls() == [HEALTHZ]

        submit_run(server.url, package, arguments, "run", "inspection", namespace="team-a")

        lookup = next(r for r in server.requests if r.call == LIST_EXPERIMENTS)
        assert lookup.query["namespace"] == ["team-a"]
        assert server.bodies("POST", f"{API}/experiments")[0]["namespace"] == "team-a"


def test_bearer_token_is_sent_and_a_missing_one_is_explained(
    package: Path, arguments: dict[str, str]
) -> None:
    with FakeKFP(token="s3cret") as server:
        with pytest.raises(RemoteError, match=r"HTTP 401.*bearer token") as caught:
            submit_run(server.url, package, arguments, "run", "inspection")
        assert caught.value.status == 401
        assert server.url in str(caught.value)

        submit_run(server.url, package, arguments, "run", "inspection", existing_token="s3cret")

        assert {r.headers.get("authorization") for r in server.requests[1:]} == {"Bearer s3cret"}


def test_server_errors_name_the_host_the_call_and_the_server_message(
    kfp_server: FakeKFP, package: Path, arguments: dict[str, str]
) -> None:
    kfp_server.respond("POST", f"{API}/runs", 500, {"error": "db down", "code": 13, "message": "db down"})

    with pytest.raises(RemoteError) as caught:
        submit_run(kfp_server.url, package, arguments, "run", "inspection")

    message = str(caught.value)
    assert kfp_server.url in message and "creating run 'run'" in message
    assert "HTTP 500" in message and "db down" in message
    assert "Traceback" not in message and "HTTPHeaderDict" not in message


def test_healthz_404_says_it_is_not_a_kfp_api(
    kfp_server: FakeKFP, package: Path, arguments: dict[str, str]
) -> None:
    kfp_server.respond("GET", f"{API}/healthz", 404, "404 page not found", content_type="text/plain")

    with pytest.raises(RemoteError, match=r"HTTP 404.*no KFP v2 API there"):
        submit_run(kfp_server.url, package, arguments, "run", "inspection")
    assert kfp_server.calls() == [HEALTHZ]


def test_failing_healthz_fails_at_once_rather_than_retrying(
    kfp_server: FakeKFP, package: Path, arguments: dict[str, str]
) -> None:
    kfp_server.respond("GET", f"{API}/healthz", 503)
    started = time.monotonic()

    with pytest.raises(RemoteError, match="HTTP 503"):
        submit_run(kfp_server.url, package, arguments, "run", "inspection")

    assert time.monotonic() - started < 5  # kfp.Client alone: 5 tries 5 s apart
    assert kfp_server.calls() == [HEALTHZ]


def test_login_redirect_is_caught_before_anything_is_submitted(
    kfp_server: FakeKFP, package: Path, arguments: dict[str, str]
) -> None:
    kfp_server.respond("GET", f"{API}/.*", 302, "", headers={"Location": "/dex/auth?client_id=kubeflow"})
    kfp_server.respond("GET", "/dex/auth", 200, "<html><body>Log in</body></html>", content_type="text/html")

    with pytest.raises(RemoteError, match=r"HTML page after a redirect to /dex/auth.*login"):
        submit_run(kfp_server.url, package, arguments, "run", "inspection")
    assert kfp_server.calls() == [HEALTHZ, "GET /dex/auth"]


@pytest.mark.parametrize("call", ["submit", "follow", "schedule"])
def test_unreachable_host_is_a_quick_clear_error(call: str, package: Path, arguments: dict[str, str]) -> None:
    host = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()

    with pytest.raises(RemoteError) as caught:
        if call == "submit":
            submit_run(host, package, arguments, "run", "inspection")
        elif call == "follow":
            follow_run(host, "some-run", timeout_s=60, poll_s=1)
        else:
            schedule_run(host, package, arguments, "nightly", "inspection", "0 3 * * 1")

    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert message.startswith(f"cannot reach KFP at {host} (GET /apis/v2beta1/healthz)")
    assert "Connection refused" in message and "object at 0x" not in message
    assert caught.value.status is None and caught.value.transient
    assert isinstance(caught.value, InspectflowError)


@pytest.mark.parametrize(
    ("host", "problem"),
    [("localhost:8080", "http:// or https://"), ("", "http:// or https://"), ("ftp://kfp", "http://")],
)
def test_bad_host_is_a_config_error(
    host: str, problem: str, package: Path, arguments: dict[str, str]
) -> None:
    with pytest.raises(ConfigError, match=problem):
        submit_run(host, package, arguments, "run", "inspection")


def test_package_and_arguments_are_checked_before_any_run_is_created(
    kfp_server: FakeKFP, package: Path, arguments: dict[str, str], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        submit_run(kfp_server.url, tmp_path / "missing.yaml", arguments, "run", "inspection")
    (tmp_path / "p.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"expected one of \.yaml"):
        submit_run(kfp_server.url, tmp_path / "p.json", arguments, "run", "inspection")
    (tmp_path / "other.yaml").write_text("a: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a compiled KFP pipeline"):
        submit_run(kfp_server.url, tmp_path / "other.yaml", arguments, "run", "inspection")
    with pytest.raises(
        ConfigError,
        match=r"unknown \['sorce'\]; missing \['source'\]; it takes \['config', 'resume_run_id', 'source'\]",
    ):
        submit_run(kfp_server.url, package, {"sorce": "x", "config": "{}"}, "run", "inspection")
    (tmp_path / "bogus.yaml").write_text(
        "pipelineInfo: {name: x}\nroot: {}\nnoSuchField: 1\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="not a valid KFP pipeline"):
        submit_run(kfp_server.url, tmp_path / "bogus.yaml", {}, "run", "inspection")
    with pytest.raises(ConfigError, match="non-empty name"):
        submit_run(kfp_server.url, package, arguments, " ", "inspection")
    assert CREATE_RUN not in kfp_server.calls()


# -- follow_run ----------------------------------------------------------------------------------------------


def test_follow_run_reports_each_state_until_success(
    kfp_server: FakeKFP, package: Path, arguments: dict[str, str]
) -> None:
    run_id = submit_run(kfp_server.url, package, arguments, "run", "inspection")
    seen: list[str] = []

    final = follow_run(kfp_server.url, run_id, timeout_s=4, poll_s=0.01, on_state=seen.append)

    assert final == "SUCCEEDED"
    assert seen == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert kfp_server.calls()[4:] == [HEALTHZ] + [f"GET {API}/runs/{run_id}"] * 3


def test_follow_run_reports_a_state_once_however_long_it_lasts(
    package: Path, arguments: dict[str, str]
) -> None:
    with FakeKFP(states=["PENDING", "RUNNING", "RUNNING", "RUNNING", "SKIPPED"]) as server:
        run_id = submit_run(server.url, package, arguments, "run", "inspection")
        seen: list[str] = []
        assert follow_run(server.url, run_id, 4, 0.01, seen.append) == "SKIPPED"
    assert seen == ["PENDING", "RUNNING", "SKIPPED"]


@pytest.mark.parametrize("end", ["FAILED", "CANCELED"])
def test_follow_run_raises_on_failure_with_run_id_error_and_url(
    end: str, package: Path, arguments: dict[str, str]
) -> None:
    with FakeKFP(
        states=["PENDING", "RUNNING", end], error_message="task 'train' failed: OOMKilled"
    ) as server:
        host = server.url
        run_id = submit_run(host, package, arguments, "run", "inspection")
        seen: list[str] = []
        with pytest.raises(RemoteRunFailed) as caught:
            follow_run(server.url, run_id, timeout_s=4, poll_s=0.01, on_state=seen.append)

    error = caught.value
    assert seen == ["PENDING", "RUNNING", end]
    assert (error.run_id, error.state) == (run_id, end)
    assert error.url == f"{host}/#/runs/details/{run_id}"
    assert run_id in str(error) and end in str(error) and error.url in str(error)
    assert "OOMKilled" in str(error)
    assert isinstance(error, InspectflowError) and not isinstance(error, RemoteRunTimeout)


def test_follow_run_times_out_with_the_last_state(package: Path, arguments: dict[str, str]) -> None:
    with FakeKFP(states=["PENDING", "RUNNING"]) as server:
        run_id = submit_run(server.url, package, arguments, "run", "inspection")
        started = time.monotonic()
        with pytest.raises(RemoteRunTimeout) as caught:
            follow_run(server.url, run_id, timeout_s=0.3, poll_s=0.05)

    assert 0.3 <= time.monotonic() - started < 3
    assert isinstance(caught.value, RemoteRunFailed)
    assert caught.value.state == "RUNNING"
    assert f"KFP run {run_id} still RUNNING after 0.3 s" in str(caught.value)


def test_follow_run_rides_out_a_few_failed_polls(
    kfp_server: FakeKFP, package: Path, arguments: dict[str, str]
) -> None:
    run_id = submit_run(kfp_server.url, package, arguments, "run", "inspection")
    kfp_server.respond("GET", f"{API}/runs/.*", 503, times=MAX_POLL_ERRORS)

    assert follow_run(kfp_server.url, run_id, timeout_s=4, poll_s=0.01) == "SUCCEEDED"


def test_follow_run_gives_up_after_too_many_failed_polls(
    kfp_server: FakeKFP, package: Path, arguments: dict[str, str]
) -> None:
    run_id = submit_run(kfp_server.url, package, arguments, "run", "inspection")
    kfp_server.respond("GET", f"{API}/runs/.*", 503)

    with pytest.raises(RemoteError, match=f"reading run {run_id}: HTTP 503"):
        follow_run(kfp_server.url, run_id, timeout_s=4, poll_s=0.01)
    assert kfp_server.calls().count(f"GET {API}/runs/{run_id}") == MAX_POLL_ERRORS + 1


def test_follow_run_of_an_unknown_run_fails_at_once(kfp_server: FakeKFP) -> None:
    with pytest.raises(RemoteError, match=r"reading run nope: HTTP 404.*not found") as caught:
        follow_run(kfp_server.url, "nope", timeout_s=4, poll_s=0.01)
    assert caught.value.status == 404
    assert kfp_server.calls() == [HEALTHZ, f"GET {API}/runs/nope"]


def test_run_url_follows_the_ui_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_url("http://localhost:8080", "r1") == "http://localhost:8080/#/runs/details/r1"
    monkeypatch.setenv("KF_PIPELINES_UI_ENDPOINT", "https://kubeflow.example.com/pipeline/")
    assert run_url("http://localhost:8888", "r1") == "https://kubeflow.example.com/pipeline/#/runs/details/r1"


# -- schedule_run --------------------------------------------------------------------------------------------


def test_schedule_run_creates_an_enabled_recurring_run_with_a_six_field_cron(
    kfp_server: FakeKFP, package: Path, arguments: dict[str, str]
) -> None:
    recurring_id = schedule_run(
        kfp_server.url, package, arguments, "textile weekly", "inspection", "0 3 * * 1", max_concurrency=2
    )

    assert kfp_server.calls() == [HEALTHZ, LIST_EXPERIMENTS, CREATE_EXPERIMENT, CREATE_RECURRING_RUN]
    [experiment_id] = kfp_server.experiments
    [body] = kfp_server.bodies("POST", f"{API}/recurringruns")
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 1"}}
    assert int(body["max_concurrency"]) == 2
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert body["display_name"] == "textile weekly"
    assert body["experiment_id"] == experiment_id
    assert body["runtime_config"]["parameters"] == arguments
    assert sent_pipeline_spec(body) == compiled_spec(package)
    assert kfp_server.recurring_runs[recurring_id]["status"] == "ENABLED"


def test_schedule_run_passes_catchup_and_a_six_field_cron_through(
    kfp_server: FakeKFP, package: Path, arguments: dict[str, str]
) -> None:
    schedule_run(kfp_server.url, package, arguments, "hourly", "inspection", "30 0 * * * *", no_catchup=False)

    [body] = kfp_server.bodies("POST", f"{API}/recurringruns")
    assert body["trigger"]["cron_schedule"]["cron"] == "30 0 * * * *"
    assert body["no_catchup"] is False
    assert int(body["max_concurrency"]) == 1


@pytest.mark.parametrize(
    ("cron", "max_concurrency", "problem"),
    [("0 3 * *", 1, "has 4 fields"), ("0 3 * * 1", 0, "1 to 10"), ("0 3 * * 1", 11, "1 to 10")],
)
def test_schedule_run_refuses_bad_settings_before_any_request(
    kfp_server: FakeKFP,
    package: Path,
    arguments: dict[str, str],
    cron: str,
    max_concurrency: int,
    problem: str,
) -> None:
    with pytest.raises(ConfigError, match=problem):
        schedule_run(kfp_server.url, package, arguments, "j", "e", cron, max_concurrency=max_concurrency)
    assert kfp_server.calls() == []


# -- kfp_cron ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("0 3 * * 1", "0 0 3 * * 1"),
        ("  0  3 * *   1 ", "0 0 3 * * 1"),
        ("*/15 * * * *", "0 */15 * * * *"),
        ("0 2 1-15/2 JAN,jul mon-FRI", "0 0 2 1-15/2 JAN,jul mon-FRI"),
        ("0 0 3 * * 1", "0 0 3 * * 1"),
        ("15 30 6 ? * SUN", "15 30 6 ? * SUN"),
        ("0 0 0 1 1 0", "0 0 0 1 1 0"),
    ],
)
def test_kfp_cron_gives_six_fields(given: str, expected: str) -> None:
    assert kfp_cron(given) == expected


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("0 0 3 * * 1 2026", "has 7 fields"),
        ("0 3 * *", "has 4 fields"),
        ("", "has 0 fields"),
        ("every monday", "has 2 fields"),
        ("a b c d e", "second field '0'|minute field 'a'"),
        ("0 3 * * 7", "day of week field '7': 7 is outside 0-6"),
        ("60 * * * *", "minute field '60': 60 is outside 0-59"),
        ("0 25 * * *", "hour field '25'"),
        ("0 3 0 * *", "day of month field '0'"),
        ("0 3 * 13 *", "month field '13'"),
        ("0 3 * FOO *", "'FOO' is not a number or one of JAN"),
        ("5-1 * * * *", "runs backwards"),
        ("*/0 * * * *", "a step of 0"),
        ("0 3 L * *", "'L' is not a number"),
        ("@daily", "has 1 fields"),
    ],
)
def test_kfp_cron_rejects_what_kfp_would_not_parse(expr: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        kfp_cron(expr)
    assert "six fields, seconds first" in str(caught.value)


# -- the fake itself -----------------------------------------------------------------------------------------


def test_fake_answers_unknown_calls_404_and_flags_them(kfp_server: FakeKFP) -> None:
    request = urllib.request.Request(f"{kfp_server.url}{API}/pipelines/upload", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)

    assert caught.value.code == 404
    assert json.loads(caught.value.read())["code"] == 5
    [unexpected] = kfp_server.unexpected()
    assert (unexpected.call, unexpected.body, unexpected.status) == (f"POST {API}/pipelines/upload", {}, 404)
