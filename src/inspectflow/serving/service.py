"""The inference service: a registered model at an alias, served by KServe's Python model server.

It speaks the Open Inference Protocol (KServe v2) and follows the registry.

``inspectflow serve`` runs it on a line PC; on a cluster the same image runs it as a KServe custom predictor
(``infra/k8s/serving``). Routes (KServe's, and two of ours):

- ``POST /v2/models/<name>/infer``: one ``BYTES`` input, one encoded image (PNG, JPEG, BMP, TIFF) per
  element, base64 in JSON (answered by :class:`JsonInferRoute`) or raw with the binary data extension
  (KServe's route); the answer's ``predictions`` output holds one JSON record per image, what
  ``inspectflow predict`` writes (without the file path), and ``model_version`` names the version that
  answered.
- ``POST /v2/models/<name>/images``: the same images as ``multipart/form-data`` files; the records as JSON.
- ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2/models/<name>/ready``: the probes;
  ``GET /v2/models/<name>/status``: the version served, since when, the last load that failed and why.
- ``GET /metrics``: Prometheus (``inspectflow_*``: requests by version and outcome, latency, images by
  decision, images per forward pass, model loads).

Every request is answered by one version, read once: a swap (the alias moved, the new version loaded beside
the old) replaces one reference, so a request in flight finishes on the version it started with.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import logging
import random
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import Request  # at module level: FastAPI resolves the routes' annotations here
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from inspectflow.serving.requests import (
    BadRequest,
    BodyLimit,
    RequestImage,
    error_response,
    images_from_form,
    images_from_infer_request,
    json_response,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from inspectflow.config import ServeConfig
    from inspectflow.serving.predict import EngineChoice, LoadedModel
    from inspectflow.tasks.base import Prediction

log = logging.getLogger("inspectflow.serve")

REQUESTS = Counter(
    "inspectflow_requests",
    "Requests, by the version that answered and outcome",
    ["model", "version", "outcome"],
)
LATENCY = Histogram(
    "inspectflow_request_seconds",
    "Time from a request's images to its records (decoding, preprocessing, the model, records)",
    ["model", "version"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
IMAGES = Counter(
    "inspectflow_images",
    "Images predicted, by decision (defective, clean; undecided for a classifier without a good class)",
    ["model", "version", "decision"],
)
BATCH = Histogram(
    "inspectflow_batch_images",
    "Images per forward pass: one request's, or several waiting requests' together",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
LOADS = Counter("inspectflow_model_loads", "Versions loaded, by outcome", ["model", "version", "outcome"])
SERVED_VERSION = Gauge("inspectflow_served_version", "The registered version answering", ["model"])


@dataclass(frozen=True)
class Served:
    """One loaded version: what answers, and since when."""

    version: str
    model: LoadedModel
    loaded_at: str


@dataclass(frozen=True)
class _Job:
    """A request waiting for the inference thread: the version it read, its images, where its answer goes."""

    served: Served
    images: list[RequestImage]
    loop: asyncio.AbstractEventLoop
    answer: asyncio.Future[tuple[list[dict[str, Any]], int]]  # its records, and the forward pass's size

    def settle(
        self, answer: tuple[list[dict[str, Any]], int] | None = None, error: Exception | None = None
    ) -> None:
        """Hands the answer (or the error) to the request's event loop, from the inference thread."""
        self.loop.call_soon_threadsafe(_settled, self.answer, answer, error)


def _settled(future: asyncio.Future[Any], answer: Any, error: Exception | None) -> None:
    if future.done():  # the client went away and its request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(answer)


class RegistryModel:
    """The KServe model of one registered model: it loads the version the alias names and follows it.

    Built by :func:`serve` as a subclass of ``kserve.Model`` (KServe is imported only there).
    """

    name: str  # kserve.Model's
    ready: bool

    def __init__(self, config: ServeConfig) -> None:
        super().__init__(config.model)  # type: ignore[call-arg]  # kserve.Model(name)
        self.config = config
        self.served: Served | None = None
        self.last_error: str | None = None
        self._failed_version: str | None = None
        self._registry_down = False
        self._sampler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sample")
        # Models are built and run in this one thread only: once PyTorch had run parallel work in two
        # threads of a process, its convolutions ran 2-3x slower in both (benchmarks/README.md).
        self._inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._waiting: deque[_Job] = deque()  # requests for the inference thread, oldest first

    def load(self) -> bool:
        """Loads the version to serve; raises whatever stops it (the service does not start)."""
        version = self._target_version()
        self.served = self._load(version)
        self.ready = True
        return True

    def refresh(self) -> None:
        """Loads and swaps to the version the alias names now, if it moved; a failure keeps the old one."""
        served = self.served
        try:
            version = self._target_version()
        except Exception as exc:  # the registry unreachable: keep serving what we have, say so once
            if not self._registry_down:
                log.warning("registry not reachable", extra={"fields": {"error": _one_line(exc)}})
            self._registry_down = True
            return
        if self._registry_down:
            log.info("registry reachable again", extra={"fields": {"alias_version": version}})
        self._registry_down = False
        if served is None or version in (served.version, self._failed_version):
            return
        try:
            candidate = self._load(version)
        except Exception as exc:
            self._failed_version = version
            self.last_error = f"version {version} failed to load: {_one_line(exc)}"
            LOADS.labels(self.name, version, "failed").inc()
            log.error(
                "load failed",
                extra={"fields": {"version": version, "serving": served.version, "error": self.last_error}},
            )
            return
        self.served = candidate  # the swap: one reference; requests in flight keep the one they read
        self._failed_version, self.last_error = None, None
        log.info(
            "swapped", extra={"fields": {"from": served.version, "to": version, "alias": self.config.alias}}
        )

    def _target_version(self) -> str:
        if self.config.uri:
            return self.config.uri.rstrip("/").rsplit("/", 1)[-1]
        from mlflow import MlflowClient

        return str(MlflowClient().get_model_version_by_alias(self.config.model, self.config.alias).version)

    def _load(self, version: str) -> Served:
        """Downloads a version here, then builds it and runs it once on a blank image in the inference thread.

        A version that cannot predict is never swapped in, and the first request does not wait for the
        engine's first-call planning. Requests wait only while it is built, not while it downloads.
        """
        import mlflow

        uri = self.config.uri or f"models:/{self.config.model}/{version}"
        with tempfile.TemporaryDirectory(prefix="inspectflow-serve-") as folder:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder)
            loaded = self._inference.submit(_built, local, self.config.engine).result()
        loaded = dataclasses.replace(loaded, uri=uri)
        LOADS.labels(self.name, version, "loaded").inc()
        if version.isdigit():
            SERVED_VERSION.labels(self.name).set(int(version))
        log.info("loaded", extra={"fields": {"version": version, "uri": uri, "engine": loaded.engine}})
        return Served(version, loaded, datetime.now(UTC).isoformat(timespec="seconds"))

    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        """Answers an Open Inference Protocol request (KServe calls this)."""
        from kserve import InferOutput, InferResponse

        images = images_from_infer_request(payload.inputs, self.config.max_images)
        served, records = await self.answer(images)
        request_id = payload.id or str(uuid.uuid4())
        return InferResponse(
            request_id, self.name, [InferOutput(**predictions_output(records))], model_version=served.version
        )

    async def answer(self, images: list[RequestImage]) -> tuple[Served, list[dict[str, Any]]]:
        """The records of a request's images, decoded and predicted in the inference thread.

        The request waits with any others that arrive while the model is busy; the inference thread takes
        them all at once, through the model in one forward pass (see :meth:`_drain`).
        """
        loop = asyncio.get_running_loop()
        served = self.served  # one read: the whole request is answered by one version
        assert served is not None  # KServe routes no request before load() made the model ready
        started = time.perf_counter()
        job = _Job(served, images, loop, loop.create_future())
        self._waiting.append(job)
        self._inference.submit(self._drain)  # one drain per request: none waits past the one after it
        records, batch = await job.answer
        self._count(served, records, time.perf_counter() - started, batch)
        if self.config.sample_to:
            self._sample(served, images)
        return served, records

    def _drain(self) -> None:
        """Answers the requests waiting now (up to ``max_batch`` images), in the inference thread.

        Batching waiting requests into one forward pass is what lets many small requests reach the
        model's batched speed (the textile CNN predicts 8 images 2.4x faster per image than one); a
        request that arrives to an idle model waits for nobody. Decoding happens here too: in another
        thread it took a core from a model whose threads were meant to have both (the dagm U-Net served
        at 0.74x in-process, against 0.82-0.86x).
        """
        jobs: list[_Job] = []
        images = 0
        while self._waiting and (not jobs or images + len(self._waiting[0].images) <= self.config.max_batch):
            jobs.append(self._waiting.popleft())
            images += len(jobs[-1].images)
        versions: dict[int, list[_Job]] = {}  # a swap may fall between two requests
        for job in jobs:
            versions.setdefault(id(job.served), []).append(job)
        for together in versions.values():
            try:
                self._predict_together(together[0].served, together)
            except Exception as exc:  # whatever it was, no request may be left waiting
                log.exception("predict failed", extra={"fields": {"version": together[0].served.version}})
                for job in together:
                    job.settle(error=exc)

    def _predict_together(self, served: Served, jobs: list[_Job]) -> None:
        from inspectflow.serving.predict import predict_pixels
        from inspectflow.tasks.base import PredictedImage

        decoded: list[tuple[_Job, list[np.ndarray]]] = []
        for job in jobs:
            try:
                decoded.append((job, [self._decode(image) for image in job.images]))
            except BadRequest as exc:  # this request's fault only: the others are answered
                REQUESTS.labels(self.name, served.version, "refused").inc()
                log.info(
                    "refused",
                    extra={"fields": {"version": served.version, "status": exc.status, "error": exc.message}},
                )
                job.settle(error=exc)
        if not decoded:
            return
        pixels = [array for _, arrays in decoded for array in arrays]
        BATCH.labels(self.name).observe(len(pixels))
        described = [
            PredictedImage(Path(image.name), array.shape[0], array.shape[1], number)
            for job, arrays in decoded
            for number, (image, array) in enumerate(zip(job.images, arrays, strict=True))
        ]
        try:
            predictions = iter(predict_pixels(served.model, pixels, described))
        except Exception as exc:
            log.exception("predict failed", extra={"fields": {"version": served.version}})
            for job, _ in decoded:
                REQUESTS.labels(self.name, served.version, "failed").inc()
                job.settle(error=exc)
            return
        for job, _ in decoded:
            records = [_served_record(image.name, next(predictions)) for image in job.images]
            job.settle(answer=(records, len(pixels)))

    def _decode(self, image: RequestImage) -> np.ndarray:
        from inspectflow.imaging import decode

        pixels, error = decode(image.content, self.config.max_pixels)
        if pixels is None:
            raise BadRequest(400, f"{image.name}: cannot be decoded ({error})")
        return pixels[..., np.newaxis] if pixels.ndim == 2 else pixels

    def _count(self, served: Served, records: list[dict[str, Any]], seconds: float, batch: int) -> None:
        REQUESTS.labels(self.name, served.version, "ok").inc()
        LATENCY.labels(self.name, served.version).observe(seconds)
        decisions = [_decision(record.get("defective")) for record in records]
        for decision in set(decisions):
            IMAGES.labels(self.name, served.version, decision).inc(decisions.count(decision))
        fields = {
            "version": served.version,
            "images": len(records),
            "defective": decisions.count("defective"),
            "batch": batch,  # images in the forward pass that answered it, this request's and others'
        }
        log.info("predicted", extra={"fields": {**fields, "ms": round(seconds * 1000, 1)}})

    def _sample(self, served: Served, images: list[RequestImage]) -> None:
        """Hands a random share of the images to a writer thread: the answer does not wait for storage."""
        chosen = [image for image in images if random.random() < self.config.sample_rate]
        if chosen:
            self._sampler.submit(_write_samples, self.config.sample_to, self.name, served.version, chosen)

    def status(self) -> dict[str, Any]:
        """What the status route shows: the version served and the last failed load."""
        served = self.served
        return {
            "model": self.name,
            "alias": None if self.config.uri else self.config.alias,
            "uri": served.model.uri if served else None,
            "version": served.version if served else None,
            "engine": served.model.engine if served else None,
            "loaded_at": served.loaded_at if served else None,
            "ready": bool(self.ready),
            "last_error": self.last_error,
        }


class JsonInferRoute:
    """ASGI middleware: the Open Inference Protocol's infer route for JSON bodies, answered directly.

    Requests are read and answers written with the models KServe's own route uses (its pydantic
    ``InferenceRequest`` and ``InferenceResponse``), but without FastAPI's routing, dependency solving and
    response encoding between them: on the textile CNN (1 ms an image in ONNX Runtime) those took most of
    the event loop's time per request, and the loop, not the model, limited the images served a second
    (benchmarks/README.md). Anything else (the binary data extension, other routes) goes on to KServe.
    """

    def __init__(self, app: Any, model: RegistryModel) -> None:
        self.app = app
        self.model = model
        self.path = f"/v2/models/{model.name}/infer"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Answers a JSON infer request; passes anything else on."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if b"inference-header-content-length" in headers or not headers.get(b"content-type", b"").startswith(
            b"application/json"
        ):
            await self.app(scope, receive, send)
            return
        try:
            status, body = 200, await self._answer(await _body(receive))
        except Exception as exc:
            error = _invalid(exc) if isinstance(exc, ValidationError) else exc
            if isinstance(error, BadRequest):
                await error_response(send, error)
                return
            # the model failed (logged and counted where it ran)
            status, body = 500, json.dumps({"error": _one_line(exc)}).encode()
        await json_response(send, status, body)

    async def _answer(self, body: bytes) -> bytes:
        from kserve.protocol.rest.v2_datamodels import InferenceRequest, InferenceResponse

        request = InferenceRequest.model_validate_json(body)
        images = images_from_infer_request(request.inputs, self.model.config.max_images)
        served, records = await self.model.answer(images)
        response = InferenceResponse(
            model_name=self.model.name,
            model_version=served.version,
            id=request.id or str(uuid.uuid4()),
            outputs=[predictions_output(records)],
        )
        return response.model_dump_json(exclude_none=True).encode()


def predictions_output(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer's one output: ``predictions``, a JSON record per image, in the request's order."""
    return {
        "name": "predictions",
        "shape": [len(records)],
        "datatype": "BYTES",
        "data": [json.dumps(record) for record in records],
    }


async def _body(receive: Any) -> bytes:
    """A request's whole body (BodyLimit, outside, refuses one too large while it is read)."""
    chunks = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest(400, "the client closed the connection before sending its body")
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def _built(local: str, engine: EngineChoice) -> LoadedModel:
    """A downloaded version, built and run once on a blank image at its input size."""
    from inspectflow.serving.predict import load_model, predict_pixels
    from inspectflow.tasks.base import PredictedImage

    loaded = load_model(local, engine, idle_spin=False)  # the event loop needs the core between runs
    preprocess = loaded.spec.preprocess
    blank = np.zeros((preprocess.height, preprocess.width, preprocess.channels), dtype=np.uint8)
    predict_pixels(loaded, [blank], [PredictedImage(Path("warm-up"), blank.shape[0], blank.shape[1], 0)])
    return loaded


def _decision(defective: object) -> str:
    """``defective`` or ``clean``; ``undecided`` for a classifier without a good class (no decision)."""
    return "undecided" if defective is None else "defective" if defective else "clean"


def _served_record(name: str, prediction: Prediction) -> dict[str, Any]:
    """The record ``predict`` writes, named by the request's image, with its files base64-encoded."""
    served = {"image": name, **{key: value for key, value in prediction.record.items() if key != "path"}}
    for file_name, content in prediction.files.items():
        served[f"{file_name}_png"] = base64.b64encode(content).decode("ascii")
    return served


def _write_samples(destination: str, model: str, version: str, images: list[RequestImage]) -> None:
    """Writes served images under ``<destination>/<date>/`` (a folder or an S3 prefix) for the drift watch."""
    from PIL import Image

    from inspectflow.data.transfer import put_file

    day = datetime.now(UTC).strftime("%Y-%m-%d")
    for image in images:
        try:
            with Image.open(io.BytesIO(image.content)) as opened:
                suffix = {"JPEG": ".jpg", "TIFF": ".tif"}.get(
                    str(opened.format), f".{str(opened.format).lower()}"
                )
            put_file(destination, f"{day}/{model}-v{version}-{uuid.uuid4().hex[:12]}{suffix}", image.content)
        except Exception as exc:  # a sample lost must not take the service down
            log.warning("sample not written", extra={"fields": {"error": _one_line(exc)}})


def _invalid(exc: Exception) -> BadRequest:
    """A request FastAPI refused: its status, and for a body it could not read its first problem and where."""
    if isinstance(exc, HTTPException):
        return BadRequest(exc.status_code, str(exc.detail))
    errors: list[dict[str, Any]] = getattr(exc, "errors", list)()
    if not errors:
        return BadRequest(400, f"not a valid inference request: {exc}")
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return BadRequest(400, f"not a valid inference request: {first.get('msg', 'invalid')} at {where}")


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


class JsonLines(logging.Formatter):
    """One JSON object per log line: time, level, event and its fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line."""
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            line["error"] = _one_line(record.exc_info[1]) if record.exc_info[1] else ""
        return json.dumps(line)


def serve(config: ServeConfig) -> None:
    """Loads the model and serves it until SIGTERM or SIGINT, following the alias unless a URI is fixed.

    Raises:
        Exception: Whatever stops the first load (a missing alias, an unreadable model): nothing is served.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    log.handlers, log.propagate = [handler], False
    log.setLevel(logging.INFO)
    kserve = _import_kserve()
    model_class = type("InspectionModel", (RegistryModel, kserve.Model), {})
    model = model_class(config)
    model.load()
    _extend_app(kserve.model_server.app, model, config)
    stop = threading.Event()
    if not config.uri:
        threading.Thread(
            target=_follow, args=(model, stop, config.poll_seconds), name="follow", daemon=True
        ).start()
    try:
        _server(kserve, config).start([model])
    finally:
        stop.set()
        log.info("stopped", extra={"fields": {"version": model.served.version if model.served else None}})


def _follow(model: RegistryModel, stop: threading.Event, seconds: float) -> None:
    while not stop.wait(seconds):
        model.refresh()


def _import_kserve() -> Any:
    """KServe, imported with no command line: its module reads ``sys.argv`` as its own flags on import."""
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        import kserve
        import kserve.model_server
    finally:
        sys.argv = argv
    return kserve


def _server(kserve: Any, config: ServeConfig) -> Any:
    """KServe's model server on ``config.host`` (it listens on every address otherwise), REST only.

    Two changes to what it does per request, both measured on the textile CNN (1 ms an image in ONNX
    Runtime), where the event loop is what limits a small model: it runs on uvloop (10-15% more requests a
    second than asyncio's loop), and without KServe's timing middleware, whose two ``getrusage`` calls and
    trace log line took a quarter of the loop's time; the ``inspectflow_request_seconds`` histogram
    measures latency instead.
    """
    import uvloop
    from kserve.model_server import FASTAPI_APP_IMPORT_STRING, RESTServer
    from timing_asgi import TimingMiddleware

    class LeanRESTServer(RESTServer):
        def create_application(self) -> None:
            super().create_application()
            app = kserve.model_server.app
            app.user_middleware = [m for m in app.user_middleware if m.cls is not TimingMiddleware]

    class HostModelServer(kserve.ModelServer):
        def start(self, models: list[Any]) -> None:
            self._register_and_check_atleast_one_model_is_ready(models)
            self._rest_server = LeanRESTServer(
                FASTAPI_APP_IMPORT_STRING,
                self.dataplane,
                self.model_repository_extension,
                self.http_port,
                grace_period=self.grace_period,
            )
            self._rest_server.config.host = config.host
            self.servers.append(self._rest_server.start())
            self.setup_event_loop()
            self.register_signal_handler()
            uvloop.run(self._serve())

    return HostModelServer(
        http_port=config.port,
        enable_grpc=False,
        grace_period=config.grace_seconds,
        enable_latency_logging=False,
    )


def _extend_app(app: FastAPI, model: RegistryModel, config: ServeConfig) -> None:
    """Our routes, the body limit and the one-line JSON errors, added to KServe's application."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    async def refused(request: Request, exc: Exception) -> JSONResponse:
        error = exc if isinstance(exc, BadRequest) else _invalid(exc)
        return JSONResponse({"error": error.message}, status_code=error.status)

    async def images(request: Request) -> dict[str, Any]:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise BadRequest(415, "send the images as multipart/form-data files (or JSON to /infer)")
        try:
            form = await request.form(max_files=config.max_images + 1, max_fields=config.max_images + 1)
        except BadRequest:
            raise
        except Exception as exc:
            raise BadRequest(400, f"malformed multipart body: {_one_line(exc)}") from None
        served, records = await model.answer(await images_from_form(form, config.max_images))
        return {"model_name": model.name, "model_version": served.version, "predictions": records}

    async def status() -> dict[str, Any]:
        return model.status()

    app.add_api_route(f"/v2/models/{model.name}/images", images, methods=["POST"])
    app.add_api_route(f"/v2/models/{model.name}/status", status, methods=["GET"])
    app.add_exception_handler(BadRequest, refused)
    app.add_exception_handler(RequestValidationError, refused)
    app.add_exception_handler(HTTPException, refused)  # FastAPI's own refusals: 404, 405, unreadable body
    app.add_middleware(JsonInferRoute, model=model)
    app.add_middleware(BodyLimit, max_bytes=int(config.max_request_mb * 1024 * 1024))  # outside it
