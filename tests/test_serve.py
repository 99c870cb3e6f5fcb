"""The inference service for real: ``inspectflow serve`` started as a process on registered models of each
kind (a textile classifier, a DAGM segmenter, an inserts features+SVM model), asked over HTTP."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from conftest import run_steps, tiny_config, tiny_dagm_config, tiny_inserts_config
from inspectflow.serving.predict import predict_files

pytestmark = pytest.mark.slow

CLASSIFIER, SEGMENTER, INSERTS = "textile-classifier", "dagm-segmenter", "inserts-classifier"


@dataclass
class Store:
    """The module's MLflow store: two textile versions, a segmenter and a features+SVM model."""

    uri: str
    root: Path
    textile: list[Path]  # image files of each kind, as a line would send them
    dagm: list[Path]
    inserts: list[Path]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, dagm_dir: Path, inserts_dir: Path) -> Iterator[Store]:
    root = tmp_path_factory.mktemp("serve")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    npy = _textile_source(root / "npy")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        try:
            textile = tiny_config("register.onnx=true").to_dict()
            run_steps(npy, root / "textile1", textile)
            run_steps(npy, root / "textile2", tiny_config("register.onnx=true", "train.seed=7").to_dict())
            dagm = tiny_dagm_config("register.onnx=true", "evaluate.target_recall=0.95").to_dict()
            run_steps(dagm_dir, root / "dagm", dagm)
            svm = tiny_inserts_config("method=features+svm", f"train.feature_cache={root / 'cache'}")
            run_steps(inserts_dir, root / "inserts", svm.to_dict())
            client = MlflowClient()
            client.set_registered_model_alias(CLASSIFIER, "champion", "2")  # the swap test moves it back
            textile_files = _pngs(root / "textile-images", npy)
            dagm_files = sorted((dagm_dir / "Class1" / "Test").glob("*.PNG"))[:4]
            inserts_files = sorted(p for p in inserts_dir.rglob("*") if p.is_file())[:3]
            yield Store(uri, root, textile_files, dagm_files, inserts_files)
        finally:
            mlflow.set_tracking_uri(None)


def _textile_source(folder: Path) -> Path:
    folder.mkdir()
    labels = np.repeat(np.arange(6), 10)
    rng = np.random.default_rng(1)
    np.save(folder / "X.npy", rng.integers(0, 256, size=(len(labels), 16, 16, 1), dtype=np.uint8))
    np.save(folder / "Y.npy", labels)
    return folder


def _pngs(folder: Path, npy: Path) -> list[Path]:
    """Training images as files: grayscale PNGs, an RGB JPEG of another size, a palette PNG, a 16-bit PNG."""
    folder.mkdir()
    images = np.load(npy / "X.npy")
    paths = []
    for number in range(3):
        path = folder / f"patch{number}.png"
        Image.fromarray(images[number * 10, ..., 0], mode="L").save(path)
        paths.append(path)
    rgb = Image.fromarray(images[25, ..., 0], mode="L").convert("RGB").resize((24, 20))
    rgb.save(folder / "patch_rgb.jpg", quality=95)
    rgb.convert("P").save(folder / "patch_palette.png")
    Image.fromarray(images[40, ..., 0].astype(np.uint16) * 257).save(folder / "patch_16bit.png")
    return [*paths, folder / "patch_rgb.jpg", folder / "patch_palette.png", folder / "patch_16bit.png"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """A running ``inspectflow serve`` process."""

    url: str
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str) -> tuple[int, Any]:
        return _call(urllib.request.Request(self.url + path))

    def infer(self, files: list[Path]) -> tuple[int, Any]:
        return self.post_json({"inputs": [_bytes_input([f.read_bytes() for f in files])]})

    def post_json(self, body: Any) -> tuple[int, Any]:
        data = json.dumps(body).encode()
        return self.post(f"/v2/models/{self.name}/infer", data, "application/json")

    def post(self, path: str, data: bytes, content_type: str) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": content_type})
        return _call(request)

    def multipart(self, files: list[Path]) -> tuple[int, Any]:
        body, content_type = _multipart([(f.name, f.read_bytes()) for f in files])
        return self.post(f"/v2/models/{self.name}/images", body, content_type)


def _bytes_input(contents: list[bytes]) -> dict[str, Any]:
    data = [base64.b64encode(content).decode() for content in contents]
    return {"name": "images", "shape": [len(data)], "datatype": "BYTES", "data": data}


def _multipart(files: list[tuple[str, bytes]], field: str = "images") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, content in files:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
        parts.append(head.encode() + b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _call(request: urllib.request.Request) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


@contextmanager
def serving(store: Store, workload: str, name: str, *options: str) -> Iterator[Service]:
    """Starts ``inspectflow serve`` and waits until its model is ready; stops it with SIGTERM."""
    port = _free_port()
    log = store.root / f"serve-{workload}-{port}.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri}
    command = [
        sys.executable,
        "-m",
        "inspectflow",
        "serve",
        workload,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen([*command, *options], env=env, stdout=out, stderr=subprocess.STDOUT)
    service = Service(f"http://127.0.0.1:{port}", name, process, log)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                if service.get(f"/v2/models/{name}/ready")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        else:
            raise AssertionError(f"not ready in 120 s: {log.read_text()}")
        yield service
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def textile(store: Store) -> Iterator[Service]:
    with serving(store, "textile", CLASSIFIER, "--engine", "torch", "--poll-seconds", "0.3") as service:
        yield service


def _predictions(answer: dict[str, Any]) -> list[dict[str, Any]]:
    (output,) = answer["outputs"]
    return [json.loads(item) for item in output["data"]]


def _assert_same(served: list[dict[str, Any]], predicted: list[dict[str, Any]]) -> None:
    assert len(served) == len(predicted)
    for one, other in zip(served, predicted, strict=True):
        for key, value in other.items():
            if key in ("path", "mask"):
                continue
            if key == "probabilities":
                assert one[key].keys() == value.keys()
                for label, probability in value.items():
                    assert one[key][label] == pytest.approx(probability, abs=1e-5)
            elif isinstance(value, float):
                assert one[key] == pytest.approx(value, abs=1e-5), key
            else:
                assert one[key] == value, key


def test_the_classifier_answers_as_predict_does(store: Store, textile: Service) -> None:
    status, answer = textile.infer(store.textile)
    assert status == 200, answer
    assert answer["model_name"] == CLASSIFIER and answer["model_version"] == "2"
    predicted = list(predict_files(f"models:/{CLASSIFIER}/2", store.textile, batch_size=8))
    _assert_same(_predictions(answer), predicted)
    status, form = textile.multipart(store.textile)
    assert status == 200, form
    assert form["model_version"] == "2"
    _assert_same(form["predictions"], predicted)
    assert [r["image"] for r in form["predictions"]] == [p.name for p in store.textile]


def test_the_segmenter_answers_with_the_mask_predict_writes(store: Store, tmp_path: Path) -> None:
    with serving(store, "dagm", SEGMENTER, "--engine", "torch") as service:
        status, answer = service.infer(store.dagm)
        status_form, form = service.multipart(store.dagm)
    assert status == 200 and status_form == 200, (answer, form)
    predicted = list(predict_files(f"models:/{SEGMENTER}/1", store.dagm, 4, tmp_path / "masks"))
    served = _predictions(answer)
    _assert_same(served, predicted)
    _assert_same(form["predictions"], predicted)
    for record, expected in zip(served, predicted, strict=True):
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(record["mask_png"]))))
        assert np.array_equal(mask, np.asarray(Image.open(expected["mask"])))


def test_the_features_svm_model_answers_as_predict_does(store: Store) -> None:
    with serving(store, "inserts", INSERTS) as service:
        status, answer = service.infer(store.inserts)
        _, detail = service.get(f"/v2/models/{INSERTS}/status")
    assert status == 200, answer
    assert detail["engine"] == "torch"  # auto: a features+SVM model has no ONNX export
    _assert_same(_predictions(answer), list(predict_files(f"models:/{INSERTS}@champion", store.inserts, 8)))


def test_auto_serves_the_onnx_export_as_predict_runs_it(store: Store) -> None:
    with serving(store, "textile", CLASSIFIER, "--model", f"models:/{CLASSIFIER}/1") as service:
        status, answer = service.infer(store.textile)
        _, detail = service.get(f"/v2/models/{CLASSIFIER}/status")
    assert status == 200, answer
    assert detail["engine"] == "onnx" and answer["model_version"] == "1"
    onnx = list(predict_files(f"models:/{CLASSIFIER}/1", store.textile, 8, engine="onnx"))
    _assert_same(_predictions(answer), onnx)


def test_requests_that_wait_together_are_each_answered_with_their_own_records(
    store: Store, textile: Service
) -> None:
    """Concurrent requests share forward passes, yet each gets its own images' records, and a request
    with an undecodable image is refused without failing the others it waited with."""
    expected = dict(
        zip(store.textile, predict_files(f"models:/{CLASSIFIER}/2", store.textile, batch_size=8), strict=True)
    )
    answers: list[tuple[list[Path], int, Any]] = []
    deadline = time.monotonic() + 20

    def post_without_pause(offset: int) -> None:
        number = offset
        while time.monotonic() < deadline and _largest_batch(textile) <= 3:
            if number % 5 == 0:
                body = {"inputs": [_bytes_input([b"not an image", store.textile[0].read_bytes()])]}
                answers.append(([], *textile.post_json(body)))
            else:
                files = [store.textile[(number + k) % len(store.textile)] for k in range(number % 3 + 1)]
                answers.append((files, *textile.infer(files)))
            number += 1

    posters = [threading.Thread(target=post_without_pause, args=(n,)) for n in range(8)]
    for poster in posters:
        poster.start()
    for poster in posters:
        poster.join()
    assert _largest_batch(textile) > 3, "no two requests of at most 3 images ever shared a forward pass"
    for files, status, answer in answers:
        if not files:
            assert status == 400 and answer["error"].startswith("images[0]: cannot be decoded"), answer
            continue
        assert status == 200, answer
        _assert_same(_predictions(answer), [expected[file] for file in files])


def _largest_batch(service: Service) -> int:
    """The most images the service has put through one forward pass (its ``predicted`` log lines)."""
    lines = [json.loads(line) for line in service.log.read_text().splitlines() if '"predicted"' in line]
    return max((line["batch"] for line in lines), default=0)


def test_the_service_follows_the_alias_without_a_failed_request(store: Store, textile: Service) -> None:
    """Requests without pause while the champion is rolled back and promoted again."""
    client = MlflowClient(store.uri)
    answers: list[tuple[float, float, int, str]] = []
    done = threading.Event()

    def post_without_pause() -> None:
        while not done.is_set():
            started = time.monotonic()
            status, answer = textile.infer(store.textile[:2])
            version = answer.get("model_version", "") if isinstance(answer, dict) else ""
            answers.append((started, time.monotonic(), status, version))

    moves = [(time.monotonic(), "2")]
    poster = threading.Thread(target=post_without_pause)
    poster.start()
    try:
        for version in ("1", "2"):
            time.sleep(1.0)
            client.set_registered_model_alias(CLASSIFIER, "champion", version)
            moves.append((time.monotonic(), version))
            _wait_for_version(textile, version)
        time.sleep(0.5)
    finally:
        done.set()
        poster.join()
    assert all(status == 200 for _, _, status, _ in answers), [a for a in answers if a[2] != 200][:3]
    window = 10.0  # a poll (0.3 s) and loading a version
    for started, ended, _, version in answers:
        before = [v for at, v in moves if at <= started - window]
        champions = {before[-1] if before else "2"} | {v for at, v in moves if started - window < at <= ended}
        assert version in champions, (started, ended, version, moves)
    assert {"1", "2"} <= {version for *_, version in answers}


def _wait_for_version(service: Service, version: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if service.get(f"/v2/models/{service.name}/status")[1]["version"] == version:
            return
        time.sleep(0.1)
    raise AssertionError(f"version {version} not served in 30 s: {service.log.read_text()[-2000:]}")


def _png(side: int = 16, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (side, side), 128 if mode == "L" else (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _huge_png(width: int, height: int) -> bytes:
    """A small file whose header claims ``width`` x ``height`` pixels (one colour: it compresses well)."""
    buffer = io.BytesIO()
    Image.frombytes("1", (width, height), bytes((width + 7) // 8 * height)).save(buffer, format="PNG")
    return buffer.getvalue()


def _float_tiff() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), dtype=np.float32), mode="F").save(buffer, format="TIFF")
    return buffer.getvalue()


def _json(*items: Any, shape: list[int] | None = None, datatype: str = "BYTES") -> bytes:
    data = [base64.b64encode(item).decode() if isinstance(item, bytes) else item for item in items]
    tensor = {"name": "images", "shape": [len(data)] if shape is None else shape, "datatype": datatype}
    return json.dumps({"inputs": [{**tensor, "data": data}]}).encode()


def bad_requests(name: str) -> dict[str, tuple[str, str, bytes, dict[str, str]]]:
    """Each kind of bad request: (method, path, body, headers)."""
    infer, images = f"/v2/models/{name}/infer", f"/v2/models/{name}/images"
    as_json = {"Content-Type": "application/json"}
    png = _png()
    form_text = (
        b'--b\r\nContent-Disposition: form-data; name="images"\r\n\r\nnot a file\r\n--b--\r\n',
        "multipart/form-data; boundary=b",
    )
    kinds: dict[str, tuple[bytes, str] | tuple[str, bytes, dict[str, str]]] = {
        "empty body": (b"", "application/json"),
        "malformed JSON": (b'{"inputs": [', "application/json"),
        "JSON that is not an object": (b"[1, 2, 3]", "application/json"),
        "invalid UTF-8 in JSON": (b'{"inputs": "\xff\xfe"}', "application/json"),
        "no inputs": (b"{}", "application/json"),
        "inputs not a list": (b'{"inputs": "images"}', "application/json"),
        "an empty list of inputs": (b'{"inputs": []}', "application/json"),
        "two inputs": (
            json.dumps({"inputs": [json.loads(_json(png))["inputs"][0]] * 2}).encode(),
            "application/json",
        ),
        "a numeric tensor instead of images": (_json(1.0, 2.0, datatype="FP32"), "application/json"),
        "a shape that is not the element count": (_json(png, shape=[3]), "application/json"),
        "a nested shape": (_json(png, shape=[1, 1]), "application/json"),
        "malformed base64": (_json("!!not base64!!"), "application/json"),
        "an element that is not a string": (_json(12345), "application/json"),
        "an empty image": (_json(b""), "application/json"),
        "not an image": (_json(b"hello, this is text"), "application/json"),
        "a PDF": (_json(b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF"), "application/json"),
        "a truncated PNG": (_json(_png(64)[:60]), "application/json"),
        "a decompression bomb": (_json(_huge_png(20000, 20000)), "application/json"),
        "too many pixels": (_json(_huge_png(8000, 6000)), "application/json"),
        "32-bit float samples": (_json(_float_tiff()), "application/json"),
        "one bad image among good ones": (_json(png, b"garbage", png), "application/json"),
        "too many images": (_json(*[png] * 65), "application/json"),
        "no images": (_json(), "application/json"),
        "a wrong content type": (b"just some text", "text/plain"),
        "binary extension with a wrong header length": (
            "POST",
            b'{"inputs": []}\x00\x00\x00\x00',
            {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": "99999"},
        ),
        "an unknown model": ("POST:/v2/models/no-such-model/infer", _json(png), as_json),
        "a GET on infer": ("GET", b"", {}),
        "a request too large": ("POST", _json(b"x" * (33 * 1024 * 1024)), as_json),
        "multipart to the JSON route's content type": ("POST:" + images, _json(png), as_json),
        "a form field that is not a file": ("POST:" + images, *form_text[:1], {"Content-Type": form_text[1]}),
        "a form without files": (
            "POST:" + images,
            b"--b--\r\n",
            {"Content-Type": "multipart/form-data; boundary=b"},
        ),
        "a form without a boundary": ("POST:" + images, b"garbage", {"Content-Type": "multipart/form-data"}),
        "a form of too many files": ("POST:" + images, *_form([png] * 65)),
        "a form with a broken image": ("POST:" + images, *_form([png, b"\x89PNG\r\n\x1a\nbroken"])),
    }
    requests = {}
    for kind, spec in kinds.items():
        if len(spec) == 2:
            body, content_type = spec  # type: ignore[misc]
            requests[kind] = ("POST", infer, body, {"Content-Type": content_type})
        else:
            target, body, headers = spec  # type: ignore[misc]
            method, _, path = str(target).partition(":")
            requests[kind] = (method, path or infer, body, headers)
    return requests


def _form(contents: list[bytes]) -> tuple[bytes, dict[str, str]]:
    body, content_type = _multipart([(f"{n}.png", content) for n, content in enumerate(contents)])
    return body, {"Content-Type": content_type}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_every_bad_request_gets_a_4xx_with_a_one_line_json_error(store: Store, textile: Service) -> None:
    kinds = bad_requests(CLASSIFIER)
    assert len(kinds) >= 25
    refused = {}
    for round_number in range(3):  # memory stays flat over rounds of the corpus
        if round_number == 1:
            memory = _rss_mb(textile.process.pid)
        for kind, (method, path, body, headers) in kinds.items():
            request = urllib.request.Request(
                textile.url + path, data=body or None, headers=headers, method=method
            )
            status, answer = _call(request)
            refused[kind] = (status, answer)
        assert textile.infer(store.textile[:1])[0] == 200, "good requests are still answered"
    grown = _rss_mb(textile.process.pid) - memory
    problems = {
        kind: (status, answer)
        for kind, (status, answer) in refused.items()
        if not (400 <= status < 500 and isinstance(answer, dict) and list(answer) == ["error"])
        or "\n" in answer["error"]
    }
    assert not problems, problems
    assert grown < 40, f"the service grew by {grown:.0f} MB over two rounds of bad requests"


def test_metrics_count_requests_latency_and_decisions_per_version(store: Store, textile: Service) -> None:
    assert textile.infer(store.textile)[0] == 200
    with urllib.request.urlopen(textile.url + "/metrics", timeout=30) as response:
        metrics = response.read().decode()
    labels = f'model="{CLASSIFIER}",outcome="ok",version="2"'
    assert f"inspectflow_requests_total{{{labels}}}" in metrics
    assert f'inspectflow_request_seconds_count{{model="{CLASSIFIER}",version="2"}}' in metrics
    assert f'inspectflow_images_total{{decision="undecided",model="{CLASSIFIER}",version="2"}}' in metrics
    assert f'inspectflow_served_version{{model="{CLASSIFIER}"}} 2.0' in metrics


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(
    store: Store, textile: Service, tmp_path: Path
) -> None:
    client = MlflowClient(store.uri)
    (tmp_path / "broken").mkdir()
    broken = client.create_model_version(CLASSIFIER, str(tmp_path / "broken")).version
    client.set_registered_model_alias(CLASSIFIER, "champion", broken)
    try:
        deadline = time.monotonic() + 30
        while (detail := textile.get(f"/v2/models/{CLASSIFIER}/status")[1])["last_error"] is None:
            assert time.monotonic() < deadline, "the failed load was never reported"
            time.sleep(0.2)
        assert detail["version"] == "2" and detail["ready"]
        assert detail["last_error"].startswith(f"version {broken} failed to load: ")
        status, answer = textile.infer(store.textile[:1])
        assert status == 200 and answer["model_version"] == "2"
        assert textile.get(f"/v2/models/{CLASSIFIER}/ready")[0] == 200
        with urllib.request.urlopen(textile.url + "/metrics", timeout=30) as response:
            metrics = response.read().decode()
        assert (
            f'inspectflow_model_loads_total{{model="{CLASSIFIER}",outcome="failed",version="{broken}"}}'
            in metrics
        )
        assert '"event": "load failed"' in textile.log.read_text()
    finally:
        client.set_registered_model_alias(CLASSIFIER, "champion", "2")


def test_shutdown_finishes_the_requests_in_flight(store: Store) -> None:
    answers: list[tuple[float, int | None]] = []
    with serving(store, "dagm", SEGMENTER, "--engine", "torch") as service:

        def post() -> None:
            # Back to back until the service closes: whenever the signal comes, requests are in flight (one
            # request alone may be answered before it, on a fast machine).
            deadline = time.monotonic() + 60
            status: int | None = 200
            while status == 200 and time.monotonic() < deadline:
                try:
                    status, _ = service.infer(store.dagm * 16)
                except OSError:
                    status = None  # sent after the service closed: never accepted, never half-answered
                answers.append((time.monotonic(), status))

        posters = [threading.Thread(target=post) for _ in range(4)]
        for poster in posters:
            poster.start()
        time.sleep(0.3)
        signalled = time.monotonic()
        service.process.send_signal(signal.SIGTERM)
        for poster in posters:
            poster.join()
        assert service.process.wait(timeout=60) == 0
    assert all(status in (200, None) for _, status in answers), answers
    assert any(at > signalled and status == 200 for at, status in answers), "no request was in flight"


def test_served_images_are_sampled_for_the_drift_watch(store: Store, tmp_path: Path) -> None:
    samples = tmp_path / "served"
    with serving(store, "textile", CLASSIFIER, "--sample-to", str(samples), "--sample-rate", "1") as service:
        assert service.infer(store.textile)[0] == 200
        deadline = time.monotonic() + 30
        while len(written := [p for p in samples.rglob("*") if p.is_file()]) < len(store.textile):
            assert time.monotonic() < deadline, written
            time.sleep(0.2)
    assert {p.suffix for p in written} == {".png", ".jpg"}
    assert all(p.name.startswith(f"{CLASSIFIER}-v2-") for p in written)
    result = subprocess.run(
        [sys.executable, "-m", "inspectflow", "monitor", "textile", str(samples)],
        env={**os.environ, "MLFLOW_TRACKING_URI": store.uri},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode in (0, 3), result.stderr
    assert f"{len(written)} images against {CLASSIFIER} version 2" in result.stdout
