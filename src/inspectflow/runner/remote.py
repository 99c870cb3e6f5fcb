"""The cluster path: submits, follows and schedules a compiled pipeline on Kubeflow Pipelines.

Everything goes through ``kfp.Client`` (the KFP v2beta1 REST API). On top of it, this module:

- checks the host once, up front, with a timeout (``GET /apis/v2beta1/healthz``): kfp alone retries a
  failing health check for about 25 s, logging a traceback each time, and follows a login redirect into an
  HTML page without noticing;
- turns every failure (host unreachable, HTTP 4xx/5xx, TLS) into a :class:`RemoteError` naming the host
  and what was being done, and a failed or cancelled run into :class:`RemoteRunFailed`;
- keeps kfp quiet: no ``Experiment details:``/``Run details:`` lines on stdout, no FutureWarning (callers
  print :func:`run_url` themselves);
- converts a standard five-field cron into KFP's six fields (:func:`kfp_cron`).

Authentication is kfp's: ``existing_token`` is sent as ``Authorization: Bearer <token>``; without it kfp
uses what ``~/.config/kfp/context.json`` holds (cookies, namespace), as the ``kfp`` CLI does.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from inspectflow.errors import ConfigError, InspectflowError

#: Terminal run states that are not failures.
SUCCESS_STATES = frozenset({"SUCCEEDED", "SKIPPED"})
#: Terminal run states that :func:`follow_run` raises :class:`RemoteRunFailed` for (``ERROR``: KFP v1).
FAILURE_STATES = frozenset({"FAILED", "CANCELED", "ERROR"})
#: Seconds to open a connection to the API server, and to wait for an answer, on the health check and on
#: each poll of :func:`follow_run` (kfp's other calls wait without limit once the host has answered).
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
#: Consecutive failed polls (unreachable, HTTP 5xx) :func:`follow_run` rides out before it gives up.
MAX_POLL_ERRORS = 3
#: What ``kfp.Client`` accepts as a pipeline package.
PACKAGE_SUFFIXES = (".yaml", ".yml", ".zip", ".tar.gz", ".tgz")
HEALTHZ = "GET /apis/v2beta1/healthz"

_CRON_HELP = (
    "KFP takes six fields, seconds first: 'second minute hour day-of-month month day-of-week' (for "
    "example '0 0 3 * * 1': Mondays at 03:00:00, in the scheduler's time zone, usually UTC); a standard "
    "five-field cron ('0 3 * * 1') is accepted and gets '0' seconds in front"
)
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1
    )
}
_DAYS = {name: number for number, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
#: (name, lowest, highest, names) of KFP's six cron fields (robfig/cron syntax).
_CRON_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _DAYS),
)
_CRON_ITEM = re.compile(
    r"(?:(?P<any>[*?])|(?P<low>[0-9A-Za-z]+)(?:-(?P<high>[0-9A-Za-z]+))?)(?:/(?P<step>\d+))?"
)


class RemoteError(InspectflowError):
    """Talking to the KFP API server failed: host unreachable, access refused, or an HTTP error.

    Attributes:
        status: The HTTP status the server answered, or None when it could not be reached.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        """Whether trying again later may work: no answer, HTTP 429 or 5xx."""
        return self.status is None or self.status == 429 or self.status >= 500


class RemoteRunFailed(InspectflowError):
    """A KFP run ended FAILED or CANCELED; or, as :class:`RemoteRunTimeout`, did not end in time.

    Attributes:
        run_id: The KFP run id.
        state: The run's last state.
        url: The run's page in the KFP UI.
    """

    def __init__(self, message: str, run_id: str, state: str, url: str) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.state = state
        self.url = url


class RemoteRunTimeout(RemoteRunFailed):
    """:func:`follow_run` stopped waiting; the run itself goes on on the cluster."""


def run_url(host: str, run_id: str) -> str:
    """Returns the KFP UI page of a run, under ``$KF_PIPELINES_UI_ENDPOINT`` (as kfp does) or ``host``."""
    ui = os.environ.get("KF_PIPELINES_UI_ENDPOINT") or host
    return f"{ui.rstrip('/')}/#/runs/details/{run_id}"


def kfp_cron(expr: str) -> str:
    """Returns a cron expression in KFP's six-field form (seconds first).

    KFP parses crons with robfig/cron, whose first field is seconds: given ``0 3 * * 1`` as is, it would
    run at minute 3 of every hour in January. So a standard five-field cron gets ``0`` seconds in front;
    six fields are kept as they are. Each field is checked against robfig/cron's syntax (``*``, ``?``,
    numbers, ``a-b`` ranges, ``/step``, comma lists; JAN-DEC and SUN-SAT names; day of week 0-6).

    Args:
        expr: ``minute hour day-of-month month day-of-week``, or six fields with seconds first.

    Returns:
        The six-field expression, fields separated by single spaces.

    Raises:
        ConfigError: Not five or six fields, or a field that KFP would refuse.
    """
    fields = expr.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    elif len(fields) != 6:
        raise ConfigError(f"cron {expr!r} has {len(fields)} fields; {_CRON_HELP}")
    for text, (name, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        problem = _cron_field_problem(text, low, high, names)
        if problem:
            raise ConfigError(f"cron {expr!r}: {name} field {text!r}: {problem}; {_CRON_HELP}")
    return " ".join(fields)


def _cron_field_problem(text: str, low: int, high: int, names: dict[str, int]) -> str | None:
    """Says what is wrong with one cron field, or returns None when robfig/cron accepts it."""

    def value(token: str) -> int | None:
        if token.isdigit():
            return int(token)
        return names.get(token.upper())

    for item in text.split(","):
        match = _CRON_ITEM.fullmatch(item)
        if match is None:
            return f"{item!r} is not *, ?, a number, a range a-b or one of these with /step"
        if match["step"] is not None and int(match["step"]) == 0:
            return "a step of 0"
        if match["any"]:
            continue
        bounds = [match["low"]] + ([match["high"]] if match["high"] else [])
        numbers = [value(token) for token in bounds]
        for token, number in zip(bounds, numbers, strict=True):
            if number is None:
                return f"{token!r} is not a number" + (f" or one of {', '.join(names)}" if names else "")
            if not low <= number <= high:
                return f"{number} is outside {low}-{high}"
        if (
            len(numbers) == 2
            and numbers[0] is not None
            and numbers[1] is not None
            and numbers[0] > numbers[1]
        ):
            return f"range {item!r} runs backwards"
    return None


def submit_run(
    host: str,
    package_path: Path,
    arguments: dict[str, str],
    run_name: str,
    experiment: str,
    namespace: str | None = None,
    existing_token: str | None = None,
) -> str:
    """Submits a compiled pipeline as one KFP run; returns the run id.

    Creates the experiment when there is none of that name (in ``namespace``), then the run from the
    package's pipeline spec with ``arguments`` as its runtime parameters.

    Args:
        host: KFP API or UI address, such as ``http://localhost:8080`` (a port-forward of
            ``svc/ml-pipeline-ui``) or ``https://kubeflow.example.com/pipeline``.
        package_path: The compiled pipeline (YAML, or a .zip/.tar.gz holding it).
        arguments: The pipeline's parameters (such as ``source`` and ``config``); checked against the
            pipeline's inputs when the package is YAML.
        run_name: Display name of the run.
        experiment: KFP experiment name; created when missing.
        namespace: Kubeflow profile namespace (multi-user deployments); None for single-user ones.
        existing_token: Bearer token for the API (multi-user deployments, behind an auth proxy).

    Returns:
        The KFP run id.

    Raises:
        ConfigError: Bad host, package, arguments, or a multi-user deployment without a namespace.
        RemoteError: The API server could not be reached or refused a call.
    """
    host = _normalize_host(host)
    if not run_name.strip():
        raise ConfigError("the KFP run needs a non-empty name")
    package = _check_package(package_path, arguments)
    client = _connect(host, namespace, existing_token)
    experiment_id = _experiment_id(client, host, experiment, namespace)
    with _calling(host, f"creating run {run_name!r} in experiment {experiment!r}"), _quiet_kfp():
        result = client.create_run_from_pipeline_package(
            pipeline_file=str(package),
            arguments=dict(arguments),
            run_name=run_name,
            experiment_id=experiment_id,
        )
    run_id = result.run_id
    if not run_id:
        raise RemoteError(f"KFP at {host} accepted run {run_name!r} but answered no run id")
    return str(run_id)


def follow_run(
    host: str,
    run_id: str,
    timeout_s: float,
    poll_s: float = 10.0,
    on_state: Callable[[str], None] | None = None,
    existing_token: str | None = None,
) -> str:
    """Polls a KFP run until it ends; returns its final state (``SUCCEEDED`` or ``SKIPPED``).

    Up to :data:`MAX_POLL_ERRORS` consecutive polls may fail for want of an answer or with HTTP 5xx (an
    API server restart, a dropped port-forward) before the error is raised.

    Args:
        host: KFP API or UI address (as for :func:`submit_run`).
        run_id: The KFP run id.
        timeout_s: Seconds to wait for the run to end.
        poll_s: Seconds between polls.
        on_state: Called with the run's state (``PENDING``, ``RUNNING``, ...) each time it changes, first
            with the state found at the first poll.
        existing_token: Bearer token for the API.

    Returns:
        The terminal state.

    Raises:
        RemoteRunFailed: The run ended FAILED or CANCELED (message: run id, state, KFP's error, run URL).
        RemoteRunTimeout: The run had not ended after ``timeout_s`` (it goes on on the cluster).
        RemoteError: The API server could not be reached or refused a call (HTTP 404: no such run).
    """
    host = _normalize_host(host)
    if timeout_s <= 0 or poll_s <= 0:
        raise ConfigError(f"timeout_s ({timeout_s}) and poll_s ({poll_s}) must be positive")
    url = run_url(host, run_id)
    deadline = time.monotonic() + timeout_s
    client = _connect(host, None, existing_token, needs_namespace=False)
    state: str | None = None
    failures = 0
    while True:
        try:
            with _calling(host, f"reading run {run_id}"), _quiet_kfp():
                run = client.get_run(run_id)
        except RemoteError as error:
            failures += 1
            if not error.transient or failures > MAX_POLL_ERRORS or time.monotonic() >= deadline:
                raise
        else:
            failures = 0
            current = str(run.state or "RUNTIME_STATE_UNSPECIFIED").upper()
            if current != state:
                state = current
                if on_state is not None:
                    on_state(state)
            if state in SUCCESS_STATES:
                return state
            if state in FAILURE_STATES:
                detail = getattr(run.error, "message", None) if run.error is not None else None
                reason = f": {detail}" if detail else ""
                raise RemoteRunFailed(f"KFP run {run_id} {state}{reason}; see {url}", run_id, state, url)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            last = state or "unknown"
            message = f"KFP run {run_id} still {last} after {timeout_s:g} s; it goes on on the cluster: {url}"
            raise RemoteRunTimeout(message, run_id, last, url)
        time.sleep(min(poll_s, remaining))


def schedule_run(
    host: str,
    package_path: Path,
    arguments: dict[str, str],
    job_name: str,
    experiment: str,
    cron: str,
    max_concurrency: int = 1,
    no_catchup: bool = True,
    namespace: str | None = None,
    existing_token: str | None = None,
) -> str:
    """Creates an enabled KFP recurring run of a compiled pipeline; returns its id.

    Args:
        host: KFP API or UI address (as for :func:`submit_run`).
        package_path: The compiled pipeline; its spec is stored with the recurring run.
        arguments: The pipeline's parameters, the same for every run.
        job_name: Display name of the recurring run.
        experiment: KFP experiment the runs go to; created when missing.
        cron: Five-field cron (``0 3 * * 1``) or KFP's six fields (see :func:`kfp_cron`).
        max_concurrency: Runs of this schedule allowed at once (KFP accepts 1-10).
        no_catchup: After a pause, start only the latest missed run rather than one per missed slot.
        namespace: Kubeflow profile namespace (multi-user deployments).
        existing_token: Bearer token for the API.

    Returns:
        The KFP recurring run id.

    Raises:
        ConfigError: Bad cron, max_concurrency, host, package or arguments.
        RemoteError: The API server could not be reached or refused a call.
    """
    cron6 = kfp_cron(cron)
    if not 1 <= max_concurrency <= 10:
        raise ConfigError(f"max_concurrency={max_concurrency}: KFP accepts 1 to 10 concurrent runs")
    host = _normalize_host(host)
    if not job_name.strip():
        raise ConfigError("the KFP recurring run needs a non-empty name")
    package = _check_package(package_path, arguments)
    client = _connect(host, namespace, existing_token)
    experiment_id = _experiment_id(client, host, experiment, namespace)
    with _calling(host, f"creating recurring run {job_name!r} ({cron6})"), _quiet_kfp():
        recurring = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=job_name,
            cron_expression=cron6,
            max_concurrency=max_concurrency,
            no_catchup=no_catchup,
            params=dict(arguments),
            pipeline_package_path=str(package),
            enabled=True,
        )
    recurring_id = recurring.recurring_run_id
    if not recurring_id:
        raise RemoteError(f"KFP at {host} accepted recurring run {job_name!r} but answered no id")
    return str(recurring_id)


# -- connection ----------------------------------------------------------------------------------------------


def _normalize_host(host: str) -> str:
    host = host.strip().rstrip("/")
    if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", host):
        raise ConfigError(
            f"KFP host {host!r}: expected an http:// or https:// URL, such as http://localhost:8080 or "
            "https://kubeflow.example.com/pipeline"
        )
    return host


@functools.cache
def _client_class() -> type:
    """``kfp.Client`` with a one-try, time-limited health check and time-limited run polls."""
    import kfp
    import kfp_server_api

    class _Client(kfp.Client):
        def __init__(self, host: str, **kwargs: Any) -> None:
            self.inspectflow_host = host
            self.inspectflow_health: dict[str, Any] | None = None
            super().__init__(host=host, **kwargs)

        def get_kfp_healthz(self, sleep_duration: int = 5) -> Any:
            """One try with a timeout (kfp: 5 tries 5 s apart); refuses answers that are not JSON."""
            del sleep_duration
            response = self._healthz_api.healthz_service_get_healthz(
                _preload_content=False, _request_timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
            )
            try:
                health = _parse_healthz(self.inspectflow_host, response)
            finally:
                response.release_conn()
            self.inspectflow_health = health
            return kfp_server_api.V2beta1GetHealthzResponse(
                multi_user=health.get("multi_user"), pipeline_store=health.get("pipeline_store")
            )

        def get_run(self, run_id: str) -> Any:
            """``Client.get_run`` with a timeout."""
            return self._run_api.run_service_get_run(
                run_id=run_id, _request_timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
            )

    return _Client


def _parse_healthz(host: str, response: Any) -> dict[str, Any]:
    """Reads the raw healthz answer; an HTML page (a login redirect) or non-JSON raises RemoteError."""
    content_type = str(response.headers.get("Content-Type") or "")
    history = getattr(getattr(response, "retries", None), "history", None) or ()
    redirects = [step.redirect_location for step in history if getattr(step, "redirect_location", None)]
    try:
        health = json.loads(response.data or b"null")
    except ValueError:
        health = None
    if not isinstance(health, dict):
        where = f" after a redirect to {redirects[-1]}" if redirects else ""
        kind = "an HTML page" if "html" in content_type else f"{content_type or 'a body'} that is not JSON"
        raise RemoteError(
            f"KFP at {host}: {HEALTHZ} answered {kind}{where}; a login page? The KFP API there needs a "
            "bearer token (existing_token), or the URL is not the KFP API",
            status=response.status,
        )
    return health


def _connect(
    host: str, namespace: str | None, existing_token: str | None, needs_namespace: bool = True
) -> Any:
    """Returns a ``kfp.Client`` for ``host`` whose health check has passed.

    ``needs_namespace``: the calls to come list or create experiments, which a multi-user deployment
    only allows within a namespace.
    """
    client_class = _client_class()
    with _calling(host, HEALTHZ), _quiet_kfp():
        # kfp takes namespace="kubeflow" (its default) for "not given".
        client = client_class(host, namespace=namespace or "kubeflow", existing_token=existing_token)
        if client.inspectflow_health is None:  # kfp skips the health check when a namespace is known
            client.get_kfp_healthz()
    health = client.inspectflow_health or {}
    if needs_namespace and health.get("multi_user") and not (namespace or client.get_user_namespace()):
        raise ConfigError(
            f"KFP at {host} is a multi-user deployment: give the namespace of your Kubeflow profile "
            "(such as kubeflow-user-example-com)"
        )
    return client


def _experiment_id(client: Any, host: str, experiment: str, namespace: str | None) -> str:
    """Finds the experiment by name (in ``namespace``), creating it when missing; returns its id."""
    if not experiment.strip():
        raise ConfigError("the KFP experiment needs a non-empty name")
    with _calling(host, f"finding or creating experiment {experiment!r}"), _quiet_kfp():
        found = client.create_experiment(name=experiment, namespace=namespace)
    if not found.experiment_id:
        raise RemoteError(f"KFP at {host} answered no id for experiment {experiment!r}")
    return str(found.experiment_id)


@contextlib.contextmanager
def _quiet_kfp() -> Iterator[None]:
    """Silences kfp's own output: its 'Run details: <link>' prints and its FutureWarning."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.filterwarnings("ignore", message="This client only works", category=FutureWarning)
        yield


@contextlib.contextmanager
def _calling(host: str, action: str) -> Iterator[None]:
    """Turns errors of the kfp calls inside into a :class:`RemoteError` naming ``host`` and ``action``."""
    import kfp_server_api
    import urllib3
    from google.protobuf import json_format

    try:
        yield
    except (json_format.Error, yaml.YAMLError) as error:  # kfp reading the package
        raise ConfigError(f"{action}: the pipeline package is not a valid KFP pipeline: {error}") from error
    except kfp_server_api.ApiException as error:
        raise RemoteError(_http_problem(host, action, error), status=error.status or None) from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        message = f"cannot reach KFP at {host} ({action}): {_reason(error)}"
        if HEALTHZ in action:
            message += "; is the address right, and the API server (or its port-forward) up?"
        raise RemoteError(message) from error
    except ValueError as error:  # kfp: a package it cannot read, several experiments of one name
        raise RemoteError(f"KFP at {host}, {action}: {error}") from error


def _http_problem(host: str, action: str, error: Any) -> str:
    """Describes an HTTP error answer of the API server."""
    status = int(error.status or 0)
    if status == 0:  # kfp_server_api's way of reporting TLS errors
        return f"KFP at {host}, {action}: {str(error.reason).strip()}"
    message = f"KFP at {host}, {action}: HTTP {status} {error.reason or ''}".rstrip()
    detail = _body_detail(error.body)
    if detail:
        message += f": {detail}"
    if status in (401, 403):
        message += (
            "; the API needs a bearer token with access (existing_token) and, on a multi-user deployment, "
            "the namespace of a profile you belong to"
        )
    elif 300 <= status < 400:
        location = (error.headers or {}).get("Location")
        message += f"; redirected to {location} (a login page? use the API URL or a token)"
    elif status == 404 and HEALTHZ in action:
        message += (
            "; no KFP v2 API there: give the KFP UI or API address, such as http://localhost:8080 after "
            "`kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80`"
        )
    return message


def _body_detail(body: Any, limit: int = 300) -> str:
    """The useful part of an error body: the API server's JSON ``message``/``error``, else its text."""
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        text = str(parsed.get("message") or parsed.get("error") or text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reason(error: BaseException) -> str:
    """A readable reason for a connection failure, without urllib3's object reprs."""
    reason = getattr(error, "reason", None)
    text = str(reason if isinstance(reason, BaseException) else error)
    if text.startswith("(") and text.endswith(")"):  # urllib3's (connection, message) tuples
        text = text[1:-1]
    text = re.sub(
        r"^<?[\w.]*Connection(?:Pool)?(?:\(host=[^)]*\))?(?: object)?(?: at 0x[0-9a-f]+)?>?[,:]?\s*", "", text
    )
    return text.strip(" '\"") or type(error).__name__


# -- the package ---------------------------------------------------------------------------------------------


def _check_package(package_path: Path, arguments: Mapping[str, str]) -> Path:
    """Checks that the package exists and, for YAML, that ``arguments`` fit the pipeline's inputs."""
    if not package_path.is_file():
        raise ConfigError(f"pipeline package {package_path}: no such file")
    if not package_path.name.endswith(PACKAGE_SUFFIXES):
        raise ConfigError(f"pipeline package {package_path}: expected one of {', '.join(PACKAGE_SUFFIXES)}")
    if not package_path.name.endswith((".yaml", ".yml")):
        return package_path
    try:
        with package_path.open(encoding="utf-8") as handle:
            spec = next(iter(yaml.safe_load_all(handle)), None)
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"pipeline package {package_path}: unreadable YAML: {error}") from error
    if not isinstance(spec, dict) or "pipelineInfo" not in spec or "root" not in spec:
        raise ConfigError(
            f"pipeline package {package_path}: not a compiled KFP pipeline (no pipelineInfo/root)"
        )
    parameters = ((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    unknown = sorted(set(arguments) - set(parameters))
    missing = sorted(
        name
        for name, definition in parameters.items()
        if name not in arguments
        and not (
            isinstance(definition, dict) and (definition.get("isOptional") or "defaultValue" in definition)
        )
    )
    if unknown or missing:
        name = spec["pipelineInfo"].get("name", package_path.name)
        problems = [f"unknown {unknown}" if unknown else "", f"missing {missing}" if missing else ""]
        raise ConfigError(
            f"arguments for pipeline {name!r}: {'; '.join(p for p in problems if p)}; "
            f"it takes {sorted(parameters)}"
        )
    return package_path
