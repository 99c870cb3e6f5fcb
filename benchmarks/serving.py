"""The inference service against in-process prediction, for each task's default model, in one run.

For each workload (textile's classifier, dagm's Lite0 U-Net, inserts' features+SVM model), a model is
trained briefly on the workload's demo set with its default settings (the speed of a model does not depend
on how well it learned) and registered in a store of this run. Then, on the same test images, each engine
(PyTorch eager; ONNX Runtime where the version has its export):

* in process: ``load_model`` + ``predict_pixels`` (decoding included, as the service does it), one request
  after another, in a fresh process: latency p50/p99 and images/s;
* served: ``inspectflow serve`` on this machine, base64 JSON over HTTP (keep-alive connections), at
  concurrency 1, 4 and 16: latency p50/p99 and images/s, and the ratio to in-process at the same batch size.

Run: ``python benchmarks/serving.py [--batch 1] [--seconds 10]``; the table is kept in benchmarks/README.md.
The service and the clients share this machine's cores, as they would on a line PC.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

WORKLOADS = {"textile": "textile-classifier", "dagm": "dagm-segmenter", "inserts": "inserts-classifier"}
SHORT = [
    "train.max_minutes=1",
    "train.epochs=1",
    "register.min_score=0",
    "register.baseline_margin=null",
]


def register(workload: str, work: Path) -> list[bytes]:
    """Trains and registers the workload's default model on its demo set; returns its test images as PNGs."""
    from inspectflow.config import build_config
    from inspectflow.data.dataset import load_dataset
    from inspectflow.data.versioning import write_demo
    from inspectflow.steps.evaluate import evaluate_step
    from inspectflow.steps.ingest import ingest_step
    from inspectflow.steps.register import register_step
    from inspectflow.steps.train import train_step
    from inspectflow.steps.validate import validate_step

    write_demo(work / "data", [workload])
    floors = ["register.max_escape_rate=null"] if workload == "dagm" else []
    config = build_config(workload, [*SHORT, *floors]).to_dict()
    out = work / workload
    run_id, _ = ingest_step(str(work / "data" / workload), config, out / "dataset", "bench", "bench", "bench")
    validate_step(out / "dataset", config, run_id, out / "report.html")
    train_step(out / "dataset", config, run_id, out / "model")
    evaluate_step(out / "dataset", out / "model", config, run_id, out / "evaluation")
    register_step(out / "dataset", out / "model", out / "evaluation", config, run_id)
    return [_png(image) for image in load_dataset(out / "dataset").split("test")[0]]


def _png(image: np.ndarray) -> bytes:
    """A test image (as ingest cached it) as the PNG file a camera station would send."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


def percentiles(latencies: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    values = np.asarray(latencies) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def in_process(
    uri: str, engine: str, batches: list[list[bytes]], seconds: float
) -> tuple[float, float, float]:
    """Latency p50, p99 (ms) and images/s of decoding + predicting one batch after another."""
    from inspectflow.imaging import decode
    from inspectflow.serving.predict import load_model, predict_pixels
    from inspectflow.tasks.base import PredictedImage

    model = load_model(uri, engine)  # type: ignore[arg-type]

    def once(batch: list[bytes]) -> None:
        pixels = []
        for content in batch:
            decoded, _ = decode(content)
            assert decoded is not None
            pixels.append(decoded[..., np.newaxis] if decoded.ndim == 2 else decoded)
        images = [PredictedImage(Path(f"{n}"), p.shape[0], p.shape[1], n) for n, p in enumerate(pixels)]
        predict_pixels(model, pixels, images)

    once(batches[0])  # warm-up
    latencies: list[float] = []
    images, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        batch = batches[len(latencies) % len(batches)]
        begun = time.perf_counter()
        once(batch)
        latencies.append(time.perf_counter() - begun)
        images += len(batch)
    return (*percentiles(latencies), images / (time.perf_counter() - started))


def in_fresh_process(uri: str, engine: str, folder: Path, batch: int, seconds: float) -> tuple[float, ...]:
    """:func:`in_process` in a process of its own, as a line PC's program would run it.

    Nothing else has run PyTorch or ONNX Runtime there (work in other threads of a process slows both, see
    the README).
    """
    command = [sys.executable, __file__, "--in-process", uri, engine, str(folder)]
    command += ["--batch", str(batch), "--seconds", str(seconds)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return tuple(json.loads(result.stdout.strip().splitlines()[-1]))


def served(
    port: int, name: str, bodies: list[bytes], sizes: list[int], clients: int, seconds: float
) -> tuple[float, float, float]:
    """Latency p50, p99 (ms) and images/s of ``clients`` threads posting without pause, keep-alive."""
    latencies: list[float] = []
    counted = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        number = offset
        while time.perf_counter() < stop:
            body = bodies[number % len(bodies)]
            begun = time.perf_counter()
            connection.request("POST", f"/v2/models/{name}/infer", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            assert response.status == 200, response.status
            with lock:
                latencies.append(time.perf_counter() - begun)
                counted[0] += sizes[number % len(bodies)]
            number += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return (*percentiles(latencies), counted[0] / (time.perf_counter() - started))


def start_service(workload: str, uri: str, engine: str, port: int, store: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "inspectflow", "serve", workload, "--model", uri, "--engine", engine]
    command += ["--host", "127.0.0.1", "--port", str(port), "--max-images", "256"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    name = uri.removeprefix("models:/").split("/")[0]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", f"/v2/models/{name}/ready")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"{uri} not served in 180 s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=1, help="Images per request (and per in-process call).")
    parser.add_argument("--seconds", type=float, default=10.0, help="Per measurement.")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS))
    parser.add_argument("--in-process", nargs=3, metavar=("URI", "ENGINE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process:  # the in-process figures, measured in a fresh process (in_fresh_process)
        uri, engine, folder = args.in_process
        contents = [path.read_bytes() for path in sorted(Path(folder).glob("*.png"))]
        batches = [contents[n : n + args.batch] for n in range(0, len(contents) - args.batch + 1, args.batch)]
        print(json.dumps(in_process(uri, engine, batches, args.seconds)))
        return
    work = Path(tempfile.mkdtemp(prefix="inspectflow-serving-bench-"))
    store = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = store
    print(f"batch {args.batch}, {args.seconds:.0f} s per figure, {os.cpu_count()} cores; store {work}")
    print("| model | engine | where | concurrency | p50 ms | p99 ms | images/s | served / in-process |")
    print("|---|---|---|---|---|---|---|---|")
    for workload in args.workloads:
        name = WORKLOADS[workload]
        contents = register(workload, work)[:32]
        folder = work / f"{workload}-images"
        folder.mkdir()
        for number, content in enumerate(contents):
            (folder / f"{number:03d}.png").write_bytes(content)
        batches = [contents[n : n + args.batch] for n in range(0, len(contents) - args.batch + 1, args.batch)]
        bodies = [
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "images",
                            "shape": [len(b)],
                            "datatype": "BYTES",
                            "data": [base64.b64encode(c).decode() for c in b],
                        }
                    ]
                }
            ).encode()
            for b in batches
        ]
        uri = f"models:/{name}/1"
        for engine in ("torch", "onnx"):
            from inspectflow.errors import InspectflowError
            from inspectflow.serving.predict import load_model

            try:
                load_model(uri, engine)  # type: ignore[arg-type]
            except InspectflowError:
                continue  # no ONNX export (features+SVM)
            p50, p99, rate = in_fresh_process(uri, engine, folder, args.batch, args.seconds)
            print(
                f"| {name} | {engine} | in process | 1 | {p50:.1f} | {p99:.1f} | {rate:.1f} | |", flush=True
            )
            port = 18000 + len(engine) + hash(name) % 1000
            process = start_service(workload, uri, engine, port, store)
            try:
                for clients in (1, 4, 16):
                    s50, s99, served_rate = served(
                        port, name, bodies, [len(b) for b in batches], clients, args.seconds
                    )
                    ratio = served_rate / rate
                    print(
                        f"| {name} | {engine} | served | {clients} | {s50:.1f} | {s99:.1f} "
                        f"| {served_rate:.1f} | {ratio:.2f} |",
                        flush=True,
                    )
            finally:
                process.terminate()
                process.wait(timeout=60)


if __name__ == "__main__":
    main()
