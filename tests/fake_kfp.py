"""A fake Kubeflow Pipelines API server for tests: real HTTP on 127.0.0.1, the v2beta1 REST calls only.

It answers exactly the calls that ``kfp.Client`` (kfp 2.17) makes to submit a run from a compiled package,
follow it and schedule a recurring run, with JSON bodies of the v2beta1 schema (snake_case field names, as
the KFP API server writes them):

- ``GET  /apis/v2beta1/healthz``
- ``GET  /apis/v2beta1/experiments`` (``filter`` on ``display_name``, ``namespace``), ``POST`` to create
- ``GET  /apis/v2beta1/experiments/{id}``
- ``POST /apis/v2beta1/runs``, ``GET /apis/v2beta1/runs/{id}``
- ``POST /apis/v2beta1/recurringruns``, ``GET /apis/v2beta1/recurringruns/{id}``

Every request is recorded (method, path, query, parsed JSON body, headers, status answered). Anything else
answers 404 (and is recorded), so a test sees when the client calls something unexpected. A run moves
through ``states`` on successive GETs and then stays in the last one. ``respond`` makes a path answer a
canned status (errors, redirects, HTML login pages), ``token`` makes every call require a bearer token.

Usage::

    with FakeKFP(states=["PENDING", "RUNNING", "SUCCEEDED"]) as kfp_server:
        submit_run(kfp_server.url, ...)
        assert kfp_server.calls() == [...]
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API = "/apis/v2beta1"
#: The calls the tests look for, as ``"METHOD path"``.
HEALTHZ = f"GET {API}/healthz"
LIST_EXPERIMENTS = f"GET {API}/experiments"
CREATE_EXPERIMENT = f"POST {API}/experiments"
CREATE_RUN = f"POST {API}/runs"
CREATE_RECURRING_RUN = f"POST {API}/recurringruns"
TERMINAL_STATES = {"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"}
# google.rpc.Code values the API server puts in its error bodies.
_GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 500: 13, 503: 14}


@dataclass
class Recorded:
    """One request the fake server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]
    status: int = 0
    unexpected: bool = False  # no route in the fake: the client called something it should not

    @property
    def call(self) -> str:
        """``"METHOD /path"``, without the query."""
        return f"{self.method} {self.path}"


@dataclass
class Canned:
    """A canned answer for requests whose method and path match (``path`` is a regular expression)."""

    method: str
    path: str
    status: int
    body: Any = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    times: int | None = None  # None: every time


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, message: str) -> dict[str, Any]:
    """An error body as the KFP API server (grpc-gateway) writes it."""
    return {"error": message, "code": _GRPC_CODES.get(status, 2), "message": message, "details": []}


class FakeKFP:
    """A fake KFP v2beta1 API server on 127.0.0.1 (a free port), run in a thread.

    Args:
        states: States a run reports on successive GETs (the last one sticks).
        multi_user: What ``healthz`` reports as ``multi_user``.
        token: When set, every request needs ``Authorization: Bearer <token>`` (else 401).
        error_message: The ``error.message`` of a run that ends FAILED or CANCELED.
    """

    def __init__(
        self,
        states: Iterable[str] = ("PENDING", "RUNNING", "SUCCEEDED"),
        multi_user: bool = False,
        token: str | None = None,
        error_message: str = "task 'train' failed: exit status 1",
    ) -> None:
        self.states = list(states)
        self.multi_user = multi_user
        self.token = token
        self.error_message = error_message
        self.requests: list[Recorded] = []
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.recurring_runs: dict[str, dict[str, Any]] = {}
        self.canned: list[Canned] = []
        self._gets: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        if self._server is None:
            raise RuntimeError("the fake KFP server is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeKFP:
        """Starts serving in a daemon thread."""
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-kfp", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving and closes the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeKFP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test helpers --------------------------------------------------------------------------------------

    def calls(self) -> list[str]:
        """``"METHOD /path"`` of every request so far, in order."""
        with self._lock:
            return [request.call for request in self.requests]

    def bodies(self, method: str, path: str) -> list[Any]:
        """JSON bodies of the requests to ``method path`` (exact path)."""
        with self._lock:
            return [r.body for r in self.requests if r.method == method and r.path == path]

    def unexpected(self) -> list[Recorded]:
        """Requests answered 404 because the fake does not know their path."""
        with self._lock:
            return [r for r in self.requests if r.unexpected]

    def add_experiment(self, name: str, namespace: str = "") -> str:
        """Creates an experiment as if it existed before; returns its id."""
        with self._lock:
            return self._new_experiment({"display_name": name, "namespace": namespace})["experiment_id"]

    def respond(
        self,
        method: str,
        path: str,
        status: int,
        body: Any = None,
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        times: int | None = None,
    ) -> None:
        """Makes requests matching ``method`` and the ``path`` regex answer ``status`` with ``body``.

        ``body`` None gives a KFP error body for error statuses; a str is sent as is. ``times`` limits
        how many requests get the canned answer (None: all).
        """
        self.canned.append(Canned(method, path, status, body, content_type, dict(headers or {}), times))

    # -- request handling (called by the handler, under the lock) ------------------------------------------

    def _new_experiment(self, body: dict[str, Any]) -> dict[str, Any]:
        experiment = {
            "experiment_id": str(uuid.uuid4()),
            "display_name": body.get("display_name", ""),
            "description": body.get("description") or "",
            "created_at": _now(),
            "namespace": body.get("namespace") or "",
            "storage_state": "AVAILABLE",
            "last_run_created_at": "1970-01-01T00:00:00Z",
        }
        self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    def handle(self, request: Recorded) -> tuple[int, Any, str, dict[str, str]]:
        """Answers one request: ``(status, body, content type, extra headers)``."""
        for canned in self.canned:
            if canned.method == request.method and re.fullmatch(canned.path, request.path):
                if canned.times is not None:
                    if canned.times <= 0:
                        continue
                    canned.times -= 1
                body = canned.body
                if body is None and canned.status >= 400:
                    body = _error(canned.status, f"canned HTTP {canned.status}")
                return canned.status, body, canned.content_type, canned.headers
        if self.token is not None and request.headers.get("authorization") != f"Bearer {self.token}":
            return (
                401,
                _error(401, "Unauthenticated: missing or invalid bearer token"),
                "application/json",
                {},
            )
        status, body = self._route(request)
        return status, body, "application/json", {}

    def _route(self, request: Recorded) -> tuple[int, Any]:
        method, path, body = request.method, request.path, request.body
        if method == "GET" and path == f"{API}/healthz":
            return 200, {"multi_user": self.multi_user, "pipeline_store": "database"}
        if path == f"{API}/experiments":
            if method == "GET":
                return self._list_experiments(request.query)
            if method == "POST":
                if not isinstance(body, dict) or not body.get("display_name"):
                    return 400, _error(400, "Invalid input error: Experiment name is empty")
                return 200, self._new_experiment(body)
        match = re.fullmatch(rf"{API}/experiments/([^/:]+)", path)
        if method == "GET" and match:
            experiment = self.experiments.get(match.group(1))
            return (200, experiment) if experiment else (404, _error(404, "experiment not found"))
        if method == "POST" and path == f"{API}/runs":
            return self._create_run(body)
        match = re.fullmatch(rf"{API}/runs/([^/:]+)", path)
        if method == "GET" and match:
            return self._get_run(match.group(1))
        if method == "POST" and path == f"{API}/recurringruns":
            return self._create_recurring_run(body)
        match = re.fullmatch(rf"{API}/recurringruns/([^/:]+)", path)
        if method == "GET" and match:
            recurring = self.recurring_runs.get(match.group(1))
            return (200, recurring) if recurring else (404, _error(404, "recurring run not found"))
        request.unexpected = True
        return 404, _error(404, f"fake KFP: no route for {request.call}")

    def _list_experiments(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        experiments = list(self.experiments.values())
        namespace = query.get("namespace", [""])[0]
        if namespace:
            experiments = [e for e in experiments if e["namespace"] == namespace]
        if "filter" in query:
            try:
                predicates = json.loads(query["filter"][0]).get("predicates", [])
            except (ValueError, AttributeError):
                return 400, _error(400, "Invalid input error: failed to parse the filter")
            for predicate in predicates:
                if predicate.get("operation") not in (1, "EQUALS"):
                    return 400, _error(400, f"fake KFP: unsupported filter operation {predicate}")
                key = predicate.get("key")
                value = predicate.get("stringValue", predicate.get("string_value"))
                experiments = [e for e in experiments if e.get(key) == value]
        if not experiments:  # the API server leaves out empty fields
            return 200, {}
        return 200, {"experiments": experiments, "total_size": len(experiments)}

    def _check_pipeline_source(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return "request body is not a JSON object"
        if not body.get("pipeline_spec") and not body.get("pipeline_version_reference"):
            return "Invalid input error: a pipeline spec or a pipeline version reference is required"
        experiment_id = body.get("experiment_id")
        if experiment_id and experiment_id not in self.experiments:
            return f"experiment {experiment_id} not found"
        return None

    def _create_run(self, body: Any) -> tuple[int, Any]:
        problem = self._check_pipeline_source(body)
        if problem:
            status = 404 if "not found" in problem else 400
            return status, _error(status, problem)
        now = _now()
        run = {
            "experiment_id": body.get("experiment_id", ""),
            "run_id": str(uuid.uuid4()),
            "display_name": body.get("display_name", ""),
            "storage_state": "AVAILABLE",
            "description": body.get("description", ""),
            "pipeline_spec": body.get("pipeline_spec"),
            "runtime_config": body.get("runtime_config", {}),
            "service_account": body.get("service_account") or "pipeline-runner",
            "created_at": now,
            "scheduled_at": now,
            "finished_at": "1970-01-01T00:00:00Z",
            "state": "PENDING",
            "state_history": [{"update_time": now, "state": "PENDING"}],
        }
        self.runs[run["run_id"]] = run
        self._gets[run["run_id"]] = 0
        return 200, run

    def _get_run(self, run_id: str) -> tuple[int, Any]:
        run = self.runs.get(run_id)
        if run is None:
            return 404, _error(404, f"Failed to get run: Run {run_id} not found")
        index = min(self._gets[run_id], len(self.states) - 1)
        self._gets[run_id] += 1
        state = self.states[index]
        now = _now()
        if run["state"] != state:
            run["state_history"].append({"update_time": now, "state": state})
        run["state"] = state
        if state in TERMINAL_STATES:
            run["finished_at"] = now
        if state in ("FAILED", "CANCELED"):
            run["error"] = {"code": 2, "message": self.error_message, "details": []}
        return 200, run

    def _create_recurring_run(self, body: Any) -> tuple[int, Any]:
        problem = self._check_pipeline_source(body)
        if problem:
            status = 404 if "not found" in problem else 400
            return status, _error(status, problem)
        max_concurrency = int(body.get("max_concurrency") or 0)
        if not 1 <= max_concurrency <= 10:
            message = (
                "Invalid input error: The max concurrency of the recurring run is out of range. "
                f"Support 1-10. Received {max_concurrency}."
            )
            return 400, _error(400, message)
        cron = ((body.get("trigger") or {}).get("cron_schedule") or {}).get("cron")
        # KFP parses crons with robfig/cron: six fields, seconds first. (It also takes five, read as
        # seconds-first with an optional day of week, which is why the fake refuses them.)
        if cron is not None and len(cron.split()) != 6:
            return 400, _error(400, f"fake KFP: cron {cron!r} does not have six fields")
        mode = body.get("mode", "MODE_UNSPECIFIED")
        now = _now()
        recurring = {
            "recurring_run_id": str(uuid.uuid4()),
            "display_name": body.get("display_name", ""),
            "description": body.get("description", ""),
            "pipeline_spec": body.get("pipeline_spec"),
            "runtime_config": body.get("runtime_config", {}),
            "service_account": body.get("service_account") or "pipeline-runner",
            "max_concurrency": str(max_concurrency),  # int64: a JSON string
            "trigger": body.get("trigger", {}),
            "mode": mode,
            "created_at": now,
            "updated_at": now,
            "status": "ENABLED" if mode == "ENABLE" else "DISABLED",
            "no_catchup": bool(body.get("no_catchup", False)),
            "namespace": body.get("namespace", ""),
            "experiment_id": body.get("experiment_id", ""),
        }
        self.recurring_runs[recurring["recurring_run_id"]] = recurring
        return 200, recurring


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKFP
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        request = Recorded(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            body=body,
            headers={key.lower(): value for key, value in self.headers.items()},
        )
        with self.fake._lock:
            status, answer, content_type, headers = self.fake.handle(request)
            request.status = status
            self.fake.requests.append(request)
        payload = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _serve
